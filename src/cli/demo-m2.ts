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
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BridgeDriver } from '../../firmware-bridge/bridge/driver.js';
import { SerialTransport } from '../../firmware-bridge/transport/serial.js';
import { CardReaderSim } from '../../simulators/card/main.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { startFaceSimulator, type FaceSimulator } from '../../simulators/face/main.js';
import { Agent } from '../agent/agent.js';
import { validateConfig } from '../config/load.js';
import { PunchMethod, ScoreBucket, type PunchEvent } from '../proto/index.js';
import { attachM2Role } from '../roles/m2/attach.js';
import { M2Role, type M2EnrolResult, type M2Outcome, type M2RoleOptions } from '../roles/m2/role.js';
import { isTallyboxError } from '../util/errors.js';
import { createLogger, silentLogger, type Logger } from '../util/log.js';
import { provisionKeyFiles } from '../vault/keys.js';
import type { Vault } from '../vault/vault.js';

export interface M2DemoOptions {
  json: boolean;
  /** Punches to produce (default 12). */
  punches: number;
  keepData?: string;
  out?: (line: string) => void;
}

export interface M2StackOptions {
  /** Root directory (created if missing); default a fresh temp dir, removed by close(). */
  dir?: string;
  orgId?: string;
  deviceId?: string;
  /** Simulated population size (default 200) and seed (default 11). */
  people?: number;
  seed?: number;
  logger?: Logger;
  agentLogLevel?: 'silent' | 'error' | 'warn' | 'info';
  onPunch?: (p: PunchEvent, info: { duplicate: boolean }) => void;
  /** Role options beyond the wiring (repeat window, thresholds, tamper response...). */
  role?: Partial<Omit<M2RoleOptions, 'agent' | 'vault' | 'driver' | 'cardTransport'>>;
}

/** Everything of one M2 device plus its cloud, wired together. The role is not started yet. */
export interface M2Stack {
  dir: string;
  dataDir: string;
  orgId: string;
  deviceId: string;
  broker: EmbeddedBroker;
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

/** A throwaway Ed25519 public key (raw 32 bytes, base64) for the config's command-key pin. */
function demoCloudKey(): string {
  const der = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'der' });
  return der.subarray(der.length - 32).toString('base64');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startM2Stack(opts: M2StackOptions = {}): Promise<M2Stack> {
  const dir = opts.dir ? resolve(opts.dir) : mkdtempSync(join(tmpdir(), 'tallybox-m2-'));
  mkdirSync(dir, { recursive: true });
  const orgId = opts.orgId ?? 'acme';
  const deviceId = opts.deviceId ?? 'demo-m2-0001';
  const dataDir = join(dir, 'data');
  const keysDir = join(dir, 'keys');
  const link = join(dir, 'ttyFace');
  const cleanups: Array<() => Promise<unknown>> = [];
  let built: M2Stack | undefined;
  const close = async (c: { keepDir?: boolean } = {}) => {
    for (const f of cleanups.reverse()) await f().catch(() => undefined);
    cleanups.length = 0;
    if (!c.keepDir && !opts.dir) rmSync(dir, { recursive: true, force: true });
  };
  try {
    const broker = await startEmbeddedBroker();
    cleanups.push(() => broker.close());
    const sink = await CloudSink.connect({ url: broker.url, ...(opts.onPunch ? { onPunch: opts.onPunch } : {}) });
    cleanups.push(() => sink.close());
    const kekPath = join(keysDir, 'tallybox.kek');
    if (!existsSync(kekPath)) await provisionKeyFiles({ kekPath, dataDir });
    const config = validateConfig({
      version: 1,
      device: { id: deviceId, kind: 'm2', orgId },
      region: 'sg',
      dataDir,
      broker: { url: broker.url, allowLoopback: true, keepaliveSec: 5, reconnectMinMs: 100, reconnectMaxMs: 1000 },
      clock: { source: 'assume-synced' },
      outbox: { backlogRatePerSec: 0 },
      vault: { keyProvider: 'file', kekFile: kekPath },
      // The command intake wants a pinned cloud key; the demo's cloud sends no commands.
      cloud: { commandKeys: [{ id: 'demo-cloud', publicKey: demoCloudKey() }] },
      log: { level: opts.agentLogLevel ?? 'silent' },
    });
    const logger = opts.logger ?? silentLogger();
    const agent = await Agent.start({ config, logger });
    cleanups.push(() => agent.stop());
    const vault = agent.privacy?.vault;
    if (!vault) throw new Error('the agent opened no vault for an m2 device');
    const face = await startFaceSimulator({ link, control: false, people: opts.people ?? 200, dim: 512, seed: opts.seed ?? 11 });
    // Whatever simulator the stack holds when it closes (tests swap in a new one after an unplug).
    cleanups.push(() => (built?.face ?? face).close());
    const card = new CardReaderSim();
    const driver = new BridgeDriver({ transport: new SerialTransport({ path: link, baudRate: 921600 }), timeoutMs: 2000 });
    cleanups.push(() => driver.close());
    const role = new M2Role({ agent, vault, driver, cardTransport: card.transport, logger, backoff: { minMs: 100, maxMs: 1000 }, ...opts.role });
    cleanups.push(() => role.stop());
    attachM2Role({ agent, role, vault, logger, enrolOnUpsert: false, followSettings: false });
    built = { dir, dataDir, orgId, deviceId, broker, sink, vault, agent, face, card, driver, role, link, close };
    return built;
  } catch (err) {
    await close();
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
    const t0 = Date.now();
    while (!settled && !face.sim.state().enrolling && Date.now() - t0 < 10_000) await sleep(5);
    const want = face.sim.state().enrolling?.total ?? 0;
    for (let i = 0; i < want && !settled; i++) await face.sim.present(person);
    try {
      return await done;
    } catch (err) {
      if (attempt >= attempts || !isTallyboxError(err, 'FACE_CAPTURES_INCONSISTENT')) throw err;
    }
  }
}

const BUCKETS: Record<number, string> = {
  [ScoreBucket.SCORE_BUCKET_LOW]: 'LOW',
  [ScoreBucket.SCORE_BUCKET_MEDIUM]: 'MEDIUM',
  [ScoreBucket.SCORE_BUCKET_HIGH]: 'HIGH',
};
const METHODS: Record<number, string> = { [PunchMethod.PUNCH_METHOD_FACE]: 'FACE', [PunchMethod.PUNCH_METHOD_CARD]: 'CARD' };

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
      ...(opts.json ? {} : { logger: createLogger({ level: 'error', base: { deviceId: 'demo-m2-0001' } }) }),
      // Human mode shows the repeat window (1 s, so the demo stays short); --json produces every punch asked for.
      role: { repeatWindowSec: opts.json ? 0 : 1 },
      onPunch: (p, { duplicate }) => {
        if (duplicate) return;
        if (opts.json) {
          out(
            JSON.stringify({
              eventId: p.eventId,
              orgId: p.orgId,
              deviceId: p.deviceId,
              subjectId: p.subjectId,
              method: METHODS[p.method] ?? String(p.method),
              matchScore: BUCKETS[p.matchScore] ?? 'UNSPECIFIED',
              liveness: BUCKETS[p.liveness] ?? 'UNSPECIFIED',
              seq: p.seq,
              bdSeq: p.bdSeq,
              historical: p.historical,
              occurredAtMs: p.occurredAtMs,
            }),
          );
        } else {
          const at = new Date(p.occurredAtMs).toISOString().slice(11, 23);
          const m = METHODS[p.method] ?? '?';
          say(`  cloud ← punch #${p.seq}  ${p.subjectId}  ${m.padEnd(4)}${p.method === PunchMethod.PUNCH_METHOD_FACE ? `  score ${BUCKETS[p.matchScore] ?? '?'}, liveness ${BUCKETS[p.liveness] ?? '?'}` : ''}  at ${at}`);
        }
      },
    });
    const s = stack;
    const { role, vault, orgId, agent } = s;
    role.on('punch', (e) => {
      if (e.eventId) accepted.add(e.eventId);
    });
    for (let waited = 0; !agent.session && waited < 10_000; waited += 20) await sleep(20);

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
        const wait = at + role.repeatWindowSec * 1000 - Date.now();
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
        punchedAt.set(p.subjectId, Date.now());
        last = step.p;
      } else say(`  ${step.kind === 'card' ? 'card reader' : 'camera'}: ${p.subjectId} → ${v}`);
    }
    // Wait for the cloud to see every punch the agent accepted.
    const deadline = Date.now() + 30_000 + accepted.size * 2;
    while (Date.now() < deadline && [...accepted].some((id) => !s.sink.has(id))) await sleep(50);
    const stats = s.sink.stats();
    const lost = [...accepted].filter((id) => !s.sink.has(id)).length + Math.max(0, punches - accepted.size);
    if (opts.json) out(JSON.stringify({ received: stats.received, duplicates: stats.duplicates, lost }));
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
