/**
 * Token bucket for backlog replay: after a long outage the queue drains at a
 * steady rate instead of flooding the site's uplink and the cloud. Rate 0
 * means unlimited.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number = Math.max(1, Math.ceil(ratePerSec / 10)),
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = this.burst;
    this.last = this.now();
  }

  /** Milliseconds to wait before one token is available (0: take it now). */
  take(): number {
    if (this.ratePerSec <= 0) return 0;
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.ratePerSec) / 1000);
    this.last = t;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) * 1000) / this.ratePerSec);
  }
}
