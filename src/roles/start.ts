/**
 * The one attach/start path of the device roles: `tallybox run`, the demos
 * and the role tests all come through here. It starts the role named by
 * `device.kind` on a running agent: the drivers and services of that kind of
 * machine, one punch gate shared by all of them (a finger and a face of the
 * same person a second apart are one punch), attached to the agent through
 * the kit (erasure, ConfigPatch, enrol on SubjectUpsert). A role whose
 * hardware does not answer keeps retrying in the background (its
 * supervisors say so in DeviceState); the agent keeps running either way.
 *
 * Each role is imported only for its kind: a router or a print box never
 * loads the face matcher or the fingerprint driver (resident memory).
 */
import type { BridgeDriver } from '../../firmware-bridge/bridge/driver.js';
import type { HidReportTransport } from '../../firmware-bridge/hid/transport.js';
import type { R30xDriver } from '../../firmware-bridge/r30x/driver.js';
import type { Agent } from '../agent/agent.js';
import { servedVaultView } from '../agent/served-orgs.js';
import { TallyboxError, errorMessage } from '../util/errors.js';
import type { PunchGate } from './kit/punch-gate.js';
import type { M1Role, M1RoleOptions } from './m1/role.js';
import type { M2Role, M2RoleOptions } from './m2/role.js';
import type { C1Role, C1RoleOptions } from './c1/role.js';
import type { P1Role, P1RoleOptions } from './p1/role.js';
import type { Printer } from '../../firmware-bridge/devices.js';

export interface StartRoleOptions {
  /** M1 role options beyond its config section (demos, tests, benches: faster polling, backoff, clocks). */
  m1?: Partial<Omit<M1RoleOptions, 'agent' | 'vault' | 'driver' | 'gate' | 'repeatWindowSec'>>;
  /** M2 role options beyond its config section. */
  m2?: Partial<Omit<M2RoleOptions, 'agent' | 'vault' | 'driver' | 'gate' | 'repeatWindowSec' | 'cardTransport'>>;
  /** Another card reader transport (the in-process simulator); default from `m2.cardReader`. */
  cardTransport?: HidReportTransport;
  /** A fixed repeat window for the shared gate; default: the agent's runtime setting (ConfigPatch). */
  repeatWindowSec?: number;
  /** Gate clocks (tests). */
  monotonic?: () => number;
  /** Enrol on SubjectUpsert (default: the config's `m2.enrolOnUpsert`, true for m1). */
  enrolOnUpsert?: boolean;
  /** C1 role options beyond its config section (clocks, backoff). */
  c1?: Partial<Pick<C1RoleOptions, 'wallClock' | 'monotonic' | 'backoff' | 'clockSynced' | 'checkpointClock' | 'checkpointMs'>>;
  /** P1 role options beyond its config section (another printer opener in tests, faster backoff). */
  p1?: Partial<Pick<P1RoleOptions, 'openPrinter' | 'supervisorBackoff' | 'confirmTimeoutMs'>>;
  /** Start the roles now, in the background (default true); false: the caller calls role.start(). */
  start?: boolean;
  /** M2 tamperResponse 'zeroise' also zeroises the agent (destroys the key; default true). */
  zeroiseAgentOnTamper?: boolean;
}

export interface RunningRole {
  name: string;
  gate: PunchGate;
  m1?: { role: M1Role; driver: R30xDriver };
  m2?: { role: M2Role; driver: BridgeDriver };
  c1?: { role: C1Role };
  p1?: { role: P1Role };
  stop(): Promise<void>;
}

type Part = { name: string; start(): Promise<unknown>; stop(): Promise<void> };

function requireVault(agent: Agent, what: string) {
  const vault = agent.privacy?.vault;
  if (!vault) throw new TallyboxError('CONFIG_INVALID', `${what} needs a vault section (templates are kept encrypted on the device)`);
  // Roles identify only within the organisations the device serves (issue 9 §2).
  return servedVaultView(vault, agent.servedOrgs);
}

/** The fingerprint module (M1, and M2 when an `m1:` section configures one). */
async function startFingerprint(agent: Agent, gate: PunchGate, opts: StartRoleOptions): Promise<Part & { m1: NonNullable<RunningRole['m1']> }> {
  const vault = requireVault(agent, 'the fingerprint role');
  const log = agent.logger.child({ component: 'm1' });
  const { attachM1Role, createM1Role } = await import('./m1/index.js');
  const { role, driver } = createM1Role({ config: agent.config.m1 ?? {}, agent, vault, gate, logger: log, ...(opts.m1 ? { overrides: opts.m1 } : {}) });
  attachM1Role({ agent, role, vault, logger: log, followSettings: false, enrolOnUpsert: opts.enrolOnUpsert ?? true });
  // A changed served list: the module's library follows the served view.
  agent.servedOrgs.onChange(() => void role.reconcile().catch((err: unknown) => log.warn({ event: 'm1_reconcile_failed', err: errorMessage(err) }, 'reconcile after a served-organisations change failed')));
  return {
    name: 'm1',
    m1: { role, driver },
    start: () => role.start().catch((err: unknown) => log.error({ event: 'm1_start_failed', err: errorMessage(err) }, `fingerprint role did not start: ${errorMessage(err)}`)),
    stop: async () => (await role.stop(), await driver.close()),
  };
}

/** The face module and card reader (M2). */
async function startFace(agent: Agent, gate: PunchGate, opts: StartRoleOptions): Promise<Part & { m2: NonNullable<RunningRole['m2']> }> {
  const vault = requireVault(agent, 'the face role');
  const log = agent.logger.child({ component: 'm2' });
  const { attachM2Role, createM2Role } = await import('./m2/index.js');
  const { role, driver, config } = createM2Role({
    config: agent.config.m2 ?? {},
    agent,
    vault,
    gate,
    logger: log,
    ...(opts.cardTransport ? { cardTransport: opts.cardTransport } : {}),
    ...(opts.m2 ? { overrides: opts.m2 } : {}),
  });
  attachM2Role({ agent, role, vault, logger: log, followSettings: false, enrolOnUpsert: opts.enrolOnUpsert ?? config.enrolOnUpsert });
  // tamperResponse 'zeroise': the role wipes its memory and locks; the agent destroys the key.
  if (opts.zeroiseAgentOnTamper !== false) role.on('zeroised', () => void agent.zeroise('tamper switch: case opened'));
  // A changed served list: the face index is rebuilt from the served view.
  agent.servedOrgs.onChange(() => void role.reload().catch((err: unknown) => log.warn({ event: 'm2_reload_failed', err: errorMessage(err) }, 'face index reload after a served-organisations change failed')));
  return {
    name: 'm2',
    m2: { role, driver },
    start: () => role.start().catch((err: unknown) => log.error({ event: 'm2_start_failed', err: errorMessage(err) }, `face role did not start: ${errorMessage(err)}`)),
    stop: async () => (await role.stop(), await driver.close()),
  };
}

/** Wi-Fi presence (C1): hostapd, dnsmasq and hook sources, enrolled phones, join rules. */
async function startWifi(agent: Agent, gate: PunchGate, opts: StartRoleOptions): Promise<Part & { c1: NonNullable<RunningRole['c1']> }> {
  const vault = requireVault(agent, 'the Wi-Fi presence role');
  const config = agent.config.c1;
  if (!config) throw new TallyboxError('CONFIG_INVALID', 'a c1 device needs a c1 section');
  const log = agent.logger.child({ component: 'c1' });
  const [{ C1Role }, { clockSynced }] = await Promise.all([import('./c1/role.js'), import('../agent/clock.js')]);
  // clockSynced: a window restored after a reboot counts the downtime by the wall clock only when it is synchronised.
  const role = new C1Role({ config, dataDir: agent.config.dataDir, vault, gate, sink: agent, logger: log, clockSynced: () => clockSynced(agent.config.clock), ...opts.c1 });
  const { attachRole } = await import('./kit/attach.js');
  attachRole({ agent, participant: role, gate, onErased: (org, ids) => role.subjectsErased(org, ids), tag: 'c1', logger: log, followSettings: false });
  return {
    name: 'c1',
    c1: { role },
    start: () => role.start().catch((err: unknown) => log.error({ event: 'c1_start_failed', err: errorMessage(err) }, `Wi-Fi presence role did not start: ${errorMessage(err)}`)),
    stop: () => role.stop(),
  };
}

/** The printer transports, loaded only on a print box. */
async function defaultOpenPrinter(): Promise<(url: string) => Printer> {
  const { openPrinter } = await import('../../firmware-bridge/printer/index.js');
  return (url) => openPrinter(url);
}

/** Print box (P1): printers, the encrypted spool, the print commands; the spool joins every org erasure. */
async function startPrinting(agent: Agent, opts: StartRoleOptions): Promise<Part & { p1: NonNullable<RunningRole['p1']> }> {
  const config = agent.config.p1;
  if (!config) throw new TallyboxError('CONFIG_INVALID', 'a p1 device needs a p1 section');
  const privacy = agent.privacy;
  if (!privacy) throw new TallyboxError('CONFIG_INVALID', 'the print role needs a vault section (documents are encrypted under org keys)');
  const log = agent.logger.child({ component: 'p1' });
  const [{ P1Role }, { clockSynced }] = await Promise.all([import('./p1/role.js'), import('../agent/clock.js')]);
  const role = await P1Role.create({
    config,
    dataDir: agent.config.dataDir,
    deviceId: agent.config.device.id,
    keys: privacy.vault,
    identity: privacy.identity,
    enqueueResult: (org, r) => agent.results.enqueue(org, r),
    sink: agent,
    clockSynced: () => clockSynced(agent.config.clock),
    openPrinter: opts.p1?.openPrinter ?? (await defaultOpenPrinter()),
    logger: log,
    ...(opts.p1?.supervisorBackoff ? { supervisorBackoff: opts.p1.supervisorBackoff } : {}),
    ...(opts.p1?.confirmTimeoutMs !== undefined ? { confirmTimeoutMs: opts.p1.confirmTimeoutMs } : {}),
  });
  // The pipeline has the spool as a participant from the start (withdraw.ts): the live role takes it over.
  const { isSpoolErasureParticipant } = await import('./p1/withdraw.js');
  const early = privacy.purger.participant(role.name);
  if (isSpoolErasureParticipant(early)) early.attach(role);
  else {
    const { attachRole } = await import('./kit/attach.js');
    attachRole({ agent, participant: role, tag: 'p1', logger: log, followSettings: false });
  }
  agent.setPrintHandlers(role);
  return {
    name: 'p1',
    p1: { role },
    start: () => role.start().catch((err: unknown) => log.error({ event: 'p1_start_failed', err: errorMessage(err) }, `print role did not start: ${errorMessage(err)}`)),
    stop: async () => {
      agent.setPrintHandlers(undefined);
      if (isSpoolErasureParticipant(early)) early.attach(undefined);
      await role.stop();
    },
  };
}

export async function startRole(agent: Agent, opts: StartRoleOptions = {}): Promise<RunningRole | undefined> {
  if (agent.zeroised) return undefined; // no keys, nobody to identify: the agent only delivers and alarms
  const kind = agent.config.device.kind;
  if (kind === 'p1') {
    // A print box identifies nobody: no punch gate, just the printing part.
    const { PunchGate } = await import('./kit/punch-gate.js');
    const gate = new PunchGate({ sink: agent, lastSeen: { touchSubject: async () => false }, logger: agent.logger, repeatWindowSec: 60 });
    const part = await startPrinting(agent, opts);
    if (opts.start !== false) void part.start();
    return { name: 'p1', gate, p1: part.p1, stop: async () => (await part.stop(), await gate.stop()) };
  }
  // sim: punches come through the local punch API.
  if (kind !== 'm1' && kind !== 'm2' && kind !== 'c1') return undefined;
  const settings = agent.settings;
  const { PunchGate } = await import('./kit/punch-gate.js');
  const gate = new PunchGate({
    sink: agent,
    lastSeen: requireVault(agent, `the ${kind} role`),
    logger: agent.logger,
    // Read at every identification, so a ConfigPatch applies at once.
    repeatWindowSec: opts.repeatWindowSec ?? (() => settings.repeatWindowSec),
    ...(opts.monotonic ? { monotonic: opts.monotonic } : {}),
  });
  const parts: Part[] = [];
  const running: RunningRole = {
    name: '',
    gate,
    stop: async () => {
      await Promise.all(parts.map((p) => p.stop()));
      await gate.stop();
    },
  };
  if (kind === 'm2') {
    const face = await startFace(agent, gate, opts);
    running.m2 = face.m2;
    parts.push(face);
  }
  if (kind === 'c1') {
    const wifi = await startWifi(agent, gate, opts);
    running.c1 = wifi.c1;
    parts.push(wifi);
  }
  // An M2 terminal may also carry a fingerprint module: configured by an m1: section.
  if (kind === 'm1' || (kind === 'm2' && agent.config.m1)) {
    const fp = await startFingerprint(agent, gate, opts);
    running.m1 = fp.m1;
    parts.push(fp);
  }
  running.name = parts.map((p) => p.name).join('+');
  if (opts.start !== false) for (const p of parts) void p.start();
  return running;
}
