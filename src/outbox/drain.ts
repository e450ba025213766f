/**
 * Moves committed punches from the outbox to the broker, oldest first, with a
 * window of QoS 1 messages in flight; a row is deleted only on its PUBACK.
 *
 * Each connection gets its own pass starting from the oldest row: whatever was
 * in flight when a connection died is simply sent again (same event id; the
 * cloud de-duplicates). Rows accepted before the connection came up are
 * backlog: flagged historical and rate-limited.
 */
import type { EgressGate } from '../link/egress.js';
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

export class Drain {
  private generation = 0;
  private wake: (() => void) | undefined;
  /** Set by a commit that happened while no one was sleeping, so it is not missed. */
  private dirty = false;
  private readonly stats: DrainStats = { delivered: 0, historical: 0, inflight: 0 };
  private readonly unsubscribe: () => void;
  private watchdog: NodeJS.Timeout | undefined;
  /** publish start time of every message in flight in the current pass */
  private readonly inflightSince = new Map<number, number>();
  /** The current pass's limiter, so a rate change applies to the pass already running. */
  private bucket: TokenBucket | undefined;

  constructor(private readonly opts: DrainOptions) {
    this.unsubscribe = opts.outbox.onCommitted(() => this.poke());
  }

  get snapshot(): Readonly<DrainStats> {
    return { ...this.stats, inflight: this.inflightSince.size };
  }

  online(session: Session): void {
    const gen = ++this.generation;
    this.inflightSince.clear();
    this.watchdog ??= setInterval(() => this.checkAcks(), 1000);
    void this.pass(session, gen).catch((err: unknown) => {
      this.opts.logger.error({ event: 'drain_failed', err: errorMessage(err) }, `drain stopped: ${errorMessage(err)}; recycling the link`);
      if (gen === this.generation) this.opts.recycle('drain failed');
    });
  }

  /** Backlog replay rate from now on, including the pass in progress (ConfigPatch backlog_rate_per_sec). */
  setBacklogRatePerSec(ratePerSec: number): void {
    this.opts.backlogRatePerSec = ratePerSec;
    this.bucket?.setRate(ratePerSec);
  }

  get backlogRatePerSec(): number {
    return this.opts.backlogRatePerSec;
  }

  offline(): void {
    this.generation++;
    this.inflightSince.clear();
    this.poke();
  }

  stop(): void {
    this.generation++;
    this.unsubscribe();
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
    this.poke();
  }

  private poke(): void {
    this.dirty = true;
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private sleep(ms: number): Promise<void> {
    if (this.dirty) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private checkAcks(): void {
    const oldest = Math.min(...this.inflightSince.values());
    if (Number.isFinite(oldest) && performance.now() - oldest > this.opts.ackTimeoutMs) {
      this.inflightSince.clear();
      this.opts.recycle(`no PUBACK for ${this.opts.ackTimeoutMs} ms`);
    }
  }

  private async pass(session: Session, gen: number): Promise<void> {
    const { outbox, egress, inflight: window } = this.opts;
    const bucket = new TokenBucket(this.opts.backlogRatePerSec);
    this.bucket = bucket;
    let cursor = 0;
    let inflight = 0;
    let slotFree: (() => void) | undefined;
    const ctxLive = { bdSeq: session.bdSeq, historical: false };
    const ctxHistorical = { bdSeq: session.bdSeq, historical: true };

    while (gen === this.generation) {
      this.dirty = false;
      const rows = await outbox.peek(cursor, this.opts.batch);
      if (rows.length === 0) {
        await this.sleep(1000);
        continue;
      }
      for (const row of rows) {
        if (gen !== this.generation) return;
        while (inflight >= window) {
          await new Promise<void>((r) => (slotFree = r));
          if (gen !== this.generation) return;
        }
        const historical = row.acceptedAtMs < session.connectedAtMs;
        if (historical) {
          const wait = bucket.take();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          if (gen !== this.generation) return;
        }
        inflight++;
        this.inflightSince.set(row.seq, performance.now());
        egress.publishPunch(session.client, row, historical ? ctxHistorical : ctxLive).then(
          () => {
            outbox.ack(row.seq);
            this.stats.delivered++;
            if (historical) this.stats.historical++;
            this.opts.onDelivered?.(1);
          },
          (err: unknown) => {
            if (gen === this.generation) this.opts.recycle(`publish failed: ${errorMessage(err)}`);
          },
        ).finally(() => {
          inflight--;
          if (gen === this.generation) this.inflightSince.delete(row.seq);
          const s = slotFree;
          slotFree = undefined;
          s?.();
        });
        cursor = row.seq;
      }
    }
  }
}
