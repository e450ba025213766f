/**
 * Issue 8 §1 (ConfigPatch backlog_rate_per_sec): the token bucket of a
 * running drain pass takes a new rate at once, with a fake monotonic clock.
 */
import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../src/outbox/rate-limiter.js';

describe('TokenBucket.setRate', () => {
  it('from unlimited to 10/s: the next takes wait; back to a high rate: they stop waiting', () => {
    let now = 0;
    const b = new TokenBucket(0, undefined, () => now);
    for (let i = 0; i < 100; i++) expect(b.take()).toBe(0);
    b.setRate(10);
    const waits = Array.from({ length: 5 }, () => b.take());
    expect(waits.slice(1).every((w) => w > 0)).toBe(true);
    expect(waits.at(-1)).toBeGreaterThanOrEqual(300); // ~100 ms per token at 10/s
    now += 1000;
    b.setRate(10_000);
    now += 10;
    expect(b.take()).toBe(0);
  });
});
