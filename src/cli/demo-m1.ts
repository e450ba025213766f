/**
 * `tallybox demo --device m1`: the fingerprint path on one machine — an
 * embedded broker, the cloud emulator, the R30x sensor simulator on a real
 * pseudo-terminal (socat), a vault and the agent with its M1 role. A few
 * simulated people are enrolled (consent recorded first), then their fingers
 * are placed on the simulated sensor and the cloud prints the punches.
 *
 *   tallybox demo --device m1                     enrol 4 people, ~12 presentations, one repeat suppressed
 *   tallybox demo --device m1 --json --punches N  one JSON line per punch received by the cloud, then
 *                                                 {"received":N,"duplicates":D,"lost":L}; exit 0 when lost is 0
 *   --keep-data DIR                               leave the device's data directory in DIR
 *
 * `startM1Stack` and the finger helpers are exported for tests and benches.
 */
import { join } from 'node:path';
import type { R30xDriver } from '../../firmware-bridge/r30x/driver.js';
import type { CloudSink } from '../../simulators/cloud/sink.js';
import { startFingerprintSimulator, type FingerprintSimulator } from '../../simulators/fingerprint/simulator.js';
import type { FingerRef } from '../../simulators/fingerprint/templates.js';
import type { Agent } from '../agent/agent.js';
import { pb, type PunchEvent } from '../proto/index.js';
import type { M1Role, EnrolResult, EnrolStep, M1RoleOptions } from '../roles/m1/role.js';
import { createLogger, type Logger } from '../util/log.js';
import type { Vault } from '../vault/vault.js';
import { awaitDelivery, punchJsonLine, sleep, startDemoDevice, type DemoBroker } from './demo-kit.js';

export interface M1DemoOptions {
  json: boolean;
  /** Punches to produce (default 12). */
  punches: number;
  keepData?: string;
  /** An external broker instead of the embedded one (`--broker URL`). */
  brokerUrl?: string;
  out?: (line: string) => void;
}

export interface M1StackOptions {
  /** Root directory (created if missing); default a fresh temp dir, removed by close(). */
  dir?: string;
  orgId?: string;
  /** Organisations the device serves (default: just orgId). */
  servedOrgs?: string[];
  deviceId?: string;
  /** Simulator library size (default 1000). */
  capacity?: number;
  /** Driver reply timeout (default 500 ms: a pty answers in well under 1 ms). */
  timeoutMs?: number;
  logger?: Logger;
  agentLogLevel?: 'silent' | 'error' | 'warn' | 'info';
  onPunch?: (p: PunchEvent, info: { duplicate: boolean }) => void;
  /** Role options beyond the config (repeat window, poll, backoff, clocks...). */
  role?: Partial<Omit<M1RoleOptions, 'agent' | 'vault' | 'driver' | 'gate'>>;
  /** An external broker instead of the embedded one (`--broker URL`). */
  brokerUrl?: string;
}

/** Everything of one M1 device plus its cloud, wired together by the `tallybox run` start path. Nothing is started in the role yet. */
export interface M1Stack {
  dir: string;
  orgId: string;
  deviceId: string;
  broker: DemoBroker;
  sink: CloudSink;
  vault: Vault;
  agent: Agent;
  sim: FingerprintSimulator;
  driver: R30xDriver;
  role: M1Role;
  /** Where the agent opens the sensor (the pty symlink). */
  link: string;
  close(opts?: { keepDir?: boolean }): Promise<void>;
}

export async function startM1Stack(opts: M1StackOptions = {}): Promise<M1Stack> {
  const orgId = opts.orgId ?? 'acme';
  const deviceId = opts.deviceId ?? 'demo-m1-0001';
  const { repeatWindowSec, ...roleOpts } = opts.role ?? {};
  let sim: FingerprintSimulator | undefined;
  const dev = await startDemoDevice({
    kind: 'm1',
    deviceId,
    orgId,
    ...(opts.servedOrgs ? { servedOrgs: opts.servedOrgs } : {}),
    vault: true,
    ...(opts.dir ? { dir: opts.dir } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.brokerUrl ? { brokerUrl: opts.brokerUrl } : {}),
    logLevel: opts.agentLogLevel ?? 'silent',
    ...(opts.onPunch ? { onPunch: opts.onPunch } : {}),
    // The m1: section `tallybox run` would read, pointing at the simulator's pty.
    config: (dir) => ({ m1: { port: join(dir, 'ttyR30x'), timeoutMs: opts.timeoutMs ?? 500, ...(typeof repeatWindowSec === 'number' ? { repeatWindowSec } : {}) } }),
    beforeRole: async (dir, onClose) => {
      sim = await startFingerprintSimulator({ link: join(dir, 'ttyR30x'), control: false, ...(opts.capacity ? { capacity: opts.capacity } : {}) });
      onClose(() => sim!.close());
    },
    roles: {
      start: false,
      enrolOnUpsert: false,
      ...(typeof repeatWindowSec === 'number' ? { repeatWindowSec } : {}),
      // The gate is the device's, shared by its roles: its clock too.
      ...(roleOpts.monotonic ? { monotonic: roleOpts.monotonic } : {}),
      m1: { pollMs: 20, backoff: { minMs: 100, maxMs: 1000 }, ...(opts.logger ? { logger: opts.logger } : {}), ...roleOpts },
    },
  });
  try {
    const { role, driver } = dev.running!.m1!;
    if (typeof repeatWindowSec === 'function') role.repeatWindowSec = repeatWindowSec;
    return { dir: dev.dir, orgId, deviceId, broker: dev.broker, sink: dev.sink, vault: dev.vault!, agent: dev.agent, sim: sim!, driver, role, link: join(dev.dir, 'ttyR30x'), close: dev.close };
  } catch (err) {
    await dev.close();
    throw err;
  }
}

type Outcome = 'punch' | 'repeat' | 'no-match' | 'unknown-page' | 'bad-image';

/**
 * Place a finger on the simulated sensor, wait for the role's verdict, lift it
 * and wait until the role has seen the lift (so the next presentation counts).
 */
export async function presentFinger(stack: Pick<M1Stack, 'role' | 'sim'>, ref: FingerRef, timeoutMs = 10_000): Promise<Outcome> {
  const { role, sim } = stack;
  const verdict = new Promise<Outcome>((resolve, reject) => {
    const events: Outcome[] = ['punch', 'repeat', 'no-match', 'unknown-page', 'bad-image'];
    const handlers = events.map((e) => [e, () => done(e)] as const);
    const timer = setTimeout(() => done(null), timeoutMs);
    function done(e: Outcome | null) {
      clearTimeout(timer);
      for (const [name, h] of handlers) role.off(name, h);
      if (e) resolve(e);
      else reject(new Error(`no identification verdict within ${timeoutMs} ms`));
    }
    for (const [name, h] of handlers) role.on(name, h);
  });
  const lifted = new Promise<void>((resolve) => role.once('lifted', () => resolve()));
  sim.device.placeFinger(ref);
  try {
    return await verdict;
  } finally {
    sim.device.liftFinger();
    await Promise.race([lifted, new Promise((r) => setTimeout(r, timeoutMs))]);
  }
}

/** Enrol `ref` for a subject: the simulated person places and lifts the finger when the role asks. */
export async function enrolFinger(stack: Pick<M1Stack, 'role' | 'sim'>, orgId: string, subjectId: string, ref: FingerRef, opts: { slot?: number; captures?: 2 | 3 } = {}): Promise<EnrolResult> {
  const { role, sim } = stack;
  const onStep = (s: EnrolStep) => {
    if (!('waitingFor' in s)) return;
    if (s.waitingFor === 'finger') sim.device.placeFinger(ref);
    else sim.device.liftFinger();
  };
  role.on('enrol-step', onStep);
  try {
    return await role.enrol(orgId, subjectId, opts);
  } finally {
    role.off('enrol-step', onStep);
    sim.device.liftFinger();
  }
}

/** Simulated staff: opaque subject ids on the device, a simulated finger each on the sensor. */
const PEOPLE = [
  { subjectId: 'sub-0001', person: 'p-ana', finger: 1 },
  { subjectId: 'sub-0002', person: 'p-bo', finger: 6 },
  { subjectId: 'sub-0003', person: 'p-chen', finger: 1 },
  { subjectId: 'sub-0004', person: 'p-dev', finger: 2, minor: true },
];

export async function runM1Demo(opts: M1DemoOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const say = (l: string) => {
    if (!opts.json) out(l);
  };
  const punches = Math.max(0, Math.floor(opts.punches));
  const accepted = new Set<string>();
  let stack: M1Stack | undefined;
  try {
    stack = await startM1Stack({
      ...(opts.keepData ? { dir: opts.keepData } : {}),
      ...(opts.brokerUrl ? { brokerUrl: opts.brokerUrl } : {}),
      ...(opts.json ? {} : { logger: createLogger({ level: 'error', base: { deviceId: 'demo-m1-0001' } }) }),
      // Human mode shows the repeat window (1 s, so the demo stays short); --json produces every punch asked for.
      role: { repeatWindowSec: opts.json ? 0 : 1 },
      onPunch: (p, { duplicate }) => {
        if (duplicate) return;
        if (opts.json) {
          out(punchJsonLine(p));
        } else {
          const at = new Date(p.occurredAtMs).toISOString().slice(11, 23);
          say(`  cloud ← punch #${p.seq}  ${p.subjectId}  FINGERPRINT  score ${(pb.ScoreBucket as unknown as Record<number, string>)[p.matchScore]?.replace('SCORE_BUCKET_', '') ?? '?'}  at ${at}`);
        }
      },
    });
    const s = stack;
    const { role, vault, orgId, agent } = s;
    role.on('punch', (e) => {
      if (e.eventId) accepted.add(e.eventId);
    });

    say(`Tallybox demo (M1 fingerprint): broker ${s.broker.url}, device ${s.deviceId} (org ${orgId}), sensor on ${s.link}, data in ${s.dir}`);
    await role.start();
    if (role.status !== 'ready') throw new Error(`fingerprint module did not come up: ${role.status}`);
    say(`Sensor ready: library of ${role.librarySize} pages, reconciled with the vault.\n`);

    // SubjectUpsert with consent, then enrolment on the sensor.
    await vault.upsertSubjects(
      orgId,
      PEOPLE.map((p) => ({
        subjectId: p.subjectId,
        displayName: `Simulated person ${p.person}`,
        minor: p.minor === true,
        consents: [{ kind: 'biometric' as const, evidence: 'demo consent form' }, ...(p.minor ? [{ kind: 'guardian' as const, evidence: 'demo guardian form' }] : [])],
      })),
    );
    for (const p of PEOPLE) {
      const r = await enrolFinger(s, orgId, p.subjectId, { person: p.person, finger: p.finger });
      say(`  enrolled ${p.subjectId} (finger ${p.finger}) at module page ${r.page}; template sealed in the vault`);
    }
    say('');

    const presentations: Array<(typeof PEOPLE)[number] | 'repeat' | 'stranger'> = [];
    for (let i = 0; i < punches; i++) presentations.push(PEOPLE[i % PEOPLE.length]!);
    if (!opts.json && punches > 0) {
      presentations.splice(1, 0, 'repeat');
      presentations.splice(3, 0, 'stranger');
    }
    let last = PEOPLE[0]!;
    const punchedAt = new Map<string, number>();
    for (const item of presentations) {
      if (item === 'stranger') {
        const v = await presentFinger(s, { person: 'p-stranger', finger: 3 });
        say(`  sensor: an unenrolled finger → ${v === 'no-match' ? 'no match, no punch' : v}`);
        continue;
      }
      const p = item === 'repeat' ? last : item;
      // The same person again: wait the repeat window out, unless showing it off.
      const at = punchedAt.get(p.subjectId);
      if (item !== 'repeat' && at !== undefined && role.repeatWindowSec > 0) {
        const wait = at + role.repeatWindowSec * 1000 - performance.now();
        if (wait > 0) await sleep(wait + 20);
      }
      const verdict = await presentFinger(s, { person: p.person, finger: p.finger });
      if (verdict === 'punch') {
        punchedAt.set(p.subjectId, performance.now()); // monotonic, like the role's repeat window
        last = p;
      } else if (verdict === 'repeat') say(`  sensor: ${p.subjectId} again within ${role.repeatWindowSec} s → same punch, not sent twice`);
      else say(`  sensor: ${p.subjectId} → ${verdict}`);
    }
    const stats = await awaitDelivery(s.sink, accepted, punches);
    const lost = stats.lost;
    if (opts.json) out(JSON.stringify(stats));
    else {
      say(`\nDone: ${stats.received} fingerprint punches received by the cloud, ${stats.duplicates} duplicates, ${lost} lost; ${role.stats.repeats} repeats suppressed, ${role.stats.noMatch} unmatched.`);
      if (opts.keepData) say(`Device data left in ${s.dir}`);
    }
    return lost === 0 ? 0 : 1;
  } catch (err) {
    if (opts.json) out(JSON.stringify({ error: (err as { code?: string }).code ?? 'ERROR', message: (err as Error).message }));
    else say(`demo failed: ${(err as Error).message}`);
    return 1;
  } finally {
    await stack?.close({ keepDir: opts.keepData !== undefined });
  }
}
