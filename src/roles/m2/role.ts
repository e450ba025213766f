/**
 * The M2 role: a face module (or bridge MCU) speaking the bridge protocol,
 * and optionally a card reader. This file composes the parts:
 *
 *   face-index.ts     every org's face templates, loaded from the vault, one matcher per org
 *   identify.ts       face / card → who → the punch gate (kit/punch-gate.ts)
 *   enrol.ts          consent → module captures → sealed in the vault → into the index
 *   feedback.ts       the module's display and LED
 *   kit/supervisor.ts one supervisor per peripheral (face module, card reader):
 *                     open, backoff, heartbeat, online/offline in DeviceState
 *
 * and owns what is the role's own: erasure (an ErasureParticipant: an erased
 * subject/org leaves the in-memory index) and tamper ('alarm': the 'tamper'
 * peripheral goes offline; 'zeroise': every in-memory template and transform
 * is wiped and the role is LOCKED until the process restarts).
 *
 * Logs carry org ids, counts and codes: never subject ids, names, card
 * numbers, vectors or scores tied to a person.
 */
import { EventEmitter } from 'node:events';
import type { CardReader, FaceCapture, FaceModule, ModuleInfo } from '../../../firmware-bridge/devices.js';
import { HidCardReader } from '../../../firmware-bridge/hid/reader.js';
import type { HidReportTransport } from '../../../firmware-bridge/hid/transport.js';
import { DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_LIVENESS_THRESHOLD, DEFAULT_THRESHOLD } from '../../identify/face/matcher.js';
import type { ErasureParticipant, ErasureReport } from '../../privacy/types.js';
import { silentLogger, type Logger } from '../../util/log.js';
import { cardReaderPeripheral, faceModulePeripheral } from '../kit/peripherals.js';
import { PunchGate } from '../kit/punch-gate.js';
import { PeripheralSupervisor, type PeripheralStatus } from '../kit/supervisor.js';
import { FaceEnrolment } from './enrol.js';
import { FaceIndex, type LoadReport } from './face-index.js';
import { M2Feedback } from './feedback.js';
import { M2Identification, type IdentifyEvents } from './identify.js';
import { M2Error, type M2EnrolResult, type M2PunchSink, type M2Stats, type M2Vault, type TamperResponse } from './types.js';

export { M2Error, SCORE_LABEL, type M2EnrolResult, type M2Outcome, type M2PunchEvent, type M2PunchSink, type M2Stats, type M2Vault, type TamperResponse } from './types.js';
export type { LoadReport } from './face-index.js';

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
  /** The face module (BridgeDriver, one for the life of the process). */
  driver: FaceModule;
  /** A card reader; or `cardTransport` to wrap one around a HID report transport. None: no card reader. */
  card?: CardReader;
  cardTransport?: HidReportTransport;
  cardReader?: { reportId?: 'auto' | 'none' | number; interKeyTimeoutMs?: number };
  face?: M2FaceOptions;
  display?: { showFirstName?: boolean; feedbackMs?: number };
  /** Same person again (face or card) within this window is one punch (default 60; 0: off); ignored when `gate` is given. */
  repeatWindowSec?: number | (() => number);
  /** The agent's punch gate (start.ts shares one between roles); default: the role's own. */
  gate?: PunchGate;
  tamperResponse?: TamperResponse;
  logger?: Logger;
  /** Templates per vault batch at load (default 256). */
  loadBatchSize?: number;
  /** Reconnect backoff for the peripherals (default 250 ms doubling to 30 s, full jitter). */
  backoff?: { minMs: number; maxMs: number };
  /** Heartbeat: probe a peripheral silent this long (default 5000 ms; 0: off). */
  heartbeatMs?: number;
  /** Captures waiting to be matched beyond this are dropped (default 8). */
  maxQueuedCaptures?: number;
  /** Monotonic ms clock for the repeat window and heartbeats (default performance.now). */
  monotonic?: () => number;
  /** Wall clock for the time shown on the display and last-seen stamps (default Date.now). */
  wallClock?: () => number;
}

/** The role's status: its lifecycle, or (while running) the face module's supervisor status. 'locked': zeroised after a tamper. */
export type M2Status = 'stopped' | 'starting' | 'locked' | Exclude<PeripheralStatus, 'stopped'>;

export interface M2RoleEvents extends IdentifyEvents {
  status: [status: M2Status, detail: string];
  loaded: [report: LoadReport];
  enrolled: [result: M2EnrolResult];
  'enrol-started': [event: { orgId: string; captures: number }];
  tamper: [event: { open: boolean; response: TamperResponse }];
  zeroised: [event: { templates: number; orgs: number }];
}

export class M2Role extends EventEmitter<M2RoleEvents> implements ErasureParticipant {
  readonly name = 'm2-face-index';
  readonly #agent: M2PunchSink;
  readonly #driver: FaceModule;
  readonly #log: Logger;
  readonly #dim: number;
  readonly #tamperResponse: TamperResponse;
  readonly #card: CardReader | null;
  readonly #hidCard: HidCardReader | null;
  readonly #gate: PunchGate;
  readonly #ownGate: boolean;
  readonly #index: FaceIndex;
  readonly #identify: M2Identification;
  readonly #enrolment: FaceEnrolment;
  readonly #feedback: M2Feedback;
  readonly face: PeripheralSupervisor;
  readonly card: PeripheralSupervisor | null;
  #lifecycle: 'stopped' | 'starting' | 'running' = 'stopped';
  #locked = false;
  #lastLoad: LoadReport | null = null;
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

  readonly #onFace = (c: FaceCapture) => {
    this.face.alive();
    this.#identify.face(c);
  };
  readonly #onTamper = (e: { open: boolean }) => this.#handleTamper(e.open);

  constructor(opts: M2RoleOptions) {
    super();
    this.#agent = opts.agent;
    this.#driver = opts.driver;
    this.#log = (opts.logger ?? silentLogger()).child({ component: 'm2' });
    const f = opts.face ?? {};
    this.#dim = f.dim ?? 512;
    this.#tamperResponse = opts.tamperResponse ?? 'alarm';
    const wallClock = opts.wallClock ?? Date.now;
    this.#ownGate = !opts.gate;
    this.#gate = opts.gate ?? new PunchGate({ sink: opts.agent, lastSeen: opts.vault, logger: this.#log, repeatWindowSec: opts.repeatWindowSec ?? 60, wallClock, ...(opts.monotonic ? { monotonic: opts.monotonic } : {}) });
    const livenessThreshold = f.livenessThreshold ?? DEFAULT_LIVENESS_THRESHOLD;
    const enrolCaptures = f.enrolCaptures ?? 3;
    this.#index = new FaceIndex({
      vault: opts.vault,
      log: this.#log,
      dim: this.#dim,
      threshold: f.threshold ?? DEFAULT_THRESHOLD,
      livenessThreshold,
      duplicateThreshold: f.duplicateThreshold ?? DEFAULT_DUPLICATE_THRESHOLD,
      minCaptures: enrolCaptures,
      batchSize: opts.loadBatchSize ?? 256,
    });
    this.#feedback = new M2Feedback({ module: opts.driver, vault: opts.vault, log: this.#log, showFirstName: opts.display?.showFirstName ?? false, feedbackMs: opts.display?.feedbackMs ?? 3000, wallClock });
    this.#identify = new M2Identification({
      index: this.#index,
      vault: opts.vault,
      gate: this.#gate,
      feedback: this.#feedback,
      log: this.#log,
      stats: this.#stats,
      livenessThreshold,
      scoreBuckets: f.scoreBuckets ?? { medium: 0.5, high: 0.65 },
      livenessBuckets: f.livenessBuckets ?? { medium: 0.75, high: 0.9 },
      maxQueued: opts.maxQueuedCaptures ?? 8,
      locked: () => this.#locked,
      emit: (event, ...args) => void (this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args),
    });
    const supervise = { sink: opts.agent, logger: this.#log, backoff: opts.backoff ?? { minMs: 250, maxMs: 30_000 }, heartbeatMs: opts.heartbeatMs ?? 5000, ...(opts.monotonic ? { monotonic: opts.monotonic } : {}) };
    this.face = new PeripheralSupervisor({ ...supervise, peripheral: faceModulePeripheral({ module: opts.driver, check: (info) => this.#checkDim(info) }) });
    this.face.on('status', (s, detail) => {
      if (s === 'offline' || s === 'absent') this.#stats.linkErrors++;
      if (this.#lifecycle === 'running' && !this.#locked) this.emit('status', s === 'opening' ? 'opening' : s, detail);
    });
    this.#hidCard =
      !opts.card && opts.cardTransport
        ? new HidCardReader({
            transport: opts.cardTransport,
            onCard: (card) => {
              this.card?.alive();
              void this.#identify.card(card);
            },
            ...(opts.cardReader?.reportId !== undefined ? { reportId: opts.cardReader.reportId } : {}),
            ...(opts.cardReader?.interKeyTimeoutMs !== undefined ? { interKeyTimeoutMs: opts.cardReader.interKeyTimeoutMs } : {}),
            logger: this.#log,
          })
        : null;
    this.#card = opts.card ?? this.#hidCard;
    this.card = this.#card ? new PeripheralSupervisor({ ...supervise, peripheral: cardReaderPeripheral({ reader: this.#card }) }) : null;
    this.#enrolment = new FaceEnrolment({
      module: opts.driver,
      vault: opts.vault,
      index: this.#index,
      feedback: this.#feedback,
      log: this.#log,
      stats: this.#stats,
      captures: enrolCaptures,
      timeoutMs: f.enrolTimeoutMs ?? 20_000,
      locked: () => this.#locked,
      moduleUsable: () => this.face.usable,
      moduleStatus: () => this.status,
      onStarted: (e) => this.emit('enrol-started', e),
      onEnrolled: (r) => this.emit('enrolled', r),
    });
  }

  // ------------------------------------------------------------------ accessors

  get status(): M2Status {
    if (this.#locked) return 'locked';
    if (this.#lifecycle !== 'running') return this.#lifecycle;
    const s = this.face.status;
    return s === 'stopped' ? 'opening' : s;
  }
  get locked(): boolean {
    return this.#locked;
  }
  get gate(): PunchGate {
    return this.#gate;
  }
  /** The repeat window now in force, in seconds (the gate's). */
  get repeatWindowSec(): number {
    return this.#gate.repeatWindowSec;
  }
  set repeatWindowSec(sec: number | (() => number)) {
    this.#gate.repeatWindowSec = sec;
  }
  get stats(): M2Stats {
    return { ...this.#stats };
  }
  get lastLoad(): LoadReport | null {
    return this.#lastLoad;
  }
  get moduleInfo(): ModuleInfo | null {
    return this.face.usable ? this.#driver.info : null;
  }
  /** The HID card reader built from `cardTransport` (null when none, or when a CardReader was given). */
  get cardReader(): HidCardReader | null {
    return this.#hidCard;
  }
  /** Templates in memory per org (counts only). */
  indexSizes(): Map<string, number> {
    return this.#index.sizes();
  }
  /** Is the subject in the org's in-memory index? (tests, diagnostics) */
  inIndex(orgId: string, subjectId: string): boolean {
    return this.#index.has(orgId, subjectId);
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Load the templates (ready to match when this resolves, whatever the
   * module's state), then start supervising the peripherals; resolves after
   * their first attempt. A peripheral that does not answer is retried.
   */
  async start(): Promise<LoadReport> {
    if (this.#lifecycle !== 'stopped') throw new M2Error('ROLE_STARTED', `the M2 role is already ${this.status}`);
    this.#lifecycle = 'starting';
    this.emit('status', 'starting', 'loading templates');
    const report = await this.reload();
    this.#driver.on('face', this.#onFace);
    this.#driver.on('tamper', this.#onTamper);
    this.#lifecycle = 'running';
    await Promise.all([this.face.start(), this.card?.start()]);
    return report;
  }

  /** Stop listening; the driver (and its transport) stay the caller's to close. */
  async stop(): Promise<void> {
    const was = this.#lifecycle;
    this.#lifecycle = 'stopped';
    this.#driver.off('face', this.#onFace);
    this.#driver.off('tamper', this.#onTamper);
    await this.face.stop();
    await this.card?.stop();
    await this.#card?.stop().catch(() => undefined); // a reader already gone: nothing left to close
    await this.#identify.drained();
    if (this.#ownGate) await this.#gate.stop();
    else await this.#gate.flushLastSeen();
    this.#index.clear();
    if (was !== 'stopped') this.emit('status', 'stopped', 'stopped');
  }

  /** (Re)build every org's index from the vault, batch by batch. */
  async reload(): Promise<LoadReport> {
    if (this.#locked) throw new M2Error('ROLE_LOCKED', 'the M2 role is locked after a tamper event; restart the agent');
    const report = await this.#index.reload();
    this.#lastLoad = report;
    this.#log.info(
      { event: 'm2_loaded', orgs: report.orgs, templates: report.templates, quarantined: report.quarantined, skipped: report.skipped, ms: Math.round(report.ms) },
      `face index loaded: ${report.templates} templates of ${report.orgs} organisations`,
    );
    this.emit('loaded', report);
    return report;
  }

  async #checkDim(info: ModuleInfo): Promise<void> {
    if (info.featureDim && info.featureDim !== this.#dim) {
      await this.#driver.close().catch(() => undefined); // refusing the module: its link goes either way
      throw new M2Error('FACE_DIM_MISMATCH', `face module sends ${info.featureDim}-dimensional features (${info.featureModel || 'unknown model'}); the M2 role is configured for ${this.#dim}`, { got: info.featureDim, want: this.#dim });
    }
    this.#log.info({ event: 'm2_module_ready', model: info.model, firmware: info.firmwareVersion, featureDim: info.featureDim }, 'face module ready');
  }

  // ------------------------------------------------------------------ identification and enrolment

  /** Present a card number as if read by the reader (tests, keypad fallbacks). Not logged. */
  presentCard(card: string): Promise<void> {
    return this.#identify.card(card);
  }

  /** Enrol a subject's face (see enrol.ts). */
  enrol(orgId: string, subjectId: string, opts: { captures?: number; timeoutMs?: number } = {}): Promise<M2EnrolResult> {
    return this.#enrolment.enrol(orgId, subjectId, opts);
  }

  // ------------------------------------------------------------------ erasure (ErasureParticipant)

  /** Drop an erased org's index (its matrix zeroed, its transform dropped). Idempotent. */
  async eraseOrg(orgId: string): Promise<ErasureReport> {
    const n = this.#index.dropOrg(orgId);
    this.#gate.forget(orgId, 'all');
    this.#log.info({ event: 'm2_erased_org', orgId, templates: n }, `face index of organisation ${orgId} dropped`);
    return { ok: true, counts: { faceIndexTemplates: n } };
  }

  /** Take an erased subject out of the org's index. Idempotent. */
  async eraseSubject(orgId: string, subjectId: string): Promise<ErasureReport> {
    const n = this.#index.dropSubject(orgId, subjectId);
    this.#gate.forget(orgId, [subjectId]);
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
    this.face.alive();
    this.#stats.tamperEvents++;
    this.#log.warn({ event: 'm2_tamper', open, response: this.#tamperResponse }, `tamper switch: case ${open ? 'OPENED' : 'closed'}`);
    this.emit('tamper', { open, response: this.#tamperResponse });
    if (!open) {
      if (!this.#locked) this.#agent.setPeripheral('tamper', true, 'case closed');
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
    const { templates, orgs } = this.#index.clear(true);
    this.#gate.clear();
    this.#locked = true;
    this.emit('status', 'locked', `zeroised: ${reason}`);
    this.#agent.setPeripheral('tamper', false, `ALARM: ${reason}; face index zeroised, punches refused until restart`);
    this.#log.error({ event: 'm2_zeroised', orgs, templates }, `M2 role zeroised (${reason}): ${templates} templates wiped from memory; locked until restart`);
    this.#feedback.show(false, 'Out of service');
    this.emit('zeroised', { templates, orgs });
  }
}
