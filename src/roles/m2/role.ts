/**
 * The M2 role: a face module (or bridge MCU) on a UART speaking the bridge
 * protocol, and optionally a keyboard-wedge USB card reader.
 *
 *   start()    load every org's face templates from the vault, batch by batch
 *              (Vault.forEachTemplate: never all plaintexts at once), into one
 *              FaceMatcher per org behind that org's CancelableTransform (its
 *              key: Vault.faceTransformKey, HKDF of the org's data key); then
 *              bring the module up (hello, feature-dim check) and keep it up.
 *   face       liveness → exact 1:N search in every org's index → punch FACE
 *              (score and liveness buckets; repeat window) → feedback on the
 *              module's display/LED.
 *   card       HID reader → Vault.identifyCredential('card') (keyed HMAC per
 *              org) → punch CARD. The number is never logged or stored.
 *   enrol()    consent check → the module's enrolment captures → averaged and
 *              duplicate-checked by the org's matcher → sealed in the vault →
 *              into the index.
 *   erasure    an ErasureParticipant: an erased subject/org leaves the
 *              in-memory index (an org's matcher is zeroed and its transform dropped).
 *   tamper     'alarm': the 'tamper' peripheral goes offline in the device
 *              state; 'zeroise': also every in-memory template and transform is
 *              wiped and the role is LOCKED: every punch is refused until the
 *              process restarts (a restart reloads from the vault; a device
 *              whose case was opened is expected to be inspected first).
 *
 * Why one matcher per org: each org's templates live in that org's own secret
 * rotated space (unlinkability), so a probe must be rotated per org before it
 * can be compared; a shared index would need a shared transform. Per-org
 * matchers also make org withdrawal one clear() that zeroes the matrix.
 * A probe is searched in every org's index; a person enrolled in two orgs on
 * one shared terminal punches for both (as a card held in two orgs does).
 *
 * Logs carry org ids, counts and codes: never subject ids, names, card
 * numbers, vectors or scores tied to a person.
 */
import { EventEmitter } from 'node:events';
import type { BridgeDriver, FaceCapture, ModuleInfo } from '../../../firmware-bridge/bridge/driver.js';
import { BridgeLedColour } from '../../../firmware-bridge/bridge/driver.js';
import { HidCardReader } from '../../../firmware-bridge/hid/reader.js';
import type { HidReportTransport } from '../../../firmware-bridge/hid/transport.js';
import { CancelableTransform } from '../../identify/face/transform.js';
import { FaceMatcher, DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_LIVENESS_THRESHOLD, DEFAULT_THRESHOLD } from '../../identify/face/matcher.js';
import { PunchMethod, ScoreBucket } from '../../proto/index.js';
import type { ErasureParticipant, ErasureReport } from '../../privacy/types.js';
import { TallyboxError, isTallyboxError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/log.js';
import { assertBiometricConsent } from '../../vault/consent.js';
import type { Vault } from '../../vault/vault.js';

/** What the role needs from the agent (Agent satisfies it). */
export interface M2PunchSink {
  /** Resolves once the punch is durably queued. */
  punch(input: { orgId: string; subjectId: string; method: PunchMethod; matchScore?: ScoreBucket; liveness?: ScoreBucket }): Promise<{ eventId: string } | void>;
  setPeripheral(name: string, online: boolean, detail?: string): void;
}

/** What the role needs from the vault (Vault satisfies it). */
export type M2Vault = Pick<Vault, 'orgs' | 'faceTransformKey' | 'forEachTemplate' | 'enrolTemplate' | 'listTemplates' | 'touchSubject' | 'getSubject' | 'identifyCredential'>;

export type TamperResponse = 'alarm' | 'zeroise';

export interface M2FaceOptions {
  /** Feature dimension (default 512); the module's hello must agree. */
  dim?: number;
  threshold?: number;
  livenessThreshold?: number;
  duplicateThreshold?: number;
  /** Captures per enrolment (default 3). */
  enrolCaptures?: number;
  /** Time for all captures of an enrolment (default 20 s). */
  enrolTimeoutMs?: number;
  /** Cosine → bucket (default medium 0.5, high 0.65). */
  scoreBuckets?: { medium: number; high: number };
  /** Liveness → bucket (default medium 0.75, high 0.9). */
  livenessBuckets?: { medium: number; high: number };
}

export interface M2RoleOptions {
  agent: M2PunchSink;
  vault: M2Vault;
  /** One driver for the life of the process (reconnected after a link loss). */
  driver: BridgeDriver;
  /** The card reader's report transport (NodeHidTransport, or SimHidTransport in tests); none: no card reader. */
  cardTransport?: HidReportTransport;
  cardReader?: { reportId?: 'auto' | 'none' | number; interKeyTimeoutMs?: number };
  face?: M2FaceOptions;
  display?: { showFirstName?: boolean; feedbackMs?: number };
  /** Same person again (face or card) within this window is one punch (default 60; 0: off); a function is read each time. */
  repeatWindowSec?: number | (() => number);
  tamperResponse?: TamperResponse;
  logger?: Logger;
  /** Templates per vault batch at load (default 256). */
  loadBatchSize?: number;
  /** Reconnect backoff for the module (default 250 ms doubling to 30 s). */
  backoff?: { minMs: number; maxMs: number };
  /** Captures waiting to be matched beyond this are dropped (default 8). */
  maxQueuedCaptures?: number;
  /** ms clock for the repeat window (default Date.now). */
  clock?: () => number;
}

/** Explicit role states. 'locked': zeroised after a tamper, punches refused until restart. */
export type M2Status = 'stopped' | 'starting' | 'ready' | 'offline' | 'locked';

export const M2_TRANSITIONS: Readonly<Record<M2Status, readonly M2Status[]>> = {
  stopped: ['starting'],
  starting: ['ready', 'offline', 'locked', 'stopped'],
  ready: ['offline', 'locked', 'stopped'],
  offline: ['ready', 'locked', 'stopped'],
  locked: ['stopped'],
};

export interface M2Stats {
  facePunches: number;
  cardPunches: number;
  repeats: number;
  noMatch: number;
  spoofs: number;
  cardUnknown: number;
  cardInvalid: number;
  droppedCaptures: number;
  refusedLocked: number;
  punchRefused: number;
  enrolments: number;
  enrolFailures: number;
  tamperEvents: number;
  linkErrors: number;
}

export interface LoadReport {
  orgs: number;
  templates: number;
  quarantined: number;
  /** Stored templates of the wrong size (another model's): skipped. */
  skipped: number;
  ms: number;
}

export interface M2PunchEvent {
  orgId: string;
  subjectId: string;
  method: PunchMethod;
  matchScore: ScoreBucket;
  liveness: ScoreBucket;
  /** Cosine score (face only). */
  score?: number;
  eventId?: string;
}

/** How a face or card was handled ('punch': at least one punch accepted). */
export type M2Outcome = 'punch' | 'repeat' | 'no-match' | 'spoof' | 'unknown-card' | 'refused' | 'locked' | 'ignored';

export interface M2EnrolResult {
  orgId: string;
  subjectId: string;
  recordId: string;
  consistency: number;
}

export interface M2RoleEvents {
  status: [status: M2Status, detail: string];
  loaded: [report: LoadReport];
  punch: [event: M2PunchEvent];
  repeat: [event: { orgId: string; subjectId: string; method: PunchMethod }];
  'no-match': [event: { score: number }];
  spoof: [event: { liveness: number }];
  'card-unknown': [];
  'punch-refused': [code: string];
  /** A face or card was refused because the role is locked. */
  refused: [reason: 'locked'];
  enrolled: [result: M2EnrolResult];
  'enrol-started': [event: { orgId: string; captures: number }];
  /** One per face capture or card read handled, after its punches (if any) are accepted. */
  outcome: [event: { source: 'face' | 'card'; outcome: M2Outcome }];
  tamper: [event: { open: boolean; response: TamperResponse }];
  zeroised: [event: { templates: number; orgs: number }];
}

export class M2Error extends TallyboxError {}

const SCORE_LABEL: Record<number, string> = { 1: 'LOW', 2: 'MEDIUM', 3: 'HIGH' };
export { SCORE_LABEL };

interface OrgIndex {
  matcher: FaceMatcher;
}

/** An index being loaded: erasures that land between two vault batches are recorded and applied at the end. */
interface Loading {
  orgId: string;
  matcher: FaceMatcher;
  erased: Set<string>;
  orgErased: boolean;
}

function errCode(err: unknown): string {
  if (isTallyboxError(err)) return err.code;
  return (err as { code?: string })?.code ?? 'ERROR';
}

export class M2Role extends EventEmitter<M2RoleEvents> implements ErasureParticipant {
  readonly name = 'm2-face-index';
  readonly #agent: M2PunchSink;
  readonly #vault: M2Vault;
  readonly #driver: BridgeDriver;
  readonly #log: Logger;
  readonly #dim: number;
  readonly #threshold: number;
  readonly #livenessThreshold: number;
  readonly #duplicateThreshold: number;
  readonly #enrolCaptures: number;
  readonly #enrolTimeoutMs: number;
  readonly #scoreBuckets: { medium: number; high: number };
  readonly #livenessBuckets: { medium: number; high: number };
  readonly #showFirstName: boolean;
  readonly #feedbackMs: number;
  readonly #tamperResponse: TamperResponse;
  readonly #batchSize: number;
  readonly #backoff: { minMs: number; maxMs: number };
  readonly #maxQueued: number;
  readonly #clock: () => number;
  readonly #card: HidCardReader | null;
  #repeatWindow: number | (() => number);

  #status: M2Status = 'stopped';
  #indexes = new Map<string, OrgIndex>();
  /** Orgs whose index is being built (lazily, e.g. first enrolment of a new org): one build per org. */
  #building = new Map<string, Promise<OrgIndex>>();
  #loading = new Set<Loading>();
  #lastPunch = new Map<string, number>();
  #queue: Promise<unknown> = Promise.resolve();
  #queued = 0;
  #enrolLock: Promise<unknown> = Promise.resolve();
  #stopping = false;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #delay: number;
  #lastLoad: LoadReport | null = null;
  #moduleInfo: ModuleInfo | null = null;
  readonly #stats: M2Stats = {
    facePunches: 0,
    cardPunches: 0,
    repeats: 0,
    noMatch: 0,
    spoofs: 0,
    cardUnknown: 0,
    cardInvalid: 0,
    droppedCaptures: 0,
    refusedLocked: 0,
    punchRefused: 0,
    enrolments: 0,
    enrolFailures: 0,
    tamperEvents: 0,
    linkErrors: 0,
  };

  readonly #onFace = (c: FaceCapture) => this.#enqueue(() => this.#handled('face', () => this.#handleFace(c)), true);
  readonly #onTamper = (e: { open: boolean }) => this.#handleTamper(e.open);
  readonly #onLink = (s: string, reason?: Error) => {
    if (s !== 'closed' || this.#stopping || this.#status === 'stopped') return;
    this.#stats.linkErrors++;
    const code = reason ? errCode(reason) : 'BRIDGE_CLOSED';
    this.#log.warn({ event: 'm2_link_lost', code }, `face module link lost: ${code}`);
    if (this.#status !== 'locked') this.#setStatus('offline', `link lost: ${code}`);
    this.#agent.setPeripheral('face', false, `link lost: ${code}`);
    this.#scheduleReconnect();
  };

  constructor(opts: M2RoleOptions) {
    super();
    this.#agent = opts.agent;
    this.#vault = opts.vault;
    this.#driver = opts.driver;
    this.#log = (opts.logger ?? silentLogger()).child({ component: 'm2' });
    const f = opts.face ?? {};
    this.#dim = f.dim ?? 512;
    this.#threshold = f.threshold ?? DEFAULT_THRESHOLD;
    this.#livenessThreshold = f.livenessThreshold ?? DEFAULT_LIVENESS_THRESHOLD;
    this.#duplicateThreshold = f.duplicateThreshold ?? DEFAULT_DUPLICATE_THRESHOLD;
    this.#enrolCaptures = f.enrolCaptures ?? 3;
    this.#enrolTimeoutMs = f.enrolTimeoutMs ?? 20_000;
    this.#scoreBuckets = f.scoreBuckets ?? { medium: 0.5, high: 0.65 };
    this.#livenessBuckets = f.livenessBuckets ?? { medium: 0.75, high: 0.9 };
    this.#showFirstName = opts.display?.showFirstName ?? false;
    this.#feedbackMs = opts.display?.feedbackMs ?? 3000;
    this.#tamperResponse = opts.tamperResponse ?? 'alarm';
    this.#repeatWindow = opts.repeatWindowSec ?? 60;
    this.#batchSize = opts.loadBatchSize ?? 256;
    this.#backoff = opts.backoff ?? { minMs: 250, maxMs: 30_000 };
    this.#delay = this.#backoff.minMs;
    this.#maxQueued = opts.maxQueuedCaptures ?? 8;
    this.#clock = opts.clock ?? Date.now;
    this.#card = opts.cardTransport
      ? new HidCardReader({
          transport: opts.cardTransport,
          onCard: (card) => this.#enqueue(() => this.#handled('card', () => this.#handleCard(card)), false),
          ...(opts.cardReader?.reportId !== undefined ? { reportId: opts.cardReader.reportId } : {}),
          ...(opts.cardReader?.interKeyTimeoutMs !== undefined ? { interKeyTimeoutMs: opts.cardReader.interKeyTimeoutMs } : {}),
          logger: this.#log,
        })
      : null;
  }

  // ------------------------------------------------------------------ accessors

  get status(): M2Status {
    return this.#status;
  }
  get locked(): boolean {
    return this.#isLocked();
  }
  #isLocked(): boolean {
    return this.#status === 'locked';
  }
  /** The repeat window now in force, in seconds. */
  get repeatWindowSec(): number {
    const w = typeof this.#repeatWindow === 'function' ? this.#repeatWindow() : this.#repeatWindow;
    return Number.isFinite(w) && w > 0 ? w : 0;
  }
  set repeatWindowSec(sec: number | (() => number)) {
    this.#repeatWindow = sec;
  }
  get stats(): M2Stats {
    return { ...this.#stats };
  }
  get lastLoad(): LoadReport | null {
    return this.#lastLoad;
  }
  get moduleInfo(): ModuleInfo | null {
    return this.#moduleInfo;
  }
  get cardReader(): HidCardReader | null {
    return this.#card;
  }
  /** Templates in memory per org (counts only). */
  indexSizes(): Map<string, number> {
    return new Map([...this.#indexes].map(([o, i]) => [o, i.matcher.size]));
  }
  /** Is the subject in the org's in-memory index? (tests, diagnostics) */
  inIndex(orgId: string, subjectId: string): boolean {
    return this.#indexes.get(orgId)?.matcher.has(subjectId) ?? false;
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Load the templates (ready to match when this resolves, whatever the
   * module's state), then bring the module up; resolves after the first
   * attempt. A module that does not answer is retried with backoff.
   */
  async start(): Promise<LoadReport> {
    if (this.#status !== 'stopped') throw new M2Error('ROLE_STARTED', `the M2 role is already ${this.#status}`);
    this.#stopping = false;
    this.#setStatus('starting', 'loading templates');
    const report = await this.reload();
    this.#driver.on('face', this.#onFace);
    this.#driver.on('tamper', this.#onTamper);
    this.#driver.on('status', this.#onLink);
    if (this.#card) {
      try {
        await this.#card.start();
        this.#agent.setPeripheral('card-reader', true, this.#card.transport.description);
      } catch (err) {
        const code = errCode(err);
        this.#log.error({ event: 'm2_card_reader_failed', code }, `card reader not available: ${code}`);
        this.#agent.setPeripheral('card-reader', false, code);
      }
    }
    await this.#connect();
    return report;
  }

  /** Stop listening; the driver (and its transport) stay the caller's to close. */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#driver.off('face', this.#onFace);
    this.#driver.off('tamper', this.#onTamper);
    this.#driver.off('status', this.#onLink);
    await this.#card?.stop().catch(() => undefined);
    await this.#queue.catch(() => undefined);
    for (const i of this.#indexes.values()) i.matcher.clear();
    this.#indexes.clear();
    if (this.#status !== 'stopped') this.#setStatus('stopped', 'stopped');
  }

  /**
   * (Re)build every org's index from the vault, batch by batch. Orgs without
   * face templates still get an (empty) index. Replaces the current indexes.
   */
  async reload(): Promise<LoadReport> {
    if (this.#status === 'locked') throw new M2Error('ROLE_LOCKED', 'the M2 role is locked after a tamper event; restart the agent');
    const t0 = performance.now();
    const report: LoadReport = { orgs: 0, templates: 0, quarantined: 0, skipped: 0, ms: 0 };
    const fresh = new Map<string, OrgIndex>();
    for (const orgId of await this.#vault.orgs()) {
      try {
        const idx = await this.#buildIndex(orgId, report);
        fresh.set(orgId, idx);
        report.orgs++;
      } catch (err) {
        // An org being withdrawn right now, or whose key does not unwrap: it has no index.
        const code = errCode(err);
        this.#log.warn({ event: 'm2_org_not_loaded', orgId, code }, `face templates of organisation ${orgId} not loaded: ${code}`);
      }
    }
    for (const [orgId, old] of this.#indexes) if (fresh.get(orgId) !== old) old.matcher.clear();
    this.#indexes = fresh;
    report.ms = performance.now() - t0;
    this.#lastLoad = report;
    this.#log.info({ event: 'm2_loaded', orgs: report.orgs, templates: report.templates, quarantined: report.quarantined, skipped: report.skipped, ms: Math.round(report.ms) }, `face index loaded: ${report.templates} templates of ${report.orgs} organisations`);
    this.emit('loaded', report);
    return report;
  }

  async #buildIndex(orgId: string, report: LoadReport): Promise<OrgIndex> {
    const key = await this.#vault.faceTransformKey(orgId);
    let transform: CancelableTransform;
    try {
      transform = new CancelableTransform({ orgKey: key, dim: this.#dim });
    } finally {
      key.fill(0);
    }
    const matcher = new FaceMatcher({
      dim: this.#dim,
      transform,
      threshold: this.#threshold,
      livenessThreshold: this.#livenessThreshold,
      duplicateThreshold: this.#duplicateThreshold,
      minCaptures: this.#enrolCaptures,
      initialCapacity: 256,
    });
    const loading: Loading = { orgId, matcher, erased: new Set(), orgErased: false };
    this.#loading.add(loading);
    const row = new Float32Array(this.#dim);
    const rowBytes = new Uint8Array(row.buffer);
    try {
      const r = await this.#vault.forEachTemplate(orgId, 'face', this.#batchSize, (batch) => {
        for (const t of batch) {
          if (t.bytes.length !== this.#dim * 4) {
            report.skipped++;
            continue;
          }
          rowBytes.set(t.bytes);
          try {
            matcher.add(t.subjectId, row);
            report.templates++;
          } catch {
            report.skipped++;
          }
        }
      });
      report.quarantined += r.quarantined.length;
      if (r.quarantined.length > 0) this.#log.warn({ event: 'm2_quarantined_templates', orgId, count: r.quarantined.length }, 'some face templates do not decrypt; they are not matched');
      if (loading.orgErased) throw new M2Error('ORG_ERASED', `organisation ${orgId} was erased while its face templates were loading`, { orgId });
      for (const s of loading.erased) matcher.remove(s);
    } catch (err) {
      matcher.clear();
      throw err;
    } finally {
      row.fill(0);
      this.#loading.delete(loading);
    }
    return { matcher };
  }

  /** The org's index; built on first use (an org created after start). */
  async #indexFor(orgId: string): Promise<OrgIndex> {
    const have = this.#indexes.get(orgId);
    if (have) return have;
    let p = this.#building.get(orgId);
    if (!p) {
      p = this.#buildIndex(orgId, { orgs: 0, templates: 0, quarantined: 0, skipped: 0, ms: 0 }).then(
        (idx) => {
          this.#building.delete(orgId);
          if (this.#isLocked()) {
            idx.matcher.clear();
            throw new M2Error('ROLE_LOCKED', 'the M2 role is locked after a tamper event');
          }
          this.#indexes.set(orgId, idx);
          return idx;
        },
        (err: unknown) => {
          this.#building.delete(orgId);
          throw err;
        },
      );
      this.#building.set(orgId, p);
    }
    return p;
  }

  async #connect(): Promise<void> {
    if (this.#stopping || this.#status === 'locked') return;
    try {
      const info = await this.#driver.start();
      if (info.featureDim && info.featureDim !== this.#dim) {
        await this.#driver.close().catch(() => undefined);
        throw new M2Error('FACE_DIM_MISMATCH', `face module sends ${info.featureDim}-dimensional features (${info.featureModel || 'unknown model'}); the M2 role is configured for ${this.#dim}`, { got: info.featureDim, want: this.#dim });
      }
      this.#moduleInfo = info;
      this.#delay = this.#backoff.minMs;
      const detail = `${info.model || 'face module'} ${info.firmwareVersion}`.trim();
      if (!this.#isLocked()) this.#setStatus('ready', detail);
      this.#agent.setPeripheral('face', true, detail);
      this.#log.info({ event: 'm2_module_ready', model: info.model, firmware: info.firmwareVersion, featureDim: info.featureDim }, `face module ready: ${detail}`);
    } catch (err) {
      if (this.#stopping) return;
      this.#stats.linkErrors++;
      const code = errCode(err);
      const detail = `offline: ${code}; retry in ${this.#delay} ms`;
      if (this.#status !== 'offline') this.#log.warn({ event: 'm2_module_offline', code, retryMs: this.#delay }, `face module ${detail}`);
      if (!this.#isLocked()) this.#setStatus('offline', detail);
      this.#agent.setPeripheral('face', false, detail);
      this.#scheduleReconnect();
    }
  }

  #scheduleReconnect(): void {
    if (this.#stopping || this.#reconnectTimer) return;
    const wait = this.#delay;
    this.#delay = Math.min(this.#backoff.maxMs, this.#delay * 2);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      void this.#connect();
    }, wait);
    this.#reconnectTimer.unref?.();
  }

  #setStatus(next: M2Status, detail: string): void {
    const prev = this.#status;
    if (prev === next) return;
    if (!M2_TRANSITIONS[prev].includes(next)) {
      this.#log.error({ event: 'm2_bad_transition', from: prev, to: next }, `M2 role: unexpected transition ${prev} → ${next}`);
      if (prev === 'locked') return; // locked is left only by stop()
    }
    this.#status = next;
    this.emit('status', next, detail);
  }

  // ------------------------------------------------------------------ identification

  /** Faces and cards are handled one at a time, in arrival order. */
  #enqueue(fn: () => Promise<void>, droppable: boolean): void {
    if (droppable && this.#queued >= this.#maxQueued) {
      this.#stats.droppedCaptures++;
      return;
    }
    this.#queued++;
    const run = async () => {
      try {
        await fn();
      } catch (err) {
        const code = errCode(err);
        this.#log.error({ event: 'm2_handler_failed', code }, `M2 role: ${code}`);
      } finally {
        this.#queued--;
      }
    };
    this.#queue = this.#queue.then(run, run);
  }

  /** Present a card number as if read by the reader (tests, keypad fallbacks). Not logged. */
  presentCard(card: string): Promise<void> {
    return new Promise((resolve) => this.#enqueue(() => this.#handled('card', () => this.#handleCard(card)).finally(resolve), false));
  }

  /** Run one handler; its outcome is emitted even when it fails ('refused'). */
  async #handled(source: 'face' | 'card', fn: () => Promise<M2Outcome>): Promise<void> {
    let outcome: M2Outcome = 'refused';
    try {
      outcome = await fn();
    } finally {
      this.emit('outcome', { source, outcome });
    }
  }

  async #handleFace(c: FaceCapture): Promise<M2Outcome> {
    if (this.#status === 'locked') return this.#refuseLocked();
    if (c.purpose === 2 /* ENROL: belongs to an enrolment in progress */) return 'ignored';
    if (!(c.liveness >= this.#livenessThreshold)) {
      this.#stats.spoofs++;
      this.#log.info({ event: 'm2_spoof' }, 'face presentation failed the liveness check; no punch');
      this.emit('spoof', { liveness: c.liveness });
      this.#feedback(false, 'Not accepted', 'Please try again');
      return 'spoof';
    }
    const matches: Array<{ orgId: string; subjectId: string; score: number }> = [];
    let best = -1;
    for (const [orgId, idx] of this.#indexes) {
      if (idx.matcher.size === 0) continue;
      const r = idx.matcher.identify({ vector: c.vector, liveness: c.liveness });
      if (r.decision === 'match') matches.push({ orgId, subjectId: r.subjectId, score: r.score });
      else if (r.decision === 'no-match') best = Math.max(best, r.score);
    }
    c.vector.fill(0);
    if (matches.length === 0) {
      this.#stats.noMatch++;
      this.emit('no-match', { score: best });
      this.#feedback(false, 'Not recognised', 'Please try again');
      return 'no-match';
    }
    const liveness = this.#bucket(c.liveness, this.#livenessBuckets);
    const results: Array<{ orgId: string; subjectId: string; r: 'punch' | 'repeat' | 'refused' }> = [];
    for (const m of matches) results.push({ ...m, r: await this.#punch(m.orgId, m.subjectId, PunchMethod.PUNCH_METHOD_FACE, this.#bucket(m.score, this.#scoreBuckets), liveness, m.score) });
    return this.#conclude(results);
  }

  /** Feedback for the punches of one face/card; the outcome is the best of them. */
  async #conclude(results: Array<{ orgId: string; subjectId: string; r: 'punch' | 'repeat' | 'refused' }>): Promise<M2Outcome> {
    const ok = results.find((x) => x.r === 'punch') ?? results.find((x) => x.r === 'repeat');
    if (!ok) {
      this.#feedback(false, 'Not recorded', 'Please try again');
      return 'refused';
    }
    await this.#welcome(ok.orgId, ok.subjectId);
    return ok.r;
  }

  async #handleCard(card: string): Promise<M2Outcome> {
    if (this.#status === 'locked') return this.#refuseLocked();
    let holders: Array<{ orgId: string; subjectId: string }>;
    try {
      holders = await this.#vault.identifyCredential('card', card);
    } catch (err) {
      if (!isTallyboxError(err, 'INVALID_CREDENTIAL')) throw err;
      this.#stats.cardInvalid++;
      this.#log.info({ event: 'm2_card_invalid', length: card.length }, 'card read is not a card number');
      this.emit('card-unknown');
      this.#feedback(false, 'Unknown card');
      return 'unknown-card';
    }
    if (holders.length === 0) {
      this.#stats.cardUnknown++;
      this.#log.info({ event: 'm2_card_unknown' }, 'card not enrolled in any organisation on this device');
      this.emit('card-unknown');
      this.#feedback(false, 'Unknown card');
      return 'unknown-card';
    }
    const results: Array<{ orgId: string; subjectId: string; r: 'punch' | 'repeat' | 'refused' }> = [];
    for (const h of holders) results.push({ ...h, r: await this.#punch(h.orgId, h.subjectId, PunchMethod.PUNCH_METHOD_CARD, ScoreBucket.SCORE_BUCKET_UNSPECIFIED, ScoreBucket.SCORE_BUCKET_UNSPECIFIED) });
    return this.#conclude(results);
  }

  #refuseLocked(): M2Outcome {
    this.#stats.refusedLocked++;
    this.emit('refused', 'locked');
    this.#feedback(false, 'Out of service');
    return 'locked';
  }

  async #punch(orgId: string, subjectId: string, method: PunchMethod, matchScore: ScoreBucket, liveness: ScoreBucket, score?: number): Promise<'punch' | 'repeat' | 'refused'> {
    const key = `${orgId}\u0000${subjectId}`;
    const now = this.#clock();
    const last = this.#lastPunch.get(key);
    const windowSec = this.repeatWindowSec;
    if (last !== undefined && windowSec > 0 && now - last < windowSec * 1000) {
      this.#stats.repeats++;
      this.emit('repeat', { orgId, subjectId, method });
      return 'repeat';
    }
    this.#lastPunch.set(key, now);
    if (this.#lastPunch.size > 4096) for (const [k, at] of this.#lastPunch) if (now - at >= windowSec * 1000) this.#lastPunch.delete(k);
    let eventId: string | undefined;
    try {
      eventId = (
        await this.#agent.punch({
          orgId,
          subjectId,
          method,
          ...(matchScore !== ScoreBucket.SCORE_BUCKET_UNSPECIFIED ? { matchScore } : {}),
          ...(liveness !== ScoreBucket.SCORE_BUCKET_UNSPECIFIED ? { liveness } : {}),
        })
      )?.eventId;
    } catch (err) {
      this.#lastPunch.delete(key);
      const code = errCode(err);
      this.#stats.punchRefused++;
      this.#log.error({ event: 'm2_punch_refused', orgId, code }, `punch not accepted: ${code}`);
      this.emit('punch-refused', code);
      return 'refused';
    }
    if (method === PunchMethod.PUNCH_METHOD_FACE) this.#stats.facePunches++;
    else this.#stats.cardPunches++;
    this.#vault.touchSubject(orgId, subjectId, now).catch((err: unknown) => this.#log.warn({ event: 'm2_touch_failed', code: errCode(err) }, 'could not update last-seen'));
    this.emit('punch', { orgId, subjectId, method, matchScore, liveness, ...(score !== undefined ? { score } : {}), ...(eventId ? { eventId } : {}) });
    return 'punch';
  }

  #bucket(score: number, b: { medium: number; high: number }): ScoreBucket {
    if (score >= b.high) return ScoreBucket.SCORE_BUCKET_HIGH;
    if (score >= b.medium) return ScoreBucket.SCORE_BUCKET_MEDIUM;
    return ScoreBucket.SCORE_BUCKET_LOW;
  }

  // ------------------------------------------------------------------ feedback

  async #welcome(orgId: string, subjectId: string): Promise<void> {
    let line1 = 'Welcome';
    if (this.#showFirstName) {
      try {
        const first = (await this.#vault.getSubject(orgId, subjectId)).displayName.trim().split(/\s+/)[0];
        if (first) line1 = `Welcome ${first}`.slice(0, 32);
      } catch {
        // A quarantined name: the generic greeting.
      }
    }
    const d = new Date(this.#clock());
    const hhmm = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
    this.#feedback(true, line1, `Recorded ${hhmm}`);
  }

  /**
   * Display and LED/buzzer on the module; best effort, off the punch's path
   * (a display that does not answer never costs a punch). Names shown here
   * stay on the local UART and are never logged.
   */
  #feedback(ok: boolean, line1: string, line2 = ''): void {
    if (this.#driver.status !== 'ready') return;
    const d = this.#driver;
    const send = async () => {
      await d.displayText({ line1, line2, durationMs: this.#feedbackMs });
      await d.indicator({ led: ok ? BridgeLedColour.BRIDGE_LED_COLOUR_GREEN : BridgeLedColour.BRIDGE_LED_COLOUR_RED, ledMs: Math.min(this.#feedbackMs, 1000), beeps: ok ? 1 : 2, beepMs: ok ? 80 : 150 });
    };
    send().catch((err: unknown) => this.#log.debug({ event: 'm2_feedback_failed', code: errCode(err) }, 'display/indicator not updated'));
  }

  // ------------------------------------------------------------------ enrolment

  /**
   * Enrol a subject's face (after a SubjectUpsert with consent): the module
   * takes `captures` captures, the org's matcher averages them, checks
   * liveness and consistency and refuses a face already enrolled for another
   * subject (FACE_DUPLICATE); the template (in the org's rotated space) is
   * sealed in the vault, then joins the index. Re-enrolling replaces slot 0.
   */
  enrol(orgId: string, subjectId: string, opts: { captures?: number; timeoutMs?: number } = {}): Promise<M2EnrolResult> {
    const run = () => this.#enrolNow(orgId, subjectId, opts);
    const p = this.#enrolLock.then(run, run);
    this.#enrolLock = p.catch(() => undefined);
    return p;
  }

  async #enrolNow(orgId: string, subjectId: string, opts: { captures?: number; timeoutMs?: number }): Promise<M2EnrolResult> {
    if (this.#status === 'locked') throw new M2Error('ROLE_LOCKED', 'the M2 role is locked after a tamper event; restart the agent');
    const subject = await this.#vault.getSubject(orgId, subjectId);
    assertBiometricConsent({
      minor: subject.minor,
      biometricAtMs: subject.consents.biometric?.grantedAtMs ?? null,
      guardianAtMs: subject.consents.guardian?.grantedAtMs ?? null,
    });
    if (this.#driver.status !== 'ready') throw new M2Error('MODULE_OFFLINE', `face module is ${this.#status}`, { status: this.#status });
    const idx = await this.#indexFor(orgId);
    const captures = opts.captures ?? this.#enrolCaptures;
    this.#feedback(true, 'Enrolment', 'Look at the camera');
    this.emit('enrol-started', { orgId, captures });
    let shots: FaceCapture[] = [];
    try {
      shots = await this.#driver.enrol({ captures, timeoutMs: opts.timeoutMs ?? this.#enrolTimeoutMs });
      const { template, consistency } = idx.matcher.prepareEnrolment(subjectId, shots);
      const bytes = new Uint8Array(template.buffer, template.byteOffset, template.byteLength);
      let recordId: string;
      try {
        ({ recordId } = await this.#vault.enrolTemplate(orgId, subjectId, 'face', 0, bytes));
        if (this.#isLocked() || this.#indexes.get(orgId) !== idx) throw new M2Error('ROLE_LOCKED', 'the face index was zeroised or erased during the enrolment');
        idx.matcher.remove(subjectId);
        idx.matcher.add(subjectId, template);
      } finally {
        template.fill(0);
      }
      this.#stats.enrolments++;
      this.#log.info({ event: 'm2_enrolled', orgId, consistency: Math.round(consistency * 1000) / 1000 }, 'face enrolled; template sealed in the vault');
      this.#feedback(true, 'Enrolled', 'Thank you');
      const result = { orgId, subjectId, recordId, consistency };
      this.emit('enrolled', result);
      return result;
    } catch (err) {
      this.#stats.enrolFailures++;
      const code = errCode(err);
      this.#log.info({ event: 'm2_enrol_failed', orgId, code }, `face enrolment not done: ${code}`);
      this.#feedback(false, 'Enrolment failed', code === 'FACE_DUPLICATE' ? 'Already enrolled' : 'Please try again');
      throw err;
    } finally {
      for (const s of shots) s.vector.fill(0);
    }
  }

  // ------------------------------------------------------------------ erasure (ErasureParticipant)

  #forget(orgId: string, subjectId?: string): void {
    const prefix = `${orgId}\u0000`;
    for (const k of this.#lastPunch.keys()) if (subjectId === undefined ? k.startsWith(prefix) : k === prefix + subjectId) this.#lastPunch.delete(k);
  }

  /** Drop an erased org's index (its matrix zeroed, its transform dropped). Idempotent. */
  async eraseOrg(orgId: string): Promise<ErasureReport> {
    const idx = this.#indexes.get(orgId);
    const n = idx?.matcher.size ?? 0;
    idx?.matcher.clear();
    this.#indexes.delete(orgId);
    for (const l of this.#loading) if (l.orgId === orgId) l.orgErased = true;
    this.#forget(orgId);
    this.#log.info({ event: 'm2_erased_org', orgId, templates: n }, `face index of organisation ${orgId} dropped`);
    return { ok: true, counts: { faceIndexTemplates: n } };
  }

  /** Take an erased subject out of the org's index. Idempotent. */
  async eraseSubject(orgId: string, subjectId: string): Promise<ErasureReport> {
    const idx = this.#indexes.get(orgId);
    let n = idx?.matcher.remove(subjectId) ?? 0;
    for (const l of this.#loading) {
      if (l.orgId !== orgId) continue;
      l.erased.add(subjectId);
      n += l.matcher.remove(subjectId);
    }
    this.#forget(orgId, subjectId);
    return { ok: true, counts: { faceIndexTemplates: n } };
  }

  /** Retention erases templates: the same, for the in-memory index. */
  eraseSubjectTemplates(orgId: string, subjectId: string): Promise<ErasureReport> {
    return this.eraseSubject(orgId, subjectId);
  }

  /** The agent's onSubjectsErased hook. */
  subjectsErased(orgId: string, subjectIds: readonly string[] | 'all'): void {
    if (subjectIds === 'all') void this.eraseOrg(orgId);
    else for (const s of subjectIds) void this.eraseSubject(orgId, s);
  }

  // ------------------------------------------------------------------ tamper

  #handleTamper(open: boolean): void {
    this.#stats.tamperEvents++;
    this.#log.warn({ event: 'm2_tamper', open, response: this.#tamperResponse }, `tamper switch: case ${open ? 'OPENED' : 'closed'}`);
    this.emit('tamper', { open, response: this.#tamperResponse });
    if (!open) {
      if (this.#status !== 'locked') this.#agent.setPeripheral('tamper', true, 'case closed');
      return;
    }
    if (this.#tamperResponse === 'zeroise') this.zeroise('case opened');
    else this.#agent.setPeripheral('tamper', false, 'ALARM: case opened');
  }

  /**
   * Wipe every template and transform held in memory and lock the role:
   * faces, cards and enrolments are refused until the process restarts.
   * The vault (sealed, keys outside the database) is untouched.
   */
  zeroise(reason: string): void {
    let templates = 0;
    const orgs = this.#indexes.size;
    for (const i of this.#indexes.values()) {
      templates += i.matcher.size;
      i.matcher.clear();
    }
    this.#indexes.clear();
    this.#lastPunch.clear();
    this.#setStatus('locked', `zeroised: ${reason}`);
    this.#agent.setPeripheral('tamper', false, `ALARM: ${reason}; face index zeroised, punches refused until restart`);
    this.#log.error({ event: 'm2_zeroised', orgs, templates }, `M2 role zeroised (${reason}): ${templates} templates wiped from memory; locked until restart`);
    this.#feedback(false, 'Out of service');
    this.emit('zeroised', { templates, orgs });
  }
}
