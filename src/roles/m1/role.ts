/**
 * The M1 role: a fingerprint module of the R30x/AS608/ZFM family on a UART.
 *
 *   start()    every start: bring the module up (open, VfyPwd, ReadSysPara),
 *              reconcile its library with the vault (pages the vault does not
 *              know are deleted; vault templates missing from the module are
 *              written back with DownChar + Store), then identify in a loop:
 *              GenImg → Img2Tz → HighSpeedSearch → page → subject → punch.
 *   enrol()    two or three captures, RegModel, Store at a free page, UpChar
 *              into the vault (sealed), after checking the subject's consent.
 *   erasure    an ErasureParticipant: DeletChar every page of the erased
 *              org/subject (and any page the vault no longer vouches for), then
 *              ReadIndexTable to verify they are gone.
 *
 * The vault is the master copy; the module is a cache of it. The page ↔
 * (org, subject, record) mapping is sealed inside each vault record (see
 * envelope.ts) and held in memory as `page → entry` while running.
 *
 * One operation talks to the module at a time (#exclusive). A module that is
 * unplugged or silent turns the role 'offline' (reported as the 'fingerprint'
 * peripheral), retried with exponential backoff; nothing else in the agent
 * waits on it. Logs carry page numbers, org ids and codes, never subject ids,
 * names or template bytes.
 */
import { EventEmitter } from 'node:events';
import type { R30xDriver } from '../../../firmware-bridge/r30x/driver.js';
import { isR30xError, R30xError } from '../../../firmware-bridge/r30x/errors.js';
import type { FrameReject } from '../../../firmware-bridge/r30x/codec.js';
import { PunchMethod, ScoreBucket } from '../../proto/index.js';
import type { ErasureParticipant, ErasureReport } from '../../privacy/types.js';
import { TallyboxError, isTallyboxError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/log.js';
import { assertBiometricConsent } from '../../vault/consent.js';
import type { Vault } from '../../vault/vault.js';
import { openPageEnvelope, sealPageEnvelope } from './envelope.js';

/** What the role needs from the agent (Agent satisfies it). */
export interface M1PunchSink {
  /** Resolves once the punch is durably queued. */
  punch(input: { orgId: string; subjectId: string; method: PunchMethod; matchScore?: ScoreBucket }): Promise<{ eventId: string } | void>;
  setPeripheral(name: string, online: boolean, detail?: string): void;
}

/** What the role needs from the vault (Vault satisfies it). */
export type M1Vault = Pick<Vault, 'orgs' | 'decryptTemplates' | 'enrolTemplate' | 'listTemplates' | 'touchSubject' | 'getSubject'>;

export interface M1RoleOptions {
  agent: M1PunchSink;
  vault: M1Vault;
  /** One driver for the life of the process (its transport is reopened after an unplug). */
  driver: R30xDriver;
  logger?: Logger;
  /**
   * Same person again within this window is one punch (default 60; 0: off).
   * A function is read at every identification (e.g. the agent's runtime
   * settings, which a ConfigPatch command may change).
   */
  repeatWindowSec?: number | (() => number);
  /** GenImg poll interval with no finger on the sensor (default 150 ms). */
  pollMs?: number;
  /** Password for VfyPwd (default: the driver's). */
  password?: number;
  /** 2 or 3 captures per enrolment (default 2). */
  enrolCaptures?: 2 | 3;
  /** Wait for each placement/lift during enrolment (default 20 s). */
  enrolTimeoutMs?: number;
  /** Search score → bucket thresholds (default medium 100, high 150). */
  scoreBuckets?: { medium: number; high: number };
  /** Reconnect backoff (default 250 ms doubling to 30 s). */
  backoff?: { minMs: number; maxMs: number };
  /**
   * After an identification, wait until the finger is lifted before the next
   * one (default true: a resting finger is searched once, not continuously).
   */
  requireLift?: boolean;
  /** Consecutive TIMEOUT/PROTOCOL_ERROR replies before the module is declared offline (default 2). */
  failuresBeforeOffline?: number;
  /** DeviceState peripheral name (default 'fingerprint'). */
  peripheralName?: string;
  /** ms clock for the repeat window (default Date.now). */
  clock?: () => number;
  /**
   * Last-seen updates (the retention clock, counted in days) are batched and
   * written this often, not once per punch, so a vault commit never competes
   * with the outbox's durable write on the punch path (default 30 s).
   */
  touchFlushMs?: number;
}

/** Explicit connection states of the module. */
export type M1Status = 'stopped' | 'connecting' | 'reconciling' | 'ready' | 'offline';

export const M1_TRANSITIONS: Readonly<Record<M1Status, readonly M1Status[]>> = {
  stopped: ['connecting'],
  connecting: ['reconciling', 'offline', 'stopped'],
  reconciling: ['ready', 'offline', 'stopped'],
  ready: ['offline', 'connecting', 'stopped'],
  offline: ['connecting', 'stopped'],
};

/** One library page the vault vouches for. */
export interface PageEntry {
  orgId: string;
  subjectId: string;
  slot: number;
  recordId: string;
}

export interface ReconcileReport {
  librarySize: number;
  modulePages: number;
  vaultTemplates: number;
  /** Pages on the module the vault does not know: deleted. */
  deleted: number;
  /** Vault templates missing from the module: written back (DownChar + Store). */
  restored: number;
  /** Vault templates without a usable page (bare, conflicting, beyond the library): given a new page. */
  reassigned: number;
  /** Vault templates that could not be placed (library full). */
  unplaced: number;
  /** Protocol round trips ('DeletChar', 'Store', ...) issued. */
  roundTrips: number;
  ms: { total: number; protocol: number; agent: number };
}

export interface M1PunchEvent {
  orgId: string;
  subjectId: string;
  page: number;
  score: number;
  bucket: ScoreBucket;
  /** From the module's Search reply to the punch being durably accepted. */
  overheadMs: number;
  /** The role's own share of it: Search reply → punch handed to the agent (lookup, repeat window, bucket). */
  roleMs: number;
  /** The queued punch's event id, when the sink returns one. */
  eventId?: string;
}

export interface EnrolResult {
  orgId: string;
  subjectId: string;
  page: number;
  slot: number;
  recordId: string;
}

export type EnrolStep = { capture: number; of: number; waitingFor: 'finger' | 'lift' } | { capture: number; of: number; retry: string };

export interface M1RoleEvents {
  status: [status: M1Status, detail: string];
  reconciled: [report: ReconcileReport];
  punch: [event: M1PunchEvent];
  /** Identified again within the repeat window: no punch. */
  repeat: [event: { orgId: string; subjectId: string; page: number }];
  'no-match': [];
  /** Search found a page the vault does not vouch for: it was deleted from the module. */
  'unknown-page': [page: number];
  'bad-image': [code: string];
  /** The finger was lifted after a result. */
  lifted: [];
  'punch-refused': [code: string];
  'enrol-step': [step: EnrolStep];
  enrolled: [result: EnrolResult];
}

export interface M1Stats {
  punches: number;
  repeats: number;
  noMatch: number;
  unknownPages: number;
  badImages: number;
  linkErrors: number;
  errorFrames: number;
  reconciles: number;
  enrolments: number;
}

export class M1Error extends TallyboxError {
  constructor(code: 'MODULE_OFFLINE' | 'ENROL_TIMEOUT' | 'ENROL_FAILED' | 'LIBRARY_FULL' | 'SLOTS_FULL' | 'ROLE_STOPPED', message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super(code, `${code}: ${message}`, details, cause === undefined ? undefined : { cause });
    this.name = 'M1Error';
  }
}

/** Driver failures that mean the link itself is gone (not a glitch). */
const LINK_GONE = new Set(['NOT_OPEN', 'DISCONNECTED', 'WRITE_FAILED', 'CLOSED']);
/** Failures that may be a glitch (noise, a dropped byte) or a silent module. */
const LINK_GLITCH = new Set(['TIMEOUT', 'PROTOCOL_ERROR']);
/** Img2Tz refusals: a bad image, try again. */
const IMAGE_CODES = new Set(['IMAGE_MESSY', 'TOO_FEW_FEATURES', 'NO_VALID_IMAGE', 'IMAGE_FAILED']);
const MAX_SLOTS = 10;

type TickOutcome = 'idle' | 'busy' | 'error';

export class M1Role extends EventEmitter<M1RoleEvents> implements ErasureParticipant {
  readonly name = 'm1-fingerprint';
  readonly #agent: M1PunchSink;
  readonly #vault: M1Vault;
  readonly #driver: R30xDriver;
  readonly #log: Logger;
  readonly #pollMs: number;
  readonly #password: number | undefined;
  readonly #enrolCaptures: 2 | 3;
  readonly #enrolTimeoutMs: number;
  readonly #buckets: { medium: number; high: number };
  readonly #backoff: { minMs: number; maxMs: number };
  readonly #requireLift: boolean;
  readonly #failuresBeforeOffline: number;
  readonly #peripheral: string;
  readonly #clock: () => number;
  readonly #touchFlushMs: number;
  #touches = new Map<string, { orgId: string; subjectId: string; atMs: number }>();
  #touchTimer: NodeJS.Timeout | null = null;
  #repeatWindow: number | (() => number);

  #status: M1Status = 'stopped';
  #librarySize = 0;
  /** page → entry; null until loaded from the vault. */
  #pages: Map<number, PageEntry> | null = null;
  #lastPunch = new Map<string, number>();
  #awaitingLift = false;
  #glitches = 0;
  #lastLinkCode = '';
  #lock: Promise<unknown> = Promise.resolve();
  #running: Promise<void> | null = null;
  #stopping = false;
  #wake: (() => void) | null = null;
  #io = { ms: 0, trips: 0 };
  readonly #stats: M1Stats = { punches: 0, repeats: 0, noMatch: 0, unknownPages: 0, badImages: 0, linkErrors: 0, errorFrames: 0, reconciles: 0, enrolments: 0 };
  #lastReconcile: ReconcileReport | null = null;
  readonly #onErrorFrame = (r: FrameReject) => {
    this.#stats.errorFrames++;
    this.#log.debug({ event: 'm1_error_frame', reason: r.reason, bytes: r.bytes.length }, 'fingerprint module: refused a frame');
  };

  constructor(opts: M1RoleOptions) {
    super();
    this.#agent = opts.agent;
    this.#vault = opts.vault;
    this.#driver = opts.driver;
    this.#log = (opts.logger ?? silentLogger()).child({ component: 'm1' });
    this.#repeatWindow = opts.repeatWindowSec ?? 60;
    this.#pollMs = opts.pollMs ?? 150;
    this.#password = opts.password;
    this.#enrolCaptures = opts.enrolCaptures ?? 2;
    this.#enrolTimeoutMs = opts.enrolTimeoutMs ?? 20_000;
    this.#buckets = opts.scoreBuckets ?? { medium: 100, high: 150 };
    this.#backoff = opts.backoff ?? { minMs: 250, maxMs: 30_000 };
    this.#requireLift = opts.requireLift ?? true;
    this.#failuresBeforeOffline = Math.max(1, opts.failuresBeforeOffline ?? 2);
    this.#peripheral = opts.peripheralName ?? 'fingerprint';
    this.#clock = opts.clock ?? Date.now;
    this.#touchFlushMs = opts.touchFlushMs ?? 30_000;
  }

  /** The repeat-punch window now in force, in seconds. */
  get repeatWindowSec(): number {
    const w = typeof this.#repeatWindow === 'function' ? this.#repeatWindow() : this.#repeatWindow;
    return Number.isFinite(w) && w > 0 ? w : 0;
  }
  set repeatWindowSec(sec: number | (() => number)) {
    this.#repeatWindow = sec;
  }

  get status(): M1Status {
    return this.#status;
  }
  get librarySize(): number {
    return this.#librarySize;
  }
  /** Counters (no personal data). */
  get stats(): M1Stats {
    return { ...this.#stats };
  }
  get lastReconcile(): ReconcileReport | null {
    return this.#lastReconcile;
  }
  /** Pages the role believes hold a vault template, with their owners (tests, diagnostics). */
  /**
   * Stop identifying these subjects at once (an erasure is starting): their
   * pages no longer map to anyone, so a finger matching one of them before
   * the purge reaches the module punches nobody (the page is then deleted as
   * unknown). The purge itself deletes the pages as a participant.
   */
  forget(orgId: string, subjectIds: readonly string[] | 'all'): number {
    if (!this.#pages) return 0;
    const drop = subjectIds === 'all' ? undefined : new Set(subjectIds);
    let n = 0;
    for (const [page, e] of this.#pages) {
      if (e.orgId === orgId && (!drop || drop.has(e.subjectId))) {
        this.#pages.delete(page);
        n++;
      }
    }
    return n;
  }

  pageMap(): ReadonlyMap<number, Readonly<PageEntry>> {
    return new Map(this.#pages ?? []);
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Start the loop. Resolves once the first bring-up (with reconciliation) has
   * succeeded or failed; either way the loop keeps running and retries.
   */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#stopping = false;
    this.#driver.on('error-frame', this.#onErrorFrame);
    const first = new Promise<void>((resolve) => {
      const on = (s: M1Status) => {
        if (s === 'ready' || s === 'offline') {
          this.off('status', on);
          resolve();
        }
      };
      this.on('status', on);
    });
    this.#running = this.#loop();
    await Promise.race([first, this.#running]);
  }

  /** Stop the loop; the driver (and its transport) stay the caller's to close. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    await this.#running;
    this.#running = null;
    await this.flushLastSeen();
    if (this.#status !== 'stopped') this.#setStatus('stopped', 'stopped');
    this.#driver.off('error-frame', this.#onErrorFrame);
  }

  async #loop(): Promise<void> {
    let delay = this.#backoff.minMs;
    let needBringUp = true;
    while (!this.#stopping) {
      if (needBringUp || this.#status !== 'ready') {
        try {
          await this.#exclusive(() => this.#bringUp());
          needBringUp = false;
          delay = this.#backoff.minMs;
        } catch (err) {
          if (this.#stopping) break;
          // After a TIMEOUT, a late ack could be taken for the next command's: pause at least one timeout.
          const wait = this.#lastLinkCode === 'TIMEOUT' ? Math.max(delay, this.#driver.timeoutMs) : delay;
          this.#goOffline(err, wait);
          await this.#sleep(wait);
          delay = Math.min(this.#backoff.maxMs, delay * 2);
          continue;
        }
      }
      const outcome = await this.#exclusive(() => this.#tick()).catch((err: unknown) => this.#onTickError(err));
      if (this.#stopping) break;
      if (outcome === 'idle') await this.#sleep(this.#pollMs);
      // After a TIMEOUT a late ack could pass for the next command's reply (acks carry no sequence number): wait one timeout.
      else if (outcome === 'error' && this.#status === 'ready') await this.#sleep(this.#lastLinkCode === 'TIMEOUT' ? Math.max(this.#pollMs, this.#driver.timeoutMs) : this.#pollMs);
    }
  }

  /** Open, VfyPwd, ReadSysPara, load the page map, reconcile. Caller holds the lock. */
  async #bringUp(): Promise<ReconcileReport> {
    this.#setStatus('connecting', 'connecting');
    try {
      await this.#driver.open();
      await this.#driver.vfyPwd(this.#password);
      const para = await this.#driver.readSysPara();
      this.#librarySize = para.librarySize;
      this.#setStatus('reconciling', 'reconciling');
      const report = await this.#reconcile();
      this.#glitches = 0;
      this.#lastLinkCode = '';
      this.#awaitingLift = false;
      this.#setStatus('ready', `ready: ${this.#pages?.size ?? 0} templates, library ${this.#librarySize}`);
      return report;
    } catch (err) {
      if (isR30xError(err)) this.#lastLinkCode = err.code;
      throw err;
    }
  }

  #setStatus(next: M1Status, detail: string): void {
    const prev = this.#status;
    if (prev === next) {
      if (next === 'offline' || next === 'ready') this.#agent.setPeripheral(this.#peripheral, next === 'ready', detail);
      return;
    }
    if (!M1_TRANSITIONS[prev].includes(next)) {
      // Never throw from here (callers are error paths); log the bug instead.
      this.#log.error({ event: 'm1_bad_transition', from: prev, to: next }, `fingerprint module: unexpected transition ${prev} → ${next}`);
    }
    this.#status = next;
    if (next === 'ready' || next === 'offline') this.#agent.setPeripheral(this.#peripheral, next === 'ready', detail);
    this.emit('status', next, detail);
  }

  #goOffline(err: unknown, retryMs: number): void {
    const code = errCode(err);
    this.#stats.linkErrors++;
    const detail = `offline: ${code}; retry in ${retryMs < 1000 ? `${retryMs} ms` : `${Math.round(retryMs / 1000)} s`}`;
    if (this.#status !== 'offline') this.#log.warn({ event: 'm1_offline', code, retryMs }, `fingerprint module ${detail}`);
    this.#setStatus('offline', detail);
  }

  #onTickError(err: unknown): TickOutcome {
    const code = errCode(err);
    this.#lastLinkCode = isR30xError(err) ? err.code : '';
    if (isR30xError(err) && LINK_GONE.has(err.code)) {
      this.#goOffline(err, this.#backoff.minMs);
      return 'error';
    }
    if (isR30xError(err) && LINK_GLITCH.has(err.code)) {
      this.#stats.linkErrors++;
      if (++this.#glitches >= this.#failuresBeforeOffline) this.#goOffline(err, Math.max(this.#backoff.minMs, this.#driver.timeoutMs));
      else this.#log.info({ event: 'm1_glitch', code, consecutive: this.#glitches }, `fingerprint module: ${code}, retrying`);
      return 'error';
    }
    // Anything else (an unexpected confirmation code, the outbox refusing): log, keep going.
    this.#log.warn({ event: 'm1_error', code }, `fingerprint module: ${code}`);
    return 'error';
  }

  /** Sleep, cut short by stop(). */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(t);
        if (self.#wake === done) self.#wake = null;
        resolve();
      }
      this.#wake = done;
    });
  }

  /** One conversation with the module at a time. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn, fn);
    this.#lock = run.catch(() => undefined);
    return run;
  }

  /** Time and count one protocol exchange. */
  async #rt<T>(p: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await p();
    } finally {
      this.#io.ms += performance.now() - t0;
      this.#io.trips++;
    }
  }

  // ------------------------------------------------------------------ identification

  async #tick(): Promise<TickOutcome> {
    if (this.#stopping || this.#status !== 'ready') return 'error';
    const d = this.#driver;
    try {
      await d.genImg();
    } catch (err) {
      if (isR30xError(err, 'NO_FINGER')) {
        this.#glitches = 0;
        if (this.#awaitingLift) {
          this.#awaitingLift = false;
          this.emit('lifted');
        }
        return 'idle';
      }
      throw err;
    }
    this.#glitches = 0;
    if (this.#awaitingLift) return 'idle';
    try {
      await d.img2Tz(1);
    } catch (err) {
      if (isR30xError(err) && IMAGE_CODES.has(err.code)) {
        this.#stats.badImages++;
        this.emit('bad-image', err.code);
        return 'idle';
      }
      throw err;
    }
    let page: number;
    let score: number;
    try {
      ({ page, score } = await d.highSpeedSearch(1, 0, this.#librarySize));
    } catch (err) {
      if (isR30xError(err, 'NOT_FOUND')) {
        this.#stats.noMatch++;
        this.#awaitingLift = this.#requireLift;
        this.emit('no-match');
        return 'busy';
      }
      throw err;
    }
    // ---- agent-side overhead starts at the Search reply
    const t0 = performance.now();
    this.#awaitingLift = this.#requireLift;
    const entry = this.#pages?.get(page);
    if (!entry) {
      // The vault does not vouch for this page (written behind our back): it must not punch, and it goes.
      this.#stats.unknownPages++;
      this.#log.warn({ event: 'm1_unknown_page', page }, `fingerprint module: page ${page} matched but is not in the vault; deleting it`);
      this.emit('unknown-page', page);
      await d.deletChar(page, 1);
      return 'busy';
    }
    const key = `${entry.orgId}\u0000${entry.subjectId}`;
    const now = this.#clock();
    const last = this.#lastPunch.get(key);
    const windowSec = this.repeatWindowSec;
    if (last !== undefined && windowSec > 0 && now - last < windowSec * 1000) {
      this.#stats.repeats++;
      this.emit('repeat', { orgId: entry.orgId, subjectId: entry.subjectId, page });
      return 'busy';
    }
    this.#lastPunch.set(key, now);
    if (this.#lastPunch.size > 4096) this.#sweepRepeats(now);
    const bucket = this.#bucket(score);
    const roleMs = performance.now() - t0;
    let eventId: string | undefined;
    try {
      eventId = (await this.#agent.punch({ orgId: entry.orgId, subjectId: entry.subjectId, method: PunchMethod.PUNCH_METHOD_FINGERPRINT, matchScore: bucket }))?.eventId;
    } catch (err) {
      // Not accepted: the person may try again at once.
      this.#lastPunch.delete(key);
      const code = errCode(err);
      this.#log.error({ event: 'm1_punch_refused', orgId: entry.orgId, code }, `fingerprint punch not accepted: ${code}`);
      this.emit('punch-refused', code);
      return 'busy';
    }
    const overheadMs = performance.now() - t0;
    this.#stats.punches++;
    // Retention clock: batched, off the punch's critical path.
    this.#touches.set(key, { orgId: entry.orgId, subjectId: entry.subjectId, atMs: now });
    this.#touchTimer ??= setTimeout(() => void this.flushLastSeen(), this.#touchFlushMs);
    this.emit('punch', { orgId: entry.orgId, subjectId: entry.subjectId, page, score, bucket, overheadMs, roleMs, ...(eventId ? { eventId } : {}) });
    return 'busy';
  }

  /** Write pending last-seen times to the vault (also done by stop()). */
  async flushLastSeen(): Promise<void> {
    if (this.#touchTimer) clearTimeout(this.#touchTimer);
    this.#touchTimer = null;
    const batch = [...this.#touches.values()];
    this.#touches.clear();
    for (const t of batch) {
      await this.#vault.touchSubject(t.orgId, t.subjectId, t.atMs).catch((err: unknown) => this.#log.warn({ event: 'm1_touch_failed', code: errCode(err) }, 'could not update last-seen'));
    }
  }

  #bucket(score: number): ScoreBucket {
    if (score >= this.#buckets.high) return ScoreBucket.SCORE_BUCKET_HIGH;
    if (score >= this.#buckets.medium) return ScoreBucket.SCORE_BUCKET_MEDIUM;
    return ScoreBucket.SCORE_BUCKET_LOW;
  }

  #sweepRepeats(now: number): void {
    const horizon = this.repeatWindowSec * 1000;
    for (const [k, at] of this.#lastPunch) if (now - at >= horizon) this.#lastPunch.delete(k);
  }

  // ------------------------------------------------------------------ reconciliation

  /** Reconcile now (normally done by start() and after every reconnect). */
  reconcile(): Promise<ReconcileReport> {
    return this.#exclusive(async () => {
      if (this.#status !== 'ready') throw new M1Error('MODULE_OFFLINE', `fingerprint module is ${this.#status}`);
      return this.#reconcile();
    });
  }

  async #reconcile(): Promise<ReconcileReport> {
    const t0 = performance.now();
    this.#io = { ms: 0, trips: 0 };
    const d = this.#driver;
    const size = this.#librarySize;
    const onModule = new Set(await this.#listPages());

    // The vault's view: every fingerprint template of every live org, with the page sealed in it.
    const pages = new Map<number, PageEntry>();
    const templates = new Map<number, Buffer>();
    const homeless: Array<{ entry: PageEntry; template: Buffer }> = [];
    const secrets: Buffer[] = [];
    let vaultTemplates = 0;
    try {
      for (const orgId of await this.#vault.orgs()) {
        const { templates: decrypted, quarantined } = await this.#vault.decryptTemplates(orgId);
        if (quarantined.length > 0) this.#log.warn({ event: 'm1_quarantined_templates', orgId, count: quarantined.length }, 'some templates do not decrypt; their pages are not restored');
        for (const t of decrypted) {
          secrets.push(t.bytes);
          if (t.modality !== 'fingerprint') continue;
          vaultTemplates++;
          const { page, template } = openPageEnvelope(t.bytes);
          const entry: PageEntry = { orgId: t.orgId, subjectId: t.subjectId, slot: t.slot, recordId: t.recordId };
          if (page !== null && page < size && !pages.has(page)) {
            pages.set(page, entry);
            templates.set(page, template);
          } else homeless.push({ entry, template });
        }
      }

      // 1. Pages the vault does not know: delete (contiguous runs in one DeletChar each).
      const orphans = [...onModule].filter((p) => !pages.has(p));
      await this.#deletePages(orphans);

      // 2. Vault templates missing from the module: write back.
      let restored = 0;
      for (const [page, template] of templates) {
        if (onModule.has(page)) continue;
        await this.#rt(() => d.downChar(1, template));
        await this.#rt(() => d.store(1, page));
        restored++;
      }

      // 3. Templates without a usable page: a free page, then the vault record is rewritten with it.
      let reassigned = 0;
      let unplaced = 0;
      for (const { entry, template } of homeless) {
        const page = firstFree(size, pages);
        if (page === null) {
          unplaced++;
          continue;
        }
        await this.#rt(() => d.downChar(1, template));
        await this.#rt(() => d.store(1, page));
        pages.set(page, entry);
        reassigned++;
        const env = sealPageEnvelope(page, template);
        try {
          entry.recordId = (await this.#vault.enrolTemplate(entry.orgId, entry.subjectId, 'fingerprint', entry.slot, env)).recordId;
        } catch (err) {
          // e.g. consent withdrawn since: the page serves until the purge removes the template.
          this.#log.warn({ event: 'm1_reassign_not_saved', orgId: entry.orgId, page, code: errCode(err) }, 'template placed on the module but its page could not be saved in the vault');
        } finally {
          env.fill(0);
        }
      }
      if (unplaced > 0) this.#log.error({ event: 'm1_library_full', unplaced, librarySize: size }, `fingerprint library full: ${unplaced} templates not on the module`);

      this.#pages = pages;
      this.#stats.reconciles++;
      const total = performance.now() - t0;
      const report: ReconcileReport = {
        librarySize: size,
        modulePages: onModule.size,
        vaultTemplates,
        deleted: orphans.length,
        restored,
        reassigned,
        unplaced,
        roundTrips: this.#io.trips,
        ms: { total, protocol: this.#io.ms, agent: total - this.#io.ms },
      };
      this.#lastReconcile = report;
      const { ms: _ms, ...counts } = report;
      this.#log.info({ event: 'm1_reconciled', ...counts, ms: Math.round(total) }, `fingerprint library reconciled: ${orphans.length} deleted, ${restored} restored, ${reassigned} reassigned`);
      this.emit('reconciled', report);
      return report;
    } finally {
      for (const s of secrets) s.fill(0);
    }
  }

  async #listPages(): Promise<number[]> {
    const tables = Math.min(4, Math.ceil(this.#librarySize / 256));
    const out: number[] = [];
    for (let t = 0; t < tables; t++) out.push(...(await this.#rt(() => this.#driver.readIndexTable(t))));
    return out.filter((p) => p < this.#librarySize);
  }

  async #deletePages(pages: readonly number[]): Promise<void> {
    for (const [start, count] of runs(pages)) await this.#rt(() => this.#driver.deletChar(start, count));
  }

  // ------------------------------------------------------------------ enrolment

  /**
   * Enrol a finger of a subject the vault already holds (after a SubjectUpsert)
   * with recorded consent. Refused before the sensor is touched when consent is
   * missing (ConsentRefusedError with its reason) or the subject is unknown.
   * `slot` is the finger slot in the vault (default: the subject's first free one);
   * enrolling an existing slot replaces it (the old page is deleted).
   */
  async enrol(orgId: string, subjectId: string, opts: { slot?: number; captures?: 2 | 3; timeoutMs?: number } = {}): Promise<EnrolResult> {
    const subject = await this.#vault.getSubject(orgId, subjectId);
    assertBiometricConsent({
      minor: subject.minor,
      biometricAtMs: subject.consents.biometric?.grantedAtMs ?? null,
      guardianAtMs: subject.consents.guardian?.grantedAtMs ?? null,
    });
    let slot = opts.slot;
    if (slot === undefined) {
      const used = new Set((await this.#vault.listTemplates(orgId, subjectId)).filter((t) => t.modality === 'fingerprint').map((t) => t.slot));
      slot = [...Array(MAX_SLOTS).keys()].find((s) => !used.has(s));
      if (slot === undefined) throw new M1Error('SLOTS_FULL', `the subject already has ${MAX_SLOTS} fingerprints enrolled; pass a slot to replace one`, { orgId });
    }
    const captures = opts.captures ?? this.#enrolCaptures;
    const timeoutMs = opts.timeoutMs ?? this.#enrolTimeoutMs;
    const finalSlot = slot;
    return this.#exclusive(async () => {
      if (this.#stopping) throw new M1Error('ROLE_STOPPED', 'the M1 role is stopping');
      if (this.#status !== 'ready') throw new M1Error('MODULE_OFFLINE', `fingerprint module is ${this.#status}`, { status: this.#status });
      try {
        const result = await this.#enrolLocked(orgId, subjectId, finalSlot, captures, timeoutMs);
        // The finger is still on the sensor: wait for the lift, so it is not taken for a punch.
        try {
          await this.#waitFinger(false, { capture: captures, of: captures }, timeoutMs);
          this.#awaitingLift = false;
        } catch (err) {
          if (!isTallyboxError(err, 'ENROL_TIMEOUT')) throw err;
          this.#awaitingLift = true;
        }
        return result;
      } catch (err) {
        this.#awaitingLift = true;
        if (isR30xError(err) && (LINK_GONE.has(err.code) || LINK_GLITCH.has(err.code))) {
          // The loop notices at its next command; say so now.
          this.#onTickError(err);
        }
        throw err;
      }
    });
  }

  async #enrolLocked(orgId: string, subjectId: string, slot: number, captures: 2 | 3, timeoutMs: number): Promise<EnrolResult> {
    const d = this.#driver;
    let attempts = 0;
    for (let capture = 1; capture <= captures; ) {
      if (capture > 1 || attempts > 0) await this.#waitFinger(false, { capture, of: captures }, timeoutMs);
      await this.#waitFinger(true, { capture, of: captures }, timeoutMs);
      try {
        await d.img2Tz(capture === 1 ? 1 : 2);
      } catch (err) {
        if (isR30xError(err) && IMAGE_CODES.has(err.code) && ++attempts < captures * 3) {
          this.emit('enrol-step', { capture, of: captures, retry: err.code });
          continue;
        }
        throw enrolFailed(err);
      }
      if (capture === 2) {
        try {
          await d.regModel();
        } catch (err) {
          throw enrolFailed(err);
        }
      }
      if (capture === 3) {
        try {
          await d.match();
        } catch (err) {
          throw enrolFailed(err);
        }
      }
      capture++;
    }
    const used = this.#pages ?? new Map<number, PageEntry>();
    const onModule = new Set(await this.#listPages());
    const page = firstFree(this.#librarySize, used, onModule);
    if (page === null) throw new M1Error('LIBRARY_FULL', `the module's library of ${this.#librarySize} pages is full`);
    await d.store(1, page);
    let template: Buffer | null = null;
    let env: Buffer | null = null;
    let recordId: string;
    try {
      template = await d.upChar(1);
      env = sealPageEnvelope(page, template);
      recordId = (await this.#vault.enrolTemplate(orgId, subjectId, 'fingerprint', slot, env)).recordId;
    } catch (err) {
      // Nothing in the vault: nothing on the module either.
      await d.deletChar(page, 1).catch(() => undefined);
      throw err;
    } finally {
      template?.fill(0);
      env?.fill(0);
    }
    // A replaced slot: its old page goes.
    for (const [p, e] of used) {
      if (e.orgId === orgId && e.subjectId === subjectId && e.slot === slot && p !== page) {
        used.delete(p);
        await d.deletChar(p, 1).catch((err: unknown) => this.#log.warn({ event: 'm1_old_page_kept', page: p, code: errCode(err) }, 'replaced page not deleted; the next reconciliation will'));
      }
    }
    used.set(page, { orgId, subjectId, slot, recordId });
    this.#pages = used;
    this.#stats.enrolments++;
    this.#log.info({ event: 'm1_enrolled', orgId, page, slot }, `fingerprint enrolled at page ${page}`);
    const result = { orgId, subjectId, page, slot, recordId };
    this.emit('enrolled', result);
    return result;
  }

  /** Poll GenImg until a finger is on (present=true) or off the sensor. */
  async #waitFinger(present: boolean, at: { capture: number; of: number }, timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    this.emit('enrol-step', { ...at, waitingFor: present ? 'finger' : 'lift' });
    for (;;) {
      if (this.#stopping) throw new M1Error('ROLE_STOPPED', 'the M1 role is stopping');
      let on: boolean;
      try {
        await this.#driver.genImg();
        on = true;
      } catch (err) {
        if (!isR30xError(err, 'NO_FINGER')) throw err;
        on = false;
      }
      if (on === present) return;
      if (performance.now() > deadline) throw new M1Error('ENROL_TIMEOUT', `no finger ${present ? 'placed' : 'lifted'} within ${timeoutMs} ms (capture ${at.capture} of ${at.of})`, at);
      await new Promise((r) => setTimeout(r, this.#pollMs));
    }
  }

  // ------------------------------------------------------------------ erasure (ErasureParticipant)

  eraseOrg(orgId: string): Promise<ErasureReport> {
    return this.#erase((e) => e.orgId === orgId);
  }
  eraseSubject(orgId: string, subjectId: string): Promise<ErasureReport> {
    return this.#erase((e) => e.orgId === orgId && e.subjectId === subjectId);
  }
  eraseSubjectTemplates(orgId: string, subjectId: string): Promise<ErasureReport> {
    return this.#erase((e) => e.orgId === orgId && e.subjectId === subjectId);
  }

  /**
   * DeletChar the pages of the erased scope, plus every page the vault no
   * longer vouches for (the purge deletes the vault rows first, so after a
   * restart the scope's pages are exactly those), then read the index tables
   * back: ok only if none of them is still used. Idempotent.
   */
  #erase(inScope: (e: PageEntry) => boolean): Promise<ErasureReport> {
    return this.#exclusive(async (): Promise<ErasureReport> => {
      try {
        let reconciledAway = 0;
        if (this.#status !== 'ready' || this.#pages === null) {
          // Bring-up reconciles against the vault, which already dropped the scope: its pages go as orphans.
          reconciledAway = (await this.#bringUp()).deleted;
        }
        const map = this.#pages!;
        const targets = [...map].filter(([, e]) => inScope(e)).map(([p]) => p);
        for (const p of targets) map.delete(p);
        const before = await this.#listPages();
        const orphans = before.filter((p) => !map.has(p));
        const toDelete = [...new Set([...targets.filter((p) => before.includes(p)), ...orphans])].sort((a, b) => a - b);
        await this.#deletePages(toDelete);
        const after = new Set(await this.#listPages());
        const remaining = [...new Set([...targets, ...toDelete])].filter((p) => after.has(p));
        const ok = remaining.length === 0;
        const erased = toDelete.length + reconciledAway;
        this.#log.info({ event: 'm1_erased', pages: erased, remaining: remaining.length, ok }, `fingerprint module: ${erased} pages erased, verified ${ok ? 'empty' : 'NOT empty'}`);
        return {
          ok,
          counts: { sensorSlots: erased },
          detail: ok ? `${erased} module pages deleted; index table verified` : `${remaining.length} module pages still in use after DeletChar`,
        };
      } catch (err) {
        const code = errCode(err);
        if (this.#status === 'ready' && isR30xError(err) && (LINK_GONE.has(err.code) || LINK_GLITCH.has(err.code))) this.#goOffline(err, this.#backoff.minMs);
        else if (this.#status === 'connecting' || this.#status === 'reconciling') this.#goOffline(err, this.#backoff.minMs);
        return { ok: false, counts: {}, detail: `fingerprint module unavailable: ${code}` };
      }
    });
  }
}

// ------------------------------------------------------------------ helpers

function errCode(err: unknown): string {
  if (isTallyboxError(err)) return err.code;
  if (err instanceof Error) return err.name || 'ERROR';
  return 'ERROR';
}

function enrolFailed(err: unknown): unknown {
  if (err instanceof R30xError && err.confirmation !== undefined) {
    return new M1Error('ENROL_FAILED', `the module refused the enrolment: ${err.code}`, { code: err.code }, err);
  }
  return err;
}

/** Lowest page below `size` that is in none of the sets. */
function firstFree(size: number, ...used: Array<ReadonlyMap<number, unknown> | ReadonlySet<number>>): number | null {
  for (let p = 0; p < size; p++) if (!used.some((u) => u.has(p))) return p;
  return null;
}

/** Sorted pages as [start, count] runs of consecutive pages. */
export function runs(pages: readonly number[]): Array<[number, number]> {
  const sorted = [...new Set(pages)].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === p && last[1] < 0xffff) last[1]++;
    else out.push([p, 1]);
  }
  return out;
}

