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
import { servedVaultView } from '../agent/served-orgs.js';
import { TallyboxError, errorMessage } from '../util/errors.js';

export interface RunningRole {
  name: string;
  stop(): Promise<void>;
}

function requireVault(agent: Agent, what: string) {
  const vault = agent.privacy?.vault;
  if (!vault) throw new TallyboxError('CONFIG_INVALID', `${what} needs a vault section (templates are kept encrypted on the device)`);
  // Roles identify only within the organisations the device serves (issue 9 §2).
  return servedVaultView(vault, agent.servedOrgs);
}

/** The fingerprint module (M1, and M2 when an `m1:` section configures one). */
async function startFingerprint(agent: Agent): Promise<RunningRole> {
  const vault = requireVault(agent, 'the fingerprint role');
  const log = agent.logger.child({ component: 'm1' });
  const { attachM1Role, createM1Role } = await import('./m1/index.js');
  const { role, driver } = createM1Role({ config: agent.config.m1 ?? {}, agent, vault, logger: log });
  attachM1Role({ agent, role, vault, logger: log });
  void role.start().catch((err: unknown) => log.error({ event: 'm1_start_failed', err: errorMessage(err) }, `fingerprint role did not start: ${errorMessage(err)}`));
  // A changed served list: the module's library follows the served view.
  agent.servedOrgs.onChange(() => void role.reconcile().catch((err: unknown) => log.warn({ event: 'm1_reconcile_failed', err: errorMessage(err) }, 'reconcile after a served-organisations change failed')));
  return { name: 'm1', stop: async () => (await role.stop(), await driver.close()) };
}

/** The face module and card reader (M2). */
async function startFace(agent: Agent): Promise<RunningRole> {
  const vault = requireVault(agent, 'the face role');
  const log = agent.logger.child({ component: 'm2' });
  const { attachM2Role, createM2Role } = await import('./m2/index.js');
  const { role, driver } = createM2Role({ config: agent.config.m2 ?? {}, agent, vault, logger: log });
  attachM2Role({ agent, role, vault, logger: log });
  // tamperResponse 'zeroise': the role wipes its memory and locks; the agent destroys the key.
  role.on('zeroised', () => void agent.zeroise('tamper switch: case opened'));
  void role.start().catch((err: unknown) => log.error({ event: 'm2_start_failed', err: errorMessage(err) }, `face role did not start: ${errorMessage(err)}`));
  // A changed served list: the face index is rebuilt from the served view.
  agent.servedOrgs.onChange(() => void role.reload().catch((err: unknown) => log.warn({ event: 'm2_reload_failed', err: errorMessage(err) }, 'face index reload after a served-organisations change failed')));
  return { name: 'm2', stop: async () => (await role.stop(), await driver.close()) };
}

export async function startRole(agent: Agent): Promise<RunningRole | undefined> {
  if (agent.zeroised) return undefined; // no keys, nobody to identify: the agent only delivers and alarms
  switch (agent.config.device.kind) {
    case 'm1':
      return startFingerprint(agent);
    case 'm2': {
      // An M2 terminal may also carry a fingerprint module: configured by an m1: section.
      const roles = [await startFace(agent), ...(agent.config.m1 ? [await startFingerprint(agent)] : [])];
      return { name: roles.map((r) => r.name).join('+'), stop: async () => void (await Promise.all(roles.map((r) => r.stop()))) };
    }
    default:
      // sim: punches come through the local punch API; c1, p1: roles not built yet.
      return undefined;
  }
}
