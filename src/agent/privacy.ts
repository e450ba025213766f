/**
 * Opens the device's personal-data services: the vault (with its key
 * provider), the purge journal, and the purge pipeline with every
 * participant that holds personal data outside the vault (the outbox; device
 * roles add theirs). Also the three things that keep running around purges:
 * receipt delivery, the retry of failed purges and the retention sweep.
 */
import { hkdfSync } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Outbox } from '../outbox/outbox.js';
import { SerialQueue } from '../util/serial-queue.js';
import { outboxErasureParticipant } from '../outbox/erasure.js';
import { PURGE_JOURNAL_FILE, PurgeJournal, type QueuedReceipt } from '../privacy/journal.js';
import { Purger, type PurgeOutcome } from '../privacy/purge.js';
import { RetentionGuard, runRetention, type RetentionHold } from '../privacy/retention.js';
import type { SignedErasureReceipt } from '../privacy/receipt.js';
import { commandJournalErasureParticipant } from '../link/commands/erasure.js';
import { resultSigningBytes } from '../link/commands/result.js';
import { AlarmCode, ResultCode, type CommandResultProps } from '../proto/index.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { FileKeyProvider, SystemdCredentialsKeyProvider, DEFAULT_IDENTITY_FILE, type KeyProvider, type DeviceIdentity } from '../vault/keys.js';
import { Vault } from '../vault/vault.js';
import { windowErasureParticipant } from '../roles/c1/window-store.js';
import { spoolErasureParticipant } from '../roles/p1/withdraw.js';
import { resultFromJson, resultToJson } from './results.js';

export interface PrivacyServices {
  vault: Vault;
  purger: Purger;
  journal: PurgeJournal;
  identity: DeviceIdentity;
  keyProvider: KeyProvider;
  /** Hear about every purge outcome (receipt queued or not). */
  onOutcome(fn: (o: PurgeOutcome, queued: QueuedReceipt | undefined) => void): void;
}

export function keyProviderFor(vault: NonNullable<Config['vault']>): KeyProvider {
  if (vault.keyProvider === 'systemd-credentials') return new SystemdCredentialsKeyProvider({});
  const kekPath = vault.kekFile!; // the schema requires it for the file provider
  return new FileKeyProvider({ kekPath, identityPath: vault.identityFile ?? join(dirname(kekPath), DEFAULT_IDENTITY_FILE) });
}

/** The root of the purge fingerprint keys: from the KEK, so it is never stored in the data directory. */
async function fingerprintRoot(keyProvider: KeyProvider, dataDir: string): Promise<Buffer> {
  const kek = await keyProvider.loadKek({ dataDir });
  try {
    return Buffer.from(hkdfSync('sha256', kek, Buffer.alloc(0), Buffer.from('tallybox.v1.purge-fingerprint-root', 'utf8'), 32));
  } finally {
    kek.fill(0);
  }
}

export async function openPrivacy(opts: { config: Config; outbox: Outbox; logger: Logger }): Promise<PrivacyServices | undefined> {
  const { config, outbox, logger } = opts;
  if (!config.vault) return undefined;
  const keyProvider = keyProviderFor(config.vault);
  const vault = await Vault.open({ dataDir: config.dataDir, keyProvider, logger: logger.child({ component: 'vault' }) });
  let journal: PurgeJournal;
  try {
    const root = await fingerprintRoot(keyProvider, config.dataDir);
    journal = await PurgeJournal.open({ path: join(config.dataDir, PURGE_JOURNAL_FILE), root });
    root.fill(0);
  } catch (err) {
    await vault.close().catch(() => undefined);
    throw err;
  }
  const listeners = new Set<(o: PurgeOutcome, q: QueuedReceipt | undefined) => void>();
  const purger = new Purger({
    store: vault,
    signer: vault.identity,
    deviceId: config.device.id,
    // The command journal's results and the C1 role's saved enrolment windows name subjects:
    // erased with them even when the intake or the role is not running.
    // So does the P1 spool (its print jobs): a purge resumed at start runs before the print role is attached.
    participants: [
      outboxErasureParticipant(outbox),
      commandJournalErasureParticipant(config.dataDir),
      ...(config.c1 ? [windowErasureParticipant(config.dataDir)] : []),
      ...(config.p1 ? [spoolErasureParticipant({ dataDir: config.dataDir, spoolDir: config.p1.spoolDir, logger: logger.child({ component: 'p1' }) })] : []),
    ],
    journal,
    onOutcome: (o, q) => listeners.forEach((fn) => fn(o, q)),
    logger: logger.child({ component: 'purge' }),
  });
  return { vault, purger, journal, identity: vault.identity, keyProvider, onOutcome: (fn) => listeners.add(fn) };
}

export async function closePrivacy(p: PrivacyServices): Promise<void> {
  await p.journal.close().catch(() => undefined);
  await p.vault.close();
}

/** A result carrying an erasure receipt, signed by the device (for purges not answered by a command result). */
export function receiptResult(opts: { deviceId: string; identity: DeviceIdentity; signed: SignedErasureReceipt; ok: boolean; reason: string }): CommandResultProps {
  const unsigned: CommandResultProps = {
    deviceId: opts.deviceId,
    counter: 0,
    code: opts.ok ? ResultCode.RESULT_CODE_OK : ResultCode.RESULT_CODE_FAILED,
    reason: opts.reason,
    atMs: Date.now(),
    receipt: Buffer.from(JSON.stringify(opts.signed), 'utf8'),
    keyId: opts.identity.keyId,
  };
  return { ...unsigned, signature: opts.identity.sign(resultSigningBytes(unsigned)) };
}

/** The receiptId inside a result's receipt, if it carries one. */
export function carriedReceiptId(r: Pick<CommandResultProps, 'receipt'>): string | undefined {
  if (!r.receipt || r.receipt.length === 0) return undefined;
  try {
    const signed = JSON.parse(Buffer.from(r.receipt).toString('utf8')) as SignedErasureReceipt;
    const id = (JSON.parse(signed.body) as { receiptId?: unknown }).receiptId;
    return typeof id === 'string' ? id : undefined;
  } catch {
    // Not a receipt this device wrote (a handler's free-form bytes): nothing to settle.
    return undefined;
  }
}

function reasonFor(r: QueuedReceipt): string {
  if (r.requestRef === 'local-purge') return 'local_purge';
  if (r.requestRef?.startsWith('retention:')) return 'retention';
  return r.resumed ? 'purge_resumed' : 'purge_complete';
}

/**
 * Moves receipts from the purge journal into the result queue, exactly once:
 * a receipt is settled (deleted from the journal) only after its result is
 * durably queued, and before queuing, the result queue is searched for it (a
 * crash between the two steps). Operations run one at a time.
 *
 * Receipts of purges started by a command (requestRef `cmd:N`) travel in the
 * command's own result; they are settled when that result is queued
 * (`settleCarried`). Only if that never happened (a crash) does the receipt
 * go out on its own, at the next start.
 */
export class ReceiptDelivery {
  private readonly queue = new SerialQueue();

  constructor(
    private readonly opts: {
      journal: PurgeJournal;
      outbox: Outbox;
      deviceId: string;
      identity: DeviceIdentity;
      /** Queue durably (and try to send). */
      enqueue: (orgId: string, r: CommandResultProps) => Promise<void>;
      logger: Logger;
    },
  ) {}

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  /** Receipt ids already in the result queue. */
  private async queuedIds(): Promise<Set<string>> {
    const ids = new Set<string>();
    for (const r of await this.opts.outbox.pendingResults(1_000_000)) {
      const id = carriedReceiptId(resultFromJson(r.body));
      if (id) ids.add(id);
    }
    return ids;
  }

  private async deliver(receipts: readonly QueuedReceipt[]): Promise<number> {
    if (receipts.length === 0) return 0;
    const queued = await this.queuedIds();
    let n = 0;
    for (const r of receipts) {
      if (!queued.has(r.receiptId)) {
        const signed = JSON.parse(r.signed) as SignedErasureReceipt;
        await this.opts.enqueue(r.orgId, receiptResult({ deviceId: this.opts.deviceId, identity: this.opts.identity, signed, ok: r.ok, reason: reasonFor(r) }));
        n++;
      }
      await this.opts.journal.settle(r.receiptId);
    }
    return n;
  }

  /** At start: everything the journal still holds, command receipts included (their command result never got queued). */
  flushAll(): Promise<number> {
    return this.serial(async () => this.deliver(await this.opts.journal.pendingReceipts()));
  }

  /** At run time, for a receipt just queued in the journal. */
  queued(r: QueuedReceipt): Promise<number> {
    // A fresh command purge answers in its command result; a resumed one's command has long been answered.
    if (!r.resumed && r.requestRef?.startsWith('cmd:')) return Promise.resolve(0);
    return this.serial(async () => {
      const still = (await this.opts.journal.pendingReceipts()).filter((x) => x.receiptId === r.receiptId);
      return this.deliver(still);
    });
  }

  /** A command result was queued: if it carries a receipt, the journal's copy is done. */
  settleCarried(r: CommandResultProps): Promise<void> {
    const id = carriedReceiptId(r);
    if (!id) return Promise.resolve();
    return this.serial(async () => {
      await this.opts.journal.settle(id);
    });
  }
}

export interface PurgeRetryStatus {
  pending: number;
  /** Wall-clock stamp of when purges started pending (for DeviceState). */
  sinceMs: number | undefined;
  lastProblem: string | undefined;
  nextRetryMs: number | undefined;
}

/**
 * Retries failed or unverified purges while the agent runs: exponential
 * backoff from `minMs` to `maxMs` on timers (monotonic), reset once nothing
 * is pending. Receipts of purges that complete on a retry are queued by the
 * pipeline itself (journal + ReceiptDelivery).
 */
export class PurgeRetry {
  private timer: NodeJS.Timeout | undefined;
  private delay: number;
  private stopped = false;
  private dueAtMono: number | undefined;
  private st: PurgeRetryStatus = { pending: 0, sinceMs: undefined, lastProblem: undefined, nextRetryMs: undefined };

  constructor(private readonly opts: { purger: Purger; minMs: number; maxMs: number; logger: Logger; onChange: () => void }) {
    this.delay = opts.minMs;
  }

  status(): PurgeRetryStatus {
    const left = this.dueAtMono === undefined ? undefined : Math.max(0, Math.round(this.dueAtMono - performance.now()));
    return { ...this.st, nextRetryMs: left };
  }

  /** Note an outcome (from any purge): a failure arms the timer. */
  noteOutcome(o: PurgeOutcome): void {
    if (!o.ok) this.st.lastProblem = o.receipt.problem;
    void this.refresh();
  }

  /** Re-count pending purges; arm or disarm the timer. */
  async refresh(): Promise<void> {
    if (this.stopped) return;
    let pending: number;
    try {
      pending = (await this.opts.purger.pending()).length;
    } catch (err) {
      this.opts.logger.warn({ event: 'purge_pending_unknown', err: errorMessage(err) }, 'could not count pending purges');
      return;
    }
    const before = this.st.pending;
    this.st.pending = pending;
    if (pending === 0) {
      this.st.sinceMs = undefined;
      this.st.lastProblem = undefined;
      this.delay = this.opts.minMs;
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.dueAtMono = undefined;
    } else {
      this.st.sinceMs ??= Date.now();
      if (!this.timer) this.arm();
    }
    if (before !== pending) this.opts.onChange();
  }

  private arm(): void {
    const ms = this.delay;
    this.dueAtMono = performance.now() + ms;
    this.timer = setTimeout(() => void this.run(), ms);
    this.timer.unref();
  }

  private async run(): Promise<void> {
    this.timer = undefined;
    this.dueAtMono = undefined;
    if (this.stopped) return;
    try {
      const outcomes = await this.opts.purger.resumePending();
      const failed = outcomes.filter((o) => !o.ok);
      if (failed.length > 0) this.st.lastProblem = failed[0]!.receipt.problem;
      this.opts.logger.info({ event: 'purge_retry', resumed: outcomes.length, failed: failed.length }, `purge retry: ${outcomes.length - failed.length} of ${outcomes.length} completed`);
    } catch (err) {
      this.opts.logger.error({ event: 'purge_retry_failed', err: errorMessage(err) }, `purge retry failed: ${errorMessage(err)}`);
    }
    this.delay = Math.min(this.opts.maxMs, this.delay * 2);
    await this.refresh();
    this.opts.onChange();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

export interface RetentionSchedule {
  stop(): void;
  /** The candidate set waiting for confirmation, if any. */
  hold(): RetentionHold | undefined;
}

/** Daily retention sweep on a synchronised clock; each purge's receipt is queued by the pipeline. */
export function scheduleRetention(opts: {
  services: PrivacyServices;
  periodDays: () => number;
  clockSynced: () => boolean;
  guard: RetentionGuard;
  logger: Logger;
  onChange: () => void;
  everyMs?: number;
  firstMs?: number;
}): RetentionSchedule {
  let confirmTimer: NodeJS.Timeout | undefined;
  const sweep = async (): Promise<void> => {
    try {
      const heldBefore = opts.guard.hold;
      const run = await runRetention({ source: opts.services.vault, purger: opts.services.purger, periodDays: opts.periodDays(), clockSynced: opts.clockSynced(), guard: opts.guard });
      if (run.status === 'skipped') opts.logger.warn({ event: 'retention_skipped', reason: run.reason }, 'retention skipped: the clock is not synchronised (nothing is erased on an untrusted clock)');
      if (run.status === 'held') {
        opts.logger.warn(
          { event: 'retention_held', candidates: run.candidates, total: run.total, maxFraction: opts.guard.maxFraction },
          `retention: ${run.candidates} of ${run.total} templates are past the period, more than one run may erase; waiting for a later run to confirm`,
        );
        // The confirming run comes as soon as it may, not a day later.
        if (!confirmTimer && !heldBefore) {
          confirmTimer = setTimeout(() => {
            confirmTimer = undefined;
            void sweep();
          }, opts.guard.confirmAfterMs + 1000);
          confirmTimer.unref();
        }
      }
      if (run.status === 'erased' && run.outcomes.length > 0) opts.logger.info({ event: 'retention_erased', purges: run.outcomes.length, confirmed: run.confirmed }, 'retention erased stale templates');
    } catch (err) {
      opts.logger.error({ event: 'retention_failed', err: errorMessage(err) }, `retention sweep failed: ${errorMessage(err)}`);
    }
    opts.onChange();
  };
  const first = setTimeout(() => void sweep(), opts.firstMs ?? 60_000);
  const timer = setInterval(() => void sweep(), opts.everyMs ?? 24 * 3600_000);
  first.unref();
  timer.unref();
  return {
    stop: () => {
      clearTimeout(first);
      clearInterval(timer);
      if (confirmTimer) clearTimeout(confirmTimer);
    },
    hold: () => opts.guard.hold,
  };
}

export { resultToJson };

/** What the agent runs around purges once started; its status goes into DeviceState. */
export interface PrivacyRuntime {
  stop(): void;
  purgesPending(): number;
  alarms(nowMs: number): Array<{ code: AlarmCode; detail: string; sinceMs: number }>;
  /** Call after a command result has been durably queued: a receipt it carries is settled in the journal. */
  settleCarried(r: CommandResultProps): Promise<void>;
  /** Purges a power cut had interrupted, finished at this start (the command journal names them in `interrupted` results). */
  readonly resumed: readonly PurgeOutcome[];
}

/**
 * Before the agent connects: finish purges a power cut interrupted, queue
 * every receipt the journal still holds, arm the retry of failed purges and
 * schedule retention.
 */
export async function startPrivacyRuntime(opts: {
  services: PrivacyServices;
  config: Config;
  outbox: Outbox;
  enqueue: (orgId: string, r: CommandResultProps) => Promise<void>;
  retentionDays: () => number;
  clockSynced: () => boolean;
  logger: Logger;
  onChange: () => void;
}): Promise<PrivacyRuntime> {
  const { services, config, logger } = opts;
  const p = config.privacy;
  const delivery = new ReceiptDelivery({ journal: services.journal, outbox: opts.outbox, deviceId: config.device.id, identity: services.identity, enqueue: opts.enqueue, logger });
  const retry = new PurgeRetry({ purger: services.purger, minMs: p.purgeRetryMinSec * 1000, maxMs: Math.max(p.purgeRetryMinSec, p.purgeRetryMaxSec) * 1000, logger: logger.child({ component: 'purge' }), onChange: opts.onChange });
  const deliverLogged = (q: QueuedReceipt): void => {
    delivery.queued(q).catch((err: unknown) => logger.error({ event: 'receipt_queue_failed', err: errorMessage(err) }, `erasure receipt not queued yet (kept in the purge journal): ${errorMessage(err)}`));
  };
  services.onOutcome((o, q) => {
    if (q) deliverLogged(q);
    retry.noteOutcome(o);
  });
  const resumed = await services.purger.resumePending();
  const n = await delivery.flushAll();
  if (n > 0) logger.info({ event: 'receipts_recovered', count: n }, `${n} erasure receipt(s) from before the restart queued for the cloud`);
  await retry.refresh();
  const guard = new RetentionGuard({ maxFraction: p.retentionMaxFraction, confirmAfterMs: p.retentionConfirmHours * 3600_000 });
  const retention = scheduleRetention({ services, periodDays: opts.retentionDays, clockSynced: opts.clockSynced, guard, logger, onChange: opts.onChange });
  return {
    stop: () => {
      retry.stop();
      retention.stop();
    },
    purgesPending: () => retry.status().pending,
    alarms: (nowMs) => {
      const out: Array<{ code: AlarmCode; detail: string; sinceMs: number }> = [];
      const r = retry.status();
      if (r.pending > 0) {
        const next = r.nextRetryMs === undefined ? 'now' : `in ${Math.ceil(r.nextRetryMs / 1000)} s`;
        out.push({ code: AlarmCode.ALARM_CODE_PURGE_INCOMPLETE, detail: `${r.pending} purge(s) not verified complete (${r.lastProblem ?? 'interrupted'}); retrying ${next}`, sinceMs: r.sinceMs ?? nowMs });
      }
      const h = retention.hold();
      if (h) {
        out.push({
          code: AlarmCode.ALARM_CODE_RETENTION_HELD,
          detail: `${h.templates} of ${h.total} templates are past the retention period, more than ${Math.round(guard.maxFraction * 100)}% in one run; erased only if a run at least ${p.retentionConfirmHours} h later confirms`,
          sinceMs: h.sinceMs,
        });
      }
      return out;
    },
    settleCarried: (r) => delivery.settleCarried(r),
    resumed,
  };
}
