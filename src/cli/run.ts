/**
 * `tallybox run --config FILE`: the long-running agent (under systemd on a device).
 *
 * Start is all or nothing: when any step fails (storage, keys, the device
 * role, the punch API's port) everything already started is stopped again,
 * the pid file is removed, and the error propagates as `tallybox: CODE: …`
 * with a non-zero exit — never a half-started agent that keeps reconnecting.
 */
import { Agent } from '../agent/agent.js';
import { startPunchApi } from '../agent/punch-api.js';
import type { Config } from '../config/schema.js';
import { TallyboxError, errorMessage, isTallyboxError } from '../util/errors.js';
import { createLogger } from '../util/log.js';
import { startRole, type RunningRole } from '../roles/start.js';

/** A start step's non-Tallybox error (EADDRINUSE from listen, …) as a coded one naming the step. */
function startError(step: string, code: string, err: unknown): unknown {
  if (isTallyboxError(err)) return err;
  const errno = (err as NodeJS.ErrnoException | null)?.code;
  return new TallyboxError(code, `${step}: ${errorMessage(err)}`, { errno }, { cause: err });
}

/** `config`: read by loadConfigFileIsolated (config/load-isolated.ts), so the agent never loads the validator. */
export async function runAgent(config: Config): Promise<number> {
  const logger = createLogger({ level: config.log.level, base: { deviceId: config.device.id } });

  // A SIGTERM during start is honoured once start has finished or failed (systemd stop while starting).
  let signalled: string | undefined;
  let onSignal: ((signal: string) => void) | undefined;
  const handler = (signal: string) => (onSignal ? onSignal(signal) : (signalled ??= signal));
  const sigterm = () => handler('SIGTERM');
  const sigint = () => handler('SIGINT');
  process.on('SIGTERM', sigterm);
  process.on('SIGINT', sigint);
  const unlisten = () => {
    process.off('SIGTERM', sigterm);
    process.off('SIGINT', sigint);
  };

  let agent: Agent | undefined;
  let role: RunningRole | undefined;
  let api: Awaited<ReturnType<typeof startPunchApi>> | undefined;
  try {
    agent = await Agent.start({ config, logger }).catch((err: unknown): Promise<never> => Promise.reject(startError('agent start', 'AGENT_START_FAILED', err)));
    role = await startRole(agent).catch((err: unknown) => Promise.reject(startError('device role', 'ROLE_START_FAILED', err)));
    if (config.punchApi.enabled) {
      const where = `${config.punchApi.host}:${config.punchApi.port}`;
      const started = await startPunchApi(agent, config.punchApi.host, config.punchApi.port).catch((err: unknown) =>
        Promise.reject(
          (err as NodeJS.ErrnoException | null)?.code === 'EADDRINUSE'
            ? new TallyboxError('PUNCH_API_PORT_IN_USE', `punch API: ${where} is already in use by another process (punchApi.port)`, { errno: 'EADDRINUSE' }, { cause: err })
            : startError(`punch API on ${where}`, 'PUNCH_API_UNAVAILABLE', err),
        ),
      );
      api = started;
      logger.info({ event: 'punch_api', port: started.port }, `punch API on http://${config.punchApi.host}:${started.port}/v1/punch`);
    }
  } catch (err) {
    unlisten();
    logger.error({ event: 'start_failed', err }, `start failed, stopping what was started: ${errorMessage(err)}`);
    // Reverse order; each stop is attempted even if an earlier one fails (the start error is what is reported).
    await api?.close().catch((e: unknown) => logger.warn({ event: 'stop_failed', what: 'punch API', err: e }, 'punch API did not close'));
    await role?.stop().catch((e: unknown) => logger.warn({ event: 'stop_failed', what: 'role', err: e }, 'role did not stop'));
    await agent?.stop().catch((e: unknown) => logger.warn({ event: 'stop_failed', what: 'agent', err: e }, 'agent did not stop'));
    throw err;
  }
  const running = agent;

  return new Promise<number>((resolve) => {
    let stopping = false;
    onSignal = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      unlisten();
      logger.info({ event: 'signal', signal }, `${signal}: stopping`);
      void (async () => {
        await api?.close();
        await role?.stop();
        await running.stop();
        resolve(0);
      })();
    };
    if (signalled) onSignal(signalled);
  });
}
