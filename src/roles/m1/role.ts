/**
 * The M1 role: a fingerprint module of the R30x/AS608/ZFM family on a UART
 * (any FingerprintModule). This file composes the parts:
 *
 *   kit/supervisor.ts  the module's state (opening → ready ⇄ degraded → offline),
 *                      backoff, heartbeat, online/offline in DeviceState; its
 *                      bring-up is open, VfyPwd, ReadSysPara, then
 *   reconcile.ts       the module's library made to match the vault
 *   identify.ts        the loop's step: GenImg → Img2Tz → HighSpeedSearch → page → gate
 *   enrol.ts           captures, RegModel, Store, UpChar into the vault (sealed)
 *   erase.ts           DeletChar the erased pages, then verify the index table
 *
 * The vault is the master copy; the module is a cache of it. One operation
 * talks to the module at a time (the kit's serial queue). Nothing else in the
 * agent waits on the module. Logs carry page numbers, org ids and codes,
 * never subject ids, names or template bytes.
 */
import { EventEmitter } from 'node:events';
import { isDeviceError, type FingerprintModule, type FrameReject } from '../../../firmware-bridge/devices.js';
import type { ErasureParticipant, ErasureReport } from '../../privacy/types.js';
import { isTallyboxError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/log.js';
import { assertBiometricConsent } from '../../vault/consent.js';
import { PunchGate } from '../kit/punch-gate.js';
import { SerialQueue } from '../kit/serial-queue.js';
import { PeripheralSupervisor, type PeripheralStatus } from '../kit/supervisor.js';
import { enrolLocked, waitFinger } from './enrol.js';
import { eraseLocked } from './erase.js';
import { identifyOnce, type TickOutcome } from './identify.js';
import { reconcile } from './reconcile.js';
import { M1Error, MAX_SLOTS, classifyR30x, errCode, type EnrolResult, type EnrolStep, type M1Context, type M1PunchEvent, type M1PunchSink, type M1Stats, type M1Vault, type PageEntry, type ReconcileReport } from './types.js';

export { M1Error, runs, type EnrolResult, type EnrolStep, type M1PunchEvent, type M1PunchSink, type M1Stats, type M1Vault, type PageEntry, type ReconcileReport } from './types.js';

export interface M1RoleOptions {
  agent: M1PunchSink;
  vault: M1Vault;
  /** One module driver for the life of the process (its transport is reopened after an unplug). */
  driver: FingerprintModule;
  logger?: Logger;
  /**
   * Same person again within this window is one punch (default 60; 0: off).
   * A function is read at every identification. Ignored when `gate` is given.
   */
  repeatWindowSec?: number | (() => number);
  /** The agent's punch gate (start.ts shares one between roles); default: the role's own. */
  gate?: PunchGate;
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
  /** Reconnect backoff (default 250 ms doubling to 30 s, full jitter). */
  backoff?: { minMs: number; maxMs: number };
  /** Heartbeat (ReadSysPara) after this much silence (default 5000 ms; the GenImg poll normally keeps it quiet). */
  heartbeatMs?: number;
  /**
   * After an identification, wait until the finger is lifted before the next
   * one (default true: a resting finger is searched once, not continuously).
   */
  requireLift?: boolean;
  /** Consecutive TIMEOUT/PROTOCOL_ERROR replies before the module is declared offline (default 2). */
  failuresBeforeOffline?: number;
  /** DeviceState peripheral name (default 'fingerprint'). */
  peripheralName?: string;
  /** Monotonic ms clock for the repeat window and heartbeat (default performance.now). */
  monotonic?: () => number;
  /** Wall clock for last-seen timestamps (default Date.now). */
  wallClock?: () => number;
  /** Last-seen batch interval of the role's own gate (default 30 s). */
  touchFlushMs?: number;
}

/** The module's status, as its supervisor has it. */
export type M1Status = PeripheralStatus;

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

export class M1Role extends EventEmitter<M1RoleEvents> implements ErasureParticipant {
  readonly name = 'm1-fingerprint';
  readonly supervisor: PeripheralSupervisor;
  readonly #ctx: M1Context;
  readonly #password: number | undefined;
  readonly #enrolCaptures: 2 | 3;
  readonly #enrolTimeoutMs: number;
  readonly #buckets: { medium: number; high: number };
  readonly #requireLift: boolean;
  readonly #gate: PunchGate;
  readonly #ownGate: boolean;
  #lastLinkCode = '';
  #running: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #lastReconcile: ReconcileReport | null = null;
  readonly #onErrorFrame = (r: FrameReject) => {
    this.#ctx.stats.errorFrames++;
    this.#ctx.log.debug({ event: 'm1_error_frame', reason: r.reason, bytes: r.bytes.length }, 'fingerprint module: refused a frame');
  };

  constructor(opts: M1RoleOptions) {
    super();
    const log = (opts.logger ?? silentLogger()).child({ component: 'm1' });
    this.#ctx = {
      module: opts.driver,
      vault: opts.vault,
      log,
      queue: new SerialQueue(),
      stats: { punches: 0, repeats: 0, noMatch: 0, unknownPages: 0, badImages: 0, linkErrors: 0, errorFrames: 0, reconciles: 0, enrolments: 0 },
      librarySize: 0,
      pages: null,
      awaitingLift: false,
      stopping: false,
      pollMs: opts.pollMs ?? 150,
    };
    this.#password = opts.password;
    this.#enrolCaptures = opts.enrolCaptures ?? 2;
    this.#enrolTimeoutMs = opts.enrolTimeoutMs ?? 20_000;
    this.#buckets = opts.scoreBuckets ?? { medium: 100, high: 150 };
    this.#requireLift = opts.requireLift ?? true;
    this.#ownGate = !opts.gate;
    this.#gate =
      opts.gate ??
      new PunchGate({
        sink: opts.agent,
        lastSeen: opts.vault,
        logger: log,
        repeatWindowSec: opts.repeatWindowSec ?? 60,
        ...(opts.monotonic ? { monotonic: opts.monotonic } : {}),
        ...(opts.wallClock ? { wallClock: opts.wallClock } : {}),
        ...(opts.touchFlushMs !== undefined ? { touchFlushMs: opts.touchFlushMs } : {}),
      });
    const ctx = this.#ctx;
    this.supervisor = new PeripheralSupervisor({
      sink: opts.agent,
      logger: log,
      backoff: opts.backoff ?? { minMs: 250, maxMs: 30_000 },
      heartbeatMs: opts.heartbeatMs ?? 5000,
      failuresBeforeOffline: opts.failuresBeforeOffline ?? 2,
      ...(opts.monotonic ? { monotonic: opts.monotonic } : {}),
      peripheral: {
        name: opts.peripheralName ?? 'fingerprint',
        open: () => ctx.queue.run(() => this.#bringUp()),
        probe: () => ctx.queue.run(async () => void (await ctx.module.readSysPara())),
        classify: (err) => {
          const k = classifyR30x(err);
          // At bring-up every failure means "not up": only a missing device node is 'absent'.
          return k === 'ignore' ? 'gone' : k;
        },
        // After a TIMEOUT, a late ack could be taken for the next command's (acks carry no sequence number).
        settleMs: (err) => (isDeviceError(err, 'TIMEOUT') ? ctx.module.timeoutMs : 0),
      },
    });
    this.supervisor.on('status', (s, detail) => {
      if (s === 'offline' || s === 'absent' || s === 'degraded') ctx.stats.linkErrors++;
      this.#wake?.();
      this.emit('status', s, detail);
    });
  }

  /** The repeat-punch window now in force, in seconds (the gate's). */
  get repeatWindowSec(): number {
    return this.#gate.repeatWindowSec;
  }
  set repeatWindowSec(sec: number | (() => number)) {
    this.#gate.repeatWindowSec = sec;
  }
  get gate(): PunchGate {
    return this.#gate;
  }
  get status(): M1Status {
    return this.supervisor.status;
  }
  get librarySize(): number {
    return this.#ctx.librarySize;
  }
  /** Counters (no personal data). */
  get stats(): M1Stats {
    return { ...this.#ctx.stats };
  }
  get lastReconcile(): ReconcileReport | null {
    return this.#lastReconcile;
  }

  /**
   * Stop identifying these subjects at once (an erasure is starting): their
   * pages no longer map to anyone, so a finger matching one of them before
   * the purge reaches the module punches nobody (the page is then deleted as
   * unknown). The purge itself deletes the pages as a participant.
   */
  forget(orgId: string, subjectIds: readonly string[] | 'all'): number {
    const pages = this.#ctx.pages;
    if (!pages) return 0;
    const drop = subjectIds === 'all' ? undefined : new Set(subjectIds);
    let n = 0;
    for (const [page, e] of pages) {
      if (e.orgId === orgId && (!drop || drop.has(e.subjectId))) {
        pages.delete(page);
        n++;
      }
    }
    return n;
  }

  /** Pages the role believes hold a vault template, with their owners (tests, diagnostics). */
  pageMap(): ReadonlyMap<number, Readonly<PageEntry>> {
    return new Map(this.#ctx.pages ?? []);
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Start supervising and identifying. Resolves once the first bring-up (with
   * reconciliation) has succeeded or failed; either way the supervisor retries.
   */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#ctx.stopping = false;
    this.#ctx.module.on('error-frame', this.#onErrorFrame);
    await this.supervisor.start();
    this.#running = this.#loop();
  }

  /** Stop; the driver (and its transport) stay the caller's to close. */
  async stop(): Promise<void> {
    this.#ctx.stopping = true;
    this.#wake?.();
    await this.#running;
    this.#running = null;
    await this.supervisor.stop();
    await this.flushLastSeen();
    this.#ctx.module.off('error-frame', this.#onErrorFrame);
  }

  /** Write pending last-seen times to the vault (also done by stop()). */
  async flushLastSeen(): Promise<void> {
    if (this.#ownGate) await this.#gate.stop();
    else await this.#gate.flushLastSeen();
  }

  async #loop(): Promise<void> {
    const ctx = this.#ctx;
    while (!ctx.stopping) {
      if (!this.supervisor.usable) {
        // The supervisor brings the module back; wait for its next status change.
        await this.#sleep(60_000);
        continue;
      }
      const outcome = await ctx.queue.run(() => (ctx.stopping || !this.supervisor.usable ? Promise.resolve<TickOutcome>('error') : this.#tick())).catch((err: unknown) => this.#onTickError(err));
      if (ctx.stopping) break;
      if (outcome === 'idle') await this.#sleep(ctx.pollMs);
      // After a TIMEOUT a late ack could pass for the next command's reply (acks carry no sequence number): wait one timeout.
      else if (outcome === 'error') await this.#sleep(this.#lastLinkCode === 'TIMEOUT' ? Math.max(ctx.pollMs, ctx.module.timeoutMs) : ctx.pollMs);
    }
  }

  /** Open, VfyPwd, ReadSysPara, reconcile. Caller holds the queue. */
  async #bringUp(): Promise<string> {
    const ctx = this.#ctx;
    try {
      await ctx.module.open();
      await ctx.module.vfyPwd(this.#password);
      const para = await ctx.module.readSysPara();
      ctx.librarySize = para.librarySize;
      const report = await reconcile(ctx);
      this.#lastReconcile = report;
      this.emit('reconciled', report);
      this.#lastLinkCode = '';
      ctx.awaitingLift = false;
      return `ready: ${ctx.pages?.size ?? 0} templates, library ${ctx.librarySize}`;
    } catch (err) {
      if (isDeviceError(err)) this.#lastLinkCode = err.code;
      throw err;
    }
  }

  #tick(): Promise<TickOutcome> {
    return identifyOnce(this.#ctx, {
      gate: this.#gate,
      requireLift: this.#requireLift,
      buckets: this.#buckets,
      heard: () => this.supervisor.alive(),
      lifted: () => this.emit('lifted'),
      badImage: (code) => this.emit('bad-image', code),
      noMatch: () => this.emit('no-match'),
      unknownPage: (page) => this.emit('unknown-page', page),
      repeat: (e) => this.emit('repeat', e),
      refused: (code) => this.emit('punch-refused', code),
      punch: (e) => this.emit('punch', e),
    });
  }

  #onTickError(err: unknown): TickOutcome {
    this.#lastLinkCode = isDeviceError(err) ? err.code : '';
    const kind = this.supervisor.fault(err, classifyR30x(err));
    // Anything else (an unexpected confirmation code): log, keep going.
    if (kind === 'ignore') this.#ctx.log.warn({ event: 'm1_error', code: errCode(err) }, `fingerprint module: ${errCode(err)}`);
    return 'error';
  }

  /** Sleep, cut short by stop() or a status change. */
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

  // ------------------------------------------------------------------ reconciliation

  /** Reconcile now (normally done at every bring-up). */
  reconcile(): Promise<ReconcileReport> {
    return this.#ctx.queue.run(async () => {
      if (!this.supervisor.usable) throw new M1Error('MODULE_OFFLINE', `fingerprint module is ${this.status}`);
      const report = await reconcile(this.#ctx);
      this.#lastReconcile = report;
      this.emit('reconciled', report);
      return report;
    });
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
    const ctx = this.#ctx;
    const subject = await ctx.vault.getSubject(orgId, subjectId);
    assertBiometricConsent({
      minor: subject.minor,
      biometricAtMs: subject.consents.biometric?.grantedAtMs ?? null,
      guardianAtMs: subject.consents.guardian?.grantedAtMs ?? null,
    });
    let slot = opts.slot;
    if (slot === undefined) {
      const used = new Set((await ctx.vault.listTemplates(orgId, subjectId)).filter((t) => t.modality === 'fingerprint').map((t) => t.slot));
      slot = [...Array(MAX_SLOTS).keys()].find((s) => !used.has(s));
      if (slot === undefined) throw new M1Error('SLOTS_FULL', `the subject already has ${MAX_SLOTS} fingerprints enrolled; pass a slot to replace one`, { orgId });
    }
    const captures = opts.captures ?? this.#enrolCaptures;
    const timeoutMs = opts.timeoutMs ?? this.#enrolTimeoutMs;
    const finalSlot = slot;
    const hooks = { step: (s: EnrolStep) => this.emit('enrol-step', s) };
    return ctx.queue.run(async () => {
      if (ctx.stopping) throw new M1Error('ROLE_STOPPED', 'the M1 role is stopping');
      if (!this.supervisor.usable) throw new M1Error('MODULE_OFFLINE', `fingerprint module is ${this.status}`, { status: this.status });
      try {
        const result = await enrolLocked(ctx, hooks, orgId, subjectId, finalSlot, captures, timeoutMs);
        this.emit('enrolled', result);
        // The finger is still on the sensor: wait for the lift, so it is not taken for a punch.
        try {
          await waitFinger(ctx, hooks, false, { capture: captures, of: captures }, timeoutMs);
          ctx.awaitingLift = false;
        } catch (err) {
          if (!isTallyboxError(err, 'ENROL_TIMEOUT')) throw err;
          ctx.awaitingLift = true;
        }
        return result;
      } catch (err) {
        ctx.awaitingLift = true;
        // A link failure: the supervisor hears of it now, not at the loop's next command.
        if (isDeviceError(err)) this.supervisor.fault(err, classifyR30x(err));
        throw err;
      }
    });
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

  async #erase(inScope: (e: PageEntry) => boolean): Promise<ErasureReport> {
    let reconciledAway = 0;
    if (!this.supervisor.usable || this.#ctx.pages === null) {
      // Bring-up reconciles against the vault, which already dropped the scope: its pages go as orphans.
      const before = this.#ctx.stats.reconciles;
      await this.supervisor.attempt();
      if (!this.supervisor.usable) return { ok: false, counts: {}, detail: `fingerprint module unavailable: ${this.supervisor.detail}` };
      if (this.#ctx.stats.reconciles > before) reconciledAway = this.#lastReconcile?.deleted ?? 0;
    }
    return this.#ctx.queue.run(async (): Promise<ErasureReport> => {
      try {
        if (!this.supervisor.usable || this.#ctx.pages === null) throw new M1Error('MODULE_OFFLINE', `fingerprint module is ${this.status}`);
        return await eraseLocked(this.#ctx, inScope, reconciledAway);
      } catch (err) {
        if (isDeviceError(err)) this.supervisor.fault(err, classifyR30x(err));
        return { ok: false, counts: {}, detail: `fingerprint module unavailable: ${errCode(err)}` };
      }
    });
  }
}
