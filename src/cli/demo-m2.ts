/**
 * `tallybox demo --device m2`: the face and card paths on one machine — an
 * embedded broker, the cloud emulator, the face-module simulator on a real
 * pseudo-terminal (socat) with a synthetic population, a simulated USB card
 * reader (HID reports through SimHidTransport), a vault (keys provisioned in
 * a temp dir) and the agent with its M2 role. A few simulated people are
 * enrolled (consent recorded first; some also get a staff card), then they
 * present their faces and swipe cards and the cloud prints the punches.
 *
 *   tallybox demo --device m2                     enrol 4 people, ~12 punches; a spoof, a stranger,
 *                                                 an unknown card and a repeat are refused on the way
 *   tallybox demo --device m2 --json --punches N  one JSON line per punch received by the cloud, then
 *                                                 {"received":N,"duplicates":D,"lost":L}; exit 0 when lost is 0
 *   --keep-data DIR                               leave the device's data directory in DIR
 *
 * `startM2Stack` and the face/card helpers are exported for tests and benches.
 */
import { join } from 'node:path';
import type { BridgeDriver } from '../../firmware-bridge/bridge/driver.js';
import { CardReaderSim } from '../../simulators/card/main.js';
import type { CloudSink } from '../../simulators/cloud/sink.js';
import { startFaceSimulator, type FaceSimulator } from '../../simulators/face/main.js';
import type { Agent } from '../agent/agent.js';
import { PunchMethod, pb, type PunchEvent } from '../proto/index.js';
import type { M2EnrolResult, M2Outcome, M2Role, M2RoleOptions } from '../roles/m2/role.js';
import { isTallyboxError } from '../util/errors.js';
import { createLogger, type Logger } from '../util/log.js';
import type { Vault } from '../vault/vault.js';
import { awaitDelivery, punchJsonLine, sleep, startDemoDevice, type DemoBroker } from './demo-kit.js';

export interface M2DemoOptions {
  json: boolean;
  /** Punches to produce (default 12). */
  punches: number;
  keepData?: string;
  /** An external broker instead of the embedded one (`--broker URL`). */
  brokerUrl?: string;
  out?: (line: string) => void;
}

export interface M2StackOptions {
  /** Root directory (created if missing); default a fresh temp dir, removed by close(). */
  dir?: string;
  orgId?: string;
  /** Organisations the device serves (default: just orgId). */
  servedOrgs?: string[];
  deviceId?: string;
  /** Simulated population size (default 200) and seed (default 11). */
  people?: number;
  seed?: number;
  logger?: Logger;
  agentLogLevel?: 'silent' | 'error' | 'warn' | 'info';
  onPunch?: (p: PunchEvent, info: { duplicate: boolean }) => void;
  /** Role options beyond the config (repeat window, thresholds, tamper response, heartbeat...). */
  role?: Partial<Omit<M2RoleOptions, 'agent' | 'vault' | 'driver' | 'cardTransport' | 'gate'>>;
  /** An external broker instead of the embedded one (`--broker URL`). */
  brokerUrl?: string;
}

/** Everything of one M2 device plus its cloud, wired together by the `tallybox run` start path. The role is not started yet. */
export interface M2Stack {
  dir: string;
  dataDir: string;
  orgId: string;
  deviceId: string;
  broker: DemoBroker;
  sink: CloudSink;
  vault: Vault;
  agent: Agent;
  face: FaceSimulator;
  card: CardReaderSim;
  driver: BridgeDriver;
  role: M2Role;
  /** Where the agent opens the face module (the pty symlink). */
  link: string;
  close(opts?: { keepDir?: boolean }): Promise<void>;
}

export async function startM2Stack(opts: M2StackOptions = {}): Promise<M2Stack> {
  const orgId = opts.orgId ?? 'acme';
  const deviceId = opts.deviceId ?? 'demo-m2-0001';
  const { repeatWindowSec, ...roleOpts } = opts.role ?? {};
  let face: FaceSimulator | undefined;
  let built: M2Stack | undefined;
  const card = new CardReaderSim();
  const dev = await startDemoDevice({
    kind: 'm2',
    deviceId,
    orgId,
    ...(opts.servedOrgs ? { servedOrgs: opts.servedOrgs } : {}),
    vault: true,
    ...(opts.dir ? { dir: opts.dir } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.brokerUrl ? { brokerUrl: opts.brokerUrl } : {}),
    logLevel: opts.agentLogLevel ?? 'silent',
    ...(opts.onPunch ? { onPunch: opts.onPunch } : {}),
    // The m2: section `tallybox run` would read, pointing at the simulator's pty.
    config: (dir) => ({ m2: { bridge: { port: join(dir, 'ttyFace'), baudRate: 921600, timeoutMs: 2000 }, ...(typeof repeatWindowSec === 'number' ? { repeatWindowSec } : {}) } }),
    beforeRole: async (dir, onClose) => {
      face = await startFaceSimulator({ link: join(dir, 'ttyFace'), control: false, people: opts.people ?? 200, dim: 512, seed: opts.seed ?? 11 });
      // Whatever simulator the stack holds when it closes (tests swap in a new one after an unplug).
      onClose(() => (built?.face ?? face)!.close());
    },
    roles: {
      start: false,
      enrolOnUpsert: false,
      zeroiseAgentOnTamper: false,
      cardTransport: card.transport,
      ...(typeof repeatWindowSec === 'number' ? { repeatWindowSec } : {}),
      // The gate is the device's, shared by its roles: its clock too.
      ...(roleOpts.monotonic ? { monotonic: roleOpts.monotonic } : {}),
      m2: { backoff: { minMs: 100, maxMs: 1000 }, ...(opts.logger ? { logger: opts.logger } : {}), ...roleOpts },
    },
  });
  try {
    const { role, driver } = dev.running!.m2!;
    if (typeof repeatWindowSec === 'function') role.repeatWindowSec = repeatWindowSec;
    built = { dir: dev.dir, dataDir: dev.dataDir, orgId, deviceId, broker: dev.broker, sink: dev.sink, vault: dev.vault!, agent: dev.agent, face: face!, card, driver, role, link: join(dev.dir, 'ttyFace'), close: dev.close };
    return built;
  } catch (err) {
    await dev.close();
    throw err;
  }
}

/** Wait for the role's verdict on the next face or card. */
function nextOutcome(role: M2Role, source: 'face' | 'card', timeoutMs: number): Promise<M2Outcome> {
  return new Promise<M2Outcome>((resolve, reject) => {
    const timer = setTimeout(() => {
      role.off('outcome', on);
      reject(new Error(`no ${source} verdict within ${timeoutMs} ms`));
    }, timeoutMs);
    function on(e: { source: 'face' | 'card'; outcome: M2Outcome }) {
      if (e.source !== source) return;
      clearTimeout(timer);
      role.off('outcome', on);
      resolve(e.outcome);
    }
    role.on('outcome', on);
  });
}

/** A simulated person presents their face (or a photo of it: `spoof`); resolves with the role's verdict. */
export async function presentFace(stack: Pick<M2Stack, 'role' | 'face'>, person: number, opts: { spoof?: boolean; timeoutMs?: number } = {}): Promise<M2Outcome> {
  const verdict = nextOutcome(stack.role, 'face', opts.timeoutMs ?? 10_000);
  await (opts.spoof ? stack.face.sim.spoof(person) : stack.face.sim.present(person));
  return verdict;
}

/** Swipe a card on the simulated reader (HID reports through the transport); resolves with the verdict. */
export async function swipeCard(stack: Pick<M2Stack, 'role' | 'card'>, card: string, timeoutMs = 10_000): Promise<M2Outcome> {
  const verdict = nextOutcome(stack.role, 'card', timeoutMs);
  stack.card.swipe(card);
  return verdict;
}

/**
 * Enrol a simulated person's face for a subject: the person looks at the
 * camera once per capture the module asks for. Captures that disagree (a poor
 * shot) are retried, as a terminal would, up to `attempts` times.
 */
export async function enrolFace(stack: Pick<M2Stack, 'role' | 'face'>, orgId: string, subjectId: string, person: number, opts: { attempts?: number; captures?: number } = {}): Promise<M2EnrolResult> {
  const { role, face } = stack;
  const attempts = opts.attempts ?? 3;
  for (let attempt = 1; ; attempt++) {
    const done = role.enrol(orgId, subjectId, opts.captures ? { captures: opts.captures } : {});
    let settled = false;
    done.then(
      () => (settled = true),
      () => (settled = true),
    );
    // Wait until the module is in enrolment mode (or the role refused before asking).
    const t0 = performance.now();
    while (!settled && !face.sim.state().enrolling && performance.now() - t0 < 10_000) await sleep(5);
    const want = face.sim.state().enrolling?.total ?? 0;
    for (let i = 0; i < want && !settled; i++) await face.sim.present(person);
    try {
      return await done;
    } catch (err) {
      if (attempt >= attempts || !isTallyboxError(err, 'FACE_CAPTURES_INCONSISTENT')) throw err;
    }
  }
}

const bucket = (v: number) => (pb.ScoreBucket as unknown as Record<number, string>)[v]?.replace('SCORE_BUCKET_', '') ?? '?';
const method = (v: number) => (pb.PunchMethod as unknown as Record<number, string>)[v]?.replace('PUNCH_METHOD_', '') ?? '?';

/** Simulated staff: opaque subject ids on the device, a simulated face each, a staff card for some. */
const PEOPLE: Array<{ subjectId: string; person: number; name: string; card?: string; minor?: boolean }> = [
  { subjectId: 'sub-0001', person: 3, name: 'Simulated Ana', card: '0004211234' },
  { subjectId: 'sub-0002', person: 8, name: 'Simulated Bo' },
  { subjectId: 'sub-0003', person: 21, name: 'Simulated Chen', card: '0009876543' },
  { subjectId: 'sub-0004', person: 34, name: 'Simulated Dev', minor: true },
];
const STRANGER = 150;
const UNKNOWN_CARD = '0001111111';

export async function runM2Demo(opts: M2DemoOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const say = (l: string) => {
    if (!opts.json) out(l);
  };
  const punches = Math.max(0, Math.floor(opts.punches));
  const accepted = new Set<string>();
  let stack: M2Stack | undefined;
  try {
    stack = await startM2Stack({
      ...(opts.keepData ? { dir: opts.keepData } : {}),
      ...(opts.brokerUrl ? { brokerUrl: opts.brokerUrl } : {}),
      ...(opts.json ? {} : { logger: createLogger({ level: 'error', base: { deviceId: 'demo-m2-0001' } }) }),
      // Human mode shows the repeat window (1 s, so the demo stays short); --json produces every punch asked for.
      role: { repeatWindowSec: opts.json ? 0 : 1 },
      onPunch: (p, { duplicate }) => {
        if (duplicate) return;
        if (opts.json) {
          out(punchJsonLine(p));
        } else {
          const at = new Date(p.occurredAtMs).toISOString().slice(11, 23);
          const m = method(p.method);
          say(`  cloud ← punch #${p.seq}  ${p.subjectId}  ${m.padEnd(4)}${p.method === PunchMethod.PUNCH_METHOD_FACE ? `  score ${bucket(p.matchScore)}, liveness ${bucket(p.liveness)}` : ''}  at ${at}`);
        }
      },
    });
    const s = stack;
    const { role, vault, orgId, agent } = s;
    role.on('punch', (e) => {
      if (e.eventId) accepted.add(e.eventId);
    });

    say(`Tallybox demo (M2 face + card): broker ${s.broker.url}, device ${s.deviceId} (org ${orgId}), face module on ${s.link}, data in ${s.dir}`);
    const load = await role.start();
    if (role.status !== 'ready') throw new Error(`face module did not come up: ${role.status}`);
    say(`Face module ready (${role.moduleInfo?.model}, ${role.moduleInfo?.featureDim}-d features); ${load.templates} templates loaded from the vault; card reader on ${s.card.transport.description}.\n`);

    // SubjectUpsert with consent, cards as keyed HMACs, then face enrolment on the module.
    await vault.upsertSubjects(
      orgId,
      PEOPLE.map((p) => ({
        subjectId: p.subjectId,
        displayName: p.name,
        minor: p.minor === true,
        consents: [{ kind: 'biometric' as const, evidence: 'demo consent form' }, ...(p.minor ? [{ kind: 'guardian' as const, evidence: 'demo guardian form' }] : [])],
      })),
    );
    for (const p of PEOPLE) if (p.card) await vault.putCredential(orgId, 'card', p.card, p.subjectId);
    for (const p of PEOPLE) {
      const r = await enrolFace(s, orgId, p.subjectId, p.person);
      say(`  enrolled ${p.subjectId}: 3 captures averaged (consistency ${r.consistency.toFixed(2)}), template rotated by the org's transform and sealed in the vault${p.card ? '; staff card registered (HMAC only)' : ''}`);
    }
    say('');

    type Step = { kind: 'face' | 'card'; p: (typeof PEOPLE)[number] } | { kind: 'repeat' | 'spoof' | 'stranger' | 'unknown-card' };
    const steps: Step[] = [];
    const carded = PEOPLE.filter((p) => p.card);
    for (let i = 0; i < punches; i++) {
      if (i % 3 === 2) steps.push({ kind: 'card', p: carded[Math.floor(i / 3) % carded.length]! });
      else steps.push({ kind: 'face', p: PEOPLE[i % PEOPLE.length]! });
    }
    if (!opts.json && punches > 0) {
      steps.splice(1, 0, { kind: 'repeat' });
      steps.splice(3, 0, { kind: 'spoof' });
      steps.splice(5, 0, { kind: 'stranger' });
      steps.splice(7, 0, { kind: 'unknown-card' });
    }
    let last: (typeof PEOPLE)[number] = PEOPLE[0]!;
    const punchedAt = new Map<string, number>();
    const waitWindow = async (subjectId: string) => {
      const at = punchedAt.get(subjectId);
      if (at !== undefined && role.repeatWindowSec > 0) {
        const wait = at + role.repeatWindowSec * 1000 - performance.now();
        if (wait > 0) await sleep(wait + 20);
      }
    };
    for (const step of steps) {
      if (step.kind === 'repeat') {
        const v = await presentFace(s, last.person);
        say(`  camera: ${last.subjectId} again within ${role.repeatWindowSec} s → ${v === 'repeat' ? 'same punch, not sent twice' : v}`);
        continue;
      }
      if (step.kind === 'spoof') {
        const v = await presentFace(s, PEOPLE[1]!.person, { spoof: true });
        say(`  camera: a photo of ${PEOPLE[1]!.subjectId} held up → ${v === 'spoof' ? 'liveness check failed, no punch' : v}`);
        continue;
      }
      if (step.kind === 'stranger') {
        const v = await presentFace(s, STRANGER);
        say(`  camera: someone not enrolled → ${v === 'no-match' ? 'not recognised, no punch' : v}`);
        continue;
      }
      if (step.kind === 'unknown-card') {
        const v = await swipeCard(s, UNKNOWN_CARD);
        say(`  card reader: a card nobody holds → ${v === 'unknown-card' ? 'unknown card, no punch' : v}`);
        continue;
      }
      if (!('p' in step)) continue;
      const p = step.p;
      await waitWindow(p.subjectId);
      let v: M2Outcome = 'no-match';
      // A genuine face is occasionally not recognised (FRR ~1 %): the person looks again.
      for (let tries = 0; tries < 5; tries++) {
        v = step.kind === 'card' ? await swipeCard(s, p.card!) : await presentFace(s, p.person);
        if (v !== 'no-match') break;
        say(`  camera: ${p.subjectId} not recognised this time; looks again`);
      }
      if (v === 'punch') {
        punchedAt.set(p.subjectId, performance.now()); // monotonic, like the role's repeat window
        last = step.p;
      } else say(`  ${step.kind === 'card' ? 'card reader' : 'camera'}: ${p.subjectId} → ${v}`);
    }
    // Wait for the cloud to see every punch the agent accepted.
    const stats = await awaitDelivery(s.sink, accepted, punches);
    const lost = stats.lost;
    if (opts.json) out(JSON.stringify(stats));
    else {
      const r = role.stats;
      say(
        `\nDone: ${stats.received} punches received by the cloud (${r.facePunches} face, ${r.cardPunches} card), ${stats.duplicates} duplicates, ${lost} lost; ` +
          `${r.repeats} repeats suppressed, ${r.spoofs} spoofs refused, ${r.noMatch} faces not recognised, ${r.cardUnknown} unknown cards.`,
      );
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
