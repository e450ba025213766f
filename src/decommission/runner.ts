/**
 * Runs a decommission to the end on this machine: `tallybox decommission`,
 * and `tallybox run` when it finds one a crash interrupted (it finishes it and
 * does not run normally). The agent is started for it with commands disabled
 * (nothing may add data meanwhile) and with the device role, so that sensor
 * flash and in-memory indexes are erased through their erasure hooks, and the
 * link can deliver queued punches and the receipt when a broker is reachable.
 */
import type { Agent } from '../agent/agent.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../util/log.js';
import { errorMessage } from '../util/errors.js';
import { Decommission, type DecommissionDeps } from './engine.js';
import { readDecommission, phaseAtLeast, type DecommissionState } from './state.js';

export interface RunOptions {
  config: Config;
  logger: Logger;
  requestRef: string;
  deliverTimeoutMs?: number;
}

/** What a decommission needs from a running agent (this runner, the DeviceDecommission handler, tests). */
export async function agentDeps(agent: Agent, opts: { config?: Config; logger?: Logger; deliverTimeoutMs?: number } = {}): Promise<DecommissionDeps> {
  const config = opts.config ?? agent.config;
  const { keyProviderFor } = await import('../agent/privacy.js');
  const keyProvider = agent.privacy?.keyProvider ?? (config.vault ? keyProviderFor(config.vault) : undefined);
  const identity = agent.privacy?.identity ?? (keyProvider ? await keyProvider.loadDeviceIdentity() : undefined);
  return {
    config,
    outbox: agent.outbox,
    privacy: agent.privacy,
    identity,
    keyProvider,
    knownOrgs: () => [...new Set([config.device.orgId, ...(config.device.servedOrgs ?? []), ...agent.servedOrgs.snapshot().served, ...agent.servedOrgs.snapshot().retired])],
    online: () => agent.session !== undefined,
    enqueueResult: (orgId, r) => agent.results.enqueue(orgId, r),
    forgetOrg: (o) => agent.forgetOrg(o),
    logger: opts.logger ?? agent.logger,
    ...(opts.deliverTimeoutMs !== undefined ? { deliverTimeoutMs: opts.deliverTimeoutMs } : config.decommission ? { deliverTimeoutMs: config.decommission.deliverTimeoutSec * 1000 } : {}),
  };
}

export async function runDecommission(opts: RunOptions): Promise<DecommissionState> {
  const { config, logger } = opts;
  const existing = readDecommission(config.dataDir);
  if (existing?.phase === 'done') return existing;
  const { keyProviderFor } = await import('../agent/privacy.js');
  const keyProvider = config.vault ? keyProviderFor(config.vault) : undefined;
  // Only the key step needs no agent (the KEK may already be gone, so nothing is opened).
  const keysOnly = (): DecommissionDeps => ({ config, keyProvider, identity: undefined, privacy: undefined, logger, knownOrgs: () => [], online: () => false, enqueueResult: async () => undefined }) as unknown as DecommissionDeps;
  if (!existing || !phaseAtLeast(existing, 'keys')) {
    const [{ Agent }, { startRole }] = await Promise.all([import('../agent/agent.js'), import('../roles/start.js')]);
    const quiet: Config = { ...config, cloud: { ...config.cloud, commandKeys: [] } };
    const agent = await Agent.start({ config: quiet, logger });
    let role: Awaited<ReturnType<typeof startRole>> | undefined;
    try {
      role = await startRole(agent).catch((err: unknown) => {
        logger.warn({ event: 'decommission_role_unavailable', err: errorMessage(err) }, `device role not started (${errorMessage(err)}): its erasure hooks cannot run`);
        return undefined;
      });
      const d = Decommission.begin(await agentDeps(agent, { config, logger, ...(opts.deliverTimeoutMs !== undefined ? { deliverTimeoutMs: opts.deliverTimeoutMs } : {}) }), opts.requestRef);
      await d.toKeys();
    } finally {
      await role?.stop().catch((e: unknown) => logger.warn({ event: 'stop_failed', what: 'role', err: e }, 'role did not stop'));
      await agent.stop().catch((e: unknown) => logger.warn({ event: 'stop_failed', what: 'agent', err: e }, 'agent did not stop'));
    }
  }
  return Decommission.begin(keysOnly(), opts.requestRef).destroyKeys();
}
