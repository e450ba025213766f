/**
 * `tallybox run --config FILE`: the long-running agent (under systemd on a device).
 */
import { Agent } from '../agent/agent.js';
import { startPunchApi } from '../agent/punch-api.js';
import { loadConfigFile } from '../config/load.js';
import { createLogger } from '../util/log.js';
import { startRole } from '../roles/start.js';

export async function runAgent(configFile: string): Promise<number> {
  const config = loadConfigFile(configFile);
  const logger = createLogger({ level: config.log.level, base: { deviceId: config.device.id } });
  const agent = await Agent.start({ config, logger });
  const role = await startRole(agent);
  const api = config.punchApi.enabled ? await startPunchApi(agent, config.punchApi.host, config.punchApi.port) : undefined;
  if (api) logger.info({ event: 'punch_api', port: api.port }, `punch API on http://${config.punchApi.host}:${api.port}/v1/punch`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ event: 'signal', signal }, `${signal}: stopping`);
      void (async () => {
        await api?.close();
        await role?.stop();
        await agent.stop();
        resolve(0);
      })();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
