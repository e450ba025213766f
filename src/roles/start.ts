/**
 * Start the device role named by `device.kind` on a running agent: the
 * drivers and services of that kind of machine. A role whose hardware does
 * not answer keeps retrying in the background (and says so in DeviceState);
 * the agent keeps running either way.
 *
 * Each role is imported only for its kind: a router or a print box never
 * loads the face matcher or the fingerprint driver (resident memory).
 */
import type { Agent } from '../agent/agent.js';
import { TallyboxError, errorMessage } from '../util/errors.js';

export interface RunningRole {
  name: string;
  stop(): Promise<void>;
}

export async function startRole(agent: Agent): Promise<RunningRole | undefined> {
  const { config, logger } = agent;
  switch (config.device.kind) {
    case 'm1': {
      const vault = agent.privacy?.vault;
      if (!vault) throw new TallyboxError('CONFIG_INVALID', 'm1 needs a vault section (templates are kept encrypted on the device)');
      const log = logger.child({ component: 'm1' });
      const { attachM1Role, createM1Role } = await import('./m1/index.js');
      const { role, driver } = createM1Role({ config: config.m1 ?? {}, agent, vault, logger: log });
      attachM1Role({ agent, role, vault, logger: log });
      void role.start().catch((err: unknown) => log.error({ event: 'm1_start_failed', err: errorMessage(err) }, `fingerprint role did not start: ${errorMessage(err)}`));
      return { name: 'm1', stop: async () => (await role.stop(), await driver.close()) };
    }
    case 'm2': {
      const vault = agent.privacy?.vault;
      if (!vault) throw new TallyboxError('CONFIG_INVALID', 'm2 needs a vault section (face templates are kept encrypted on the device)');
      const log = logger.child({ component: 'm2' });
      const { attachM2Role, createM2Role } = await import('./m2/index.js');
      const { role, driver } = createM2Role({ config: config.m2 ?? {}, agent, vault, logger: log });
      attachM2Role({ agent, role, vault, logger: log });
      void role.start().catch((err: unknown) => log.error({ event: 'm2_start_failed', err: errorMessage(err) }, `face role did not start: ${errorMessage(err)}`));
      return { name: 'm2', stop: async () => (await role.stop(), await driver.close()) };
    }
    default:
      // sim: punches come through the local punch API; c1, p1: roles not built yet.
      return undefined;
  }
}
