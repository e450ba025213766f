/**
 * Moves committed punches from the outbox to the broker, oldest first, with a
 * window of QoS 1 messages in flight; a row is deleted only on its PUBACK.
 *
 * Each connection gets its own pass starting from the oldest row: whatever was
 * in flight when a connection died is simply sent again (same event id; the
 * cloud de-duplicates). Rows accepted before the connection came up are
 * backlog: flagged historical and rate-limited. "Before" is a sequence
 * watermark (the outbox's last seq when the connection came up), not a
 * wall-clock comparison: the device clock may be stepped at any time.
 *
 * When the outbox fails (corruption, I/O error), the drain stops: it does not
 * recycle the link over and over; the outbox's STORAGE_ERROR alarm says why.
 */
import type { EgressGate, EncodedPunches } from '../link/egress.js';
import type { Session } from '../link/connection.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { Outbox } from './outbox.js';
import { TokenBucket } from './rate-limiter.js';

export interface DrainOptions {
  outbox: Outbox;
  egress: EgressGate;
  logger: Logger;
  /** Ask the link to drop and re-establish the connection. */
  recycle: (reason: string) => void;
  inflight: number;
  batch: number;
  backlogRatePerSec: number;
  /** No PUBACK for this long on the oldest message in flight: the link is dead (default 3 × keepalive, min 10 s). */
  ackTimeoutMs: number;
  onDelivered?: (n: number) => void;
}

export interface DrainStats {
  delivered: number;
  historical: number;
  inflight: number;
}

/**
 * An idle pass looks at the outbox again after this long even if no commit woke
 * it. Every commit that adds rows wakes it at once (onCommitted), so this is only
 * a safety net; at 1 s it cost one empty SQLite read per live punch and ≈ 70 % of
 * an idle agent's CPU (measured in the fleet: 0.27 → 0.08 ms/s at 30 s).
 */
const IDLE_RECHECK_MS = 30_000;

/**
 * How a pass runs (issue 10 §5, "drain at the client's speed"): like a bare
 * client's publish loop — PUBACKs free slots that are refilled at once, no
 * await per message, one socket write per event-loop turn — fed from a buffer that is refilled from SQLite in the
 * background while half a batch is still unsent, so the window never waits
 * for a read. Reads go through the outbox's own read connection and never
 * queue behind commits or deletes.
 */
export class Drain {
  private generation = 0;
  /** Wakes an idle pass (all sent, all acknowledged, nothing new). */
  private wake: (() => void) | undefined;
  /** Set by a commit; a fetch that started before it looks again. */
  private dirty = false;
  private readonly stats: DrainStats = { delivered: 0, historical: 0, inflight: 0 };
  private readonly unsubscribe: () => void;
  private watchdog: NodeJS.Timeout | undefined;
  private inflight = 0;
  /** PUBACKs seen; the watchdog compares it with the last check. */
  private acks = 0;
  private lastAcks = 0;
  private lastProgressAt = performance.now();
  private stoppedForStorage = false;
  /** The current pass's limiter, so a rate change applies to the pass already running. */
  private bucket: TokenBucket | undefined;

  constructor(private readonly opts: DrainOptions) {
    this.unsubscribe = opts.outbox.onCommitted(() => this.poke());
  }

  get snapshot(): Readonly<DrainStats> {
    return { ...this.stats, inflight: this.inflight };
  }

  online(session: Session): void {
    const gen = ++this.generation;
    this.inflight = 0;
    if (this.storageFailed()) return;
    this.lastProgressAt = performance.now();
    this.watchdog ??= setInterval(() => this.checkAcks(), 1000);
    // Everything accepted up to now is backlog for this connection.
    const watermark = this.opts.outbox.lastSeq;
    this.pass(session, gen, watermark);
  }

  offline(): void {
    this.generation++;
    this.inflight = 0;
    this.poke();
  }

  /** Backlog replay rate from now on, including the pass in progress (ConfigPatch backlog_rate_per_sec). */
  setBacklogRatePerSec(ratePerSec: number): void {
    this.opts.backlogRatePerSec = ratePerSec;
    this.bucket?.setRate(ratePerSec);
  }

  get backlogRatePerSec(): number {
    return this.opts.backlogRatePerSec;
  }

  stop(): void {
    this.generation++;
    this.unsubscribe();
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
    this.poke();
  }

  /** The outbox cannot be read any more: stop (once, with one log line) instead of reconnecting forever. */
  private storageFailed(): boolean {
    const f = this.opts.outbox.failed;
    if (!f) return false;
    if (!this.stoppedForStorage) {
      this.stoppedForStorage = true;
      this.opts.logger.error({ event: 'drain_stopped', err: f.message }, 'drain stopped: the outbox failed (STORAGE_ERROR); queued punches stay on disk');
    }
    return true;
  }

  private poke(): void {
    this.dirty = true;
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Messages in flight and no PUBACK for ackTimeoutMs: the link is dead. */
  private checkAcks(): void {
    const now = performance.now();
    if (this.acks !== this.lastAcks || this.inflight === 0) {
      this.lastAcks = this.acks;
      this.lastProgressAt = now;
      return;
    }
    if (now - this.lastProgressAt > this.opts.ackTimeoutMs) {
      this.lastProgressAt = now;
      this.opts.recycle(`no PUBACK for ${this.opts.ackTimeoutMs} ms`);
    }
  }

  private pass(session: Session, gen: number, watermark: number): void {
    const { outbox, egress, inflight: window, batch, logger } = this.opts;
    const bucket = new TokenBucket(this.opts.backlogRatePerSec);
    this.bucket = bucket;
    // Read per row: a ConfigPatch may set or change the rate while this pass runs.
    const limited = (): boolean => this.opts.backlogRatePerSec > 0;
    const ctx = { bdSeq: session.bdSeq, historicalUpTo: watermark };
    /** Batches read and not wholly sent, oldest first; `head` indexes into the first. */
    const queue: { enc: EncodedPunches; seqs: Float64Array }[] = [];
    let head = 0;
    /** Read and not yet sent, over every batch in the queue. */
    let unsent = 0;
    /** Last seq read from the outbox in this pass. */
    let cursor = 0;
    let fetching = false;
    /** The last read found nothing newer. */
    let exhausted = false;
    /** A token was taken for the next punch and its wait is running or over. */
    let tokenHeld = false;
    let rateTimer: NodeJS.Timeout | undefined;
    let idleTimer: NodeJS.Timeout | undefined;
    const live = () => gen === this.generation;

    const failed = (err: unknown): void => {
      if (!live() || this.storageFailed()) return;
      logger.error({ event: 'drain_failed', err: errorMessage(err) }, `drain stopped: ${errorMessage(err)}; recycling the link`);
      this.opts.recycle('drain failed');
    };

    const fetch = (): void => {
      if (fetching || !live()) return;
      fetching = true;
      this.dirty = false;
      outbox.peekRecords(cursor, batch).then((recs) => {
        fetching = false;
        if (!live()) return;
        if (recs) {
          cursor = recs.lastSeq;
          // Encoded as read (one buffer per batch): the pump then only hands slices to mqtt.js.
          queue.push({ enc: egress.encodeRecords(recs, ctx), seqs: recs.seqs });
          unsent += recs.count;
          exhausted = false;
        } else if (this.dirty) {
          return fetch(); // a commit landed while this read ran
        } else {
          exhausted = true;
        }
        pump();
      }, failed);
    };

    // Slots freed by PUBACKs are refilled once per event-loop turn, not once per PUBACK:
    // the publishes of one turn leave in one socket write (mqtt-packet corks the stream
    // until the next tick), instead of one writev per message.
    let pumpQueued = false;
    const runPump = (): void => {
      pumpQueued = false;
      pump();
    };
    const onAck = (seq: number): void => {
      this.acks++;
      outbox.ack(seq);
      this.stats.delivered++;
      if (seq <= watermark) this.stats.historical++;
      this.opts.onDelivered?.(1);
      if (!live()) return;
      this.inflight--;
      if (!pumpQueued) {
        pumpQueued = true;
        setImmediate(runPump);
      }
    };
    const onPublishError = (err: unknown): void => {
      if (live()) this.opts.recycle(`publish failed: ${errorMessage(err)}`);
    };

    const pump = (): void => {
      while (this.inflight < window && unsent > 0 && live()) {
        const b = queue[0]!;
        const seq = b.seqs[head]!;
        if (seq <= watermark && limited() && !tokenHeld) {
          const wait = bucket.take();
          if (wait > 0) {
            tokenHeld = true;
            rateTimer ??= setTimeout(() => {
              rateTimer = undefined;
              pump();
            }, wait);
            return;
          }
        }
        if (rateTimer) return; // still waiting for the token of the next punch
        tokenHeld = false;
        const i = head++;
        unsent--;
        if (head === b.seqs.length) {
          queue.shift();
          head = 0;
        }
        this.inflight++;
        egress.publishEncoded(session.client, b.enc, i, (err) => (err ? onPublishError(err) : onAck(seq)));
      }
      if (!live()) return;
      // Refill while half a batch is still unsent, so the window never waits on a read.
      if (unsent < batch / 2 && !exhausted) fetch();
      else if (unsent === 0 && exhausted) idle();
    };

    /** Everything read was sent: sleep until a commit (or IDLE_RECHECK_MS passes), then look again. */
    const idle = (): void => {
      // After a backlog, acknowledged rows go now rather than on the ack timer (the queue's depth is
      // true at once); single live punches keep sharing the timer's delete transaction.
      if (this.inflight === 0 && outbox.pendingAcks >= 64) void outbox.flushAcks().catch(() => undefined); // a failed flush re-arms its own retry
      if (this.wake || fetching) return;
      const again = (): void => {
        if (idleTimer) clearTimeout(idleTimer);
        idleTimer = undefined;
        this.wake = undefined;
        if (!live()) return;
        exhausted = false;
        fetch();
      };
      this.wake = again;
      idleTimer = setTimeout(again, IDLE_RECHECK_MS);
      if (this.dirty) again();
    };

    fetch();
  }
}
