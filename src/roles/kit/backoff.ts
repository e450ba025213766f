/**
 * Reconnect delays with "full jitter": each delay is drawn uniformly from
 * [floor, min(max, min·2^attempt)], so a fleet of devices that lost the same
 * USB hub, or a module that reboots, are not retried in lock-step. Delays are
 * handed to setTimeout, which runs on the monotonic clock: a wall-clock step
 * neither shortens nor stretches them.
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  /** Lowest delay ever returned (default minMs / 2): full jitter could otherwise retry at once in a loop. */
  floorMs?: number;
  /** For tests: a deterministic source in [0, 1). */
  random?: () => number;
}

export class Backoff {
  readonly minMs: number;
  readonly maxMs: number;
  readonly #floor: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(opts: BackoffOptions) {
    this.minMs = Math.max(0, opts.minMs);
    this.maxMs = Math.max(this.minMs, opts.maxMs);
    this.#floor = Math.min(this.minMs, Math.max(0, opts.floorMs ?? this.minMs / 2));
    this.#random = opts.random ?? Math.random;
  }

  /** The ceiling of the next delay (before jitter). */
  get ceilingMs(): number {
    return Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.#attempt, 30));
  }

  /** The next delay, and one more attempt counted. */
  next(): number {
    const ceil = this.ceilingMs;
    this.#attempt++;
    return Math.round(this.#floor + this.#random() * Math.max(0, ceil - this.#floor));
  }

  reset(): void {
    this.#attempt = 0;
  }
}
