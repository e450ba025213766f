/**
 * Results of commands that were NOT accepted (anything that failed a check:
 * garbage, forgeries, replays, expired or misaddressed commands) leave
 * through this gate, so that a flood on a `cmd` topic cannot make the device
 * amplify it (issue 9 §3):
 *
 * - rate-limited by a token bucket on the monotonic clock (default 2 per
 *   second, bursts of 20); a result over the limit is never built, signed or
 *   queued — only counted;
 * - published only to an organisation the device serves (the caller resolves
 *   it; `undefined` means nowhere, counted);
 * - never written to disk: a rejection changed nothing, so there is nothing a
 *   power cut must not lose; held in a bounded in-memory queue (default 100)
 *   while the link is down, and what does not fit is dropped and counted.
 *
 * The counts are logged as one summary line at most every `summaryEveryMs`,
 * never one line per dropped message.
 */
import type { CommandResultProps } from '../../proto/index.js';
import type { Logger } from '../../util/log.js';

export interface RejectionGateOptions {
  /** Sustained results per second (default 2). 0 = none is ever sent. */
  ratePerSec?: number;
  /** Bucket size: results sent back to back before the rate applies (default 20). */
  burst?: number;
  /** Results held while they cannot be sent (default 100). */
  capacity?: number;
  /** Monotonic milliseconds (default performance.now). */
  mono?: () => number;
  /** Publish one result; rejects when it cannot be sent now (offline). */
  send: (orgId: string, result: CommandResultProps) => Promise<void>;
  logger: Logger;
  summaryEveryMs?: number;
  /** A send not done within this long counts as failed (default 10 s). */
  sendTimeoutMs?: number;
  /** After a failed send, try again this much later even without resume() (default 5 s). */
  retryMs?: number;
}

export interface RejectionGateStats {
  offered: number;
  sent: number;
  /** Over the rate limit: never built nor signed. */
  limited: number;
  /** Addressed to no served organisation. */
  unrouted: number;
  /** The queue was full. */
  overflow: number;
  queued: number;
}

export type OfferOutcome = 'queued' | 'limited' | 'unrouted' | 'overflow';

export class RejectionGate {
  private tokens: number;
  private last: number;
  private readonly queue: Array<{ orgId: string; result: CommandResultProps }> = [];
  private pumping = false;
  private paused = false;
  private readonly rate: number;
  private readonly burst: number;
  private readonly capacity: number;
  private readonly mono: () => number;
  private readonly counts = { offered: 0, sent: 0, limited: 0, unrouted: 0, overflow: 0 };
  private reported = { limited: 0, unrouted: 0, overflow: 0 };
  private summaryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: RejectionGateOptions) {
    this.rate = opts.ratePerSec ?? 2;
    this.burst = Math.max(1, opts.burst ?? 20);
    this.capacity = Math.max(1, opts.capacity ?? 100);
    this.mono = opts.mono ?? (() => performance.now());
    this.tokens = this.burst;
    this.last = this.mono();
  }

  /**
   * Offer a rejection's result. `build` (which may sign) runs only when the
   * result will really be queued.
   */
  offer(orgId: string | undefined, build: () => CommandResultProps): OfferOutcome {
    this.counts.offered++;
    if (orgId === undefined) return this.count('unrouted');
    if (this.closed || this.queue.length >= this.capacity) return this.count('overflow');
    if (!this.take()) return this.count('limited');
    this.queue.push({ orgId, result: build() });
    this.pump();
    return 'queued';
  }

  /** The link is up again: send what is held. */
  resume(): void {
    this.paused = false;
    this.pump();
  }

  stats(): RejectionGateStats {
    return { ...this.counts, queued: this.queue.length };
  }

  close(): void {
    this.closed = true;
    this.queue.length = 0;
    if (this.summaryTimer) clearTimeout(this.summaryTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.summaryTimer = undefined;
    this.retryTimer = undefined;
    this.summarise();
  }

  private take(): boolean {
    const now = this.mono();
    // A monotonic clock never goes back; guard anyway so a bad clock cannot mint tokens.
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed / 1000) * this.rate);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private count(what: 'limited' | 'unrouted' | 'overflow'): OfferOutcome {
    this.counts[what]++;
    if (!this.summaryTimer && !this.closed) {
      this.summaryTimer = setTimeout(() => {
        this.summaryTimer = undefined;
        this.summarise();
      }, this.opts.summaryEveryMs ?? 10_000);
      this.summaryTimer.unref();
    }
    return what;
  }

  private summarise(): void {
    const d = { limited: this.counts.limited - this.reported.limited, unrouted: this.counts.unrouted - this.reported.unrouted, overflow: this.counts.overflow - this.reported.overflow };
    if (d.limited + d.unrouted + d.overflow === 0) return;
    this.reported = { limited: this.counts.limited, unrouted: this.counts.unrouted, overflow: this.counts.overflow };
    this.opts.logger.warn(
      { event: 'command_rejections_suppressed', ...d },
      `results of ${d.limited + d.unrouted + d.overflow} rejected commands not sent (rate limit ${d.limited}, no served organisation ${d.unrouted}, queue full ${d.overflow})`,
    );
  }

  /** A publish that never completes (no PUBACK, a dead connection) must not stall the queue for good. */
  private sendWithTimeout(orgId: string, result: CommandResultProps): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('send timed out')), this.opts.sendTimeoutMs ?? 10_000);
      timer.unref();
    });
    return Promise.race([this.opts.send(orgId, result), timeout]).finally(() => clearTimeout(timer));
  }

  private pump(): void {
    if (this.pumping || this.paused) return;
    this.pumping = true;
    void (async () => {
      try {
        while (this.queue.length > 0 && !this.paused) {
          const head = this.queue[0]!;
          try {
            await this.sendWithTimeout(head.orgId, head.result);
          } catch {
            // Offline (or the publish failed): keep it at the head until resume(), or a retry a little later.
            this.paused = true;
            if (!this.retryTimer && !this.closed) {
              this.retryTimer = setTimeout(() => {
                this.retryTimer = undefined;
                this.resume();
              }, this.opts.retryMs ?? 5000);
              this.retryTimer.unref();
            }
            break;
          }
          this.queue.shift();
          this.counts.sent++;
        }
      } finally {
        this.pumping = false;
      }
    })();
  }
}
