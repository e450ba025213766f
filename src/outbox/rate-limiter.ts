/**
 * Token bucket for backlog replay: after a long outage the queue drains at a
 * steady rate instead of flooding the site's uplink and the cloud. Rate 0
 * means unlimited.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private ratePerSec: number,
    private burst: number = Math.max(1, Math.ceil(ratePerSec / 10)),
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = this.burst;
    this.last = this.now();
  }

  /** Change the rate from now on (a ConfigPatch); the burst follows the default rule. */
  setRate(ratePerSec: number): void {
    const t = this.now();
    // Settle the balance earned at the old rate up to now, then continue at the new one.
    if (this.ratePerSec > 0) this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.ratePerSec) / 1000);
    this.last = t;
    this.ratePerSec = ratePerSec;
    this.burst = Math.max(1, Math.ceil(ratePerSec / 10));
    this.tokens = Math.min(this.tokens, this.burst);
  }

  /**
   * Take one token: returns 0 to go now, or the milliseconds to wait first.
   * The token is reserved either way (the balance may go negative), so a
   * caller that waits the returned time and then sends keeps the rate.
   */
  take(): number {
    if (this.ratePerSec <= 0) return 0;
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.ratePerSec) / 1000);
    this.last = t;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.ratePerSec);
  }
}
