import { describe, expect, it } from 'vitest';
import { LinkStateMachine, backoffDelay } from '../../src/link/state-machine.js';
import { TokenBucket } from '../../src/outbox/rate-limiter.js';

describe('link state machine', () => {
  it('allows the connection lifecycle and records every transition', () => {
    const seen: string[] = [];
    const sm = new LinkStateMachine((from, to) => seen.push(`${from}>${to}`));
    for (const s of ['connecting', 'backoff', 'connecting', 'online', 'backoff', 'connecting', 'online', 'closing', 'closed'] as const) sm.to(s);
    expect(seen).toHaveLength(9);
    expect(sm.state).toBe('closed');
  });

  it('throws on an illegal transition and stays where it was', () => {
    const sm = new LinkStateMachine();
    expect(() => sm.to('online')).toThrow(/illegal link transition idle → online/);
    expect(sm.state).toBe('idle');
    sm.to('closing');
    sm.to('closed');
    expect(() => sm.to('connecting')).toThrow(/closed → connecting/);
  });
});

describe('full-jitter backoff', () => {
  it('stays within [min, min(max, min·2^attempt)] and spreads out', () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      for (const r of [0, 0.5, 0.999]) {
        const d = backoffDelay(attempt, 500, 60_000, () => r);
        expect(d).toBeGreaterThanOrEqual(500);
        expect(d).toBeLessThanOrEqual(Math.min(60_000, 500 * 2 ** attempt));
      }
    }
    const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(10, 500, 60_000)));
    expect(spread.size).toBeGreaterThan(40); // jitter: devices after a shared outage do not reconnect in lockstep
  });
});

describe('backlog token bucket', () => {
  it('lets a burst through, then paces at the configured rate', () => {
    let now = 0;
    const b = new TokenBucket(100, 10, () => now);
    for (let i = 0; i < 10; i++) expect(b.take()).toBe(0);
    expect(b.take()).toBe(10); // the 11th waits one token's time: 10 ms at 100/s
    expect(b.take()).toBe(20); // and its token is reserved: the 12th waits two
    now += 20;
    expect(b.take()).toBe(10);
    now += 1000;
    let free = 0;
    while (b.take() === 0) free++;
    expect(free).toBe(10); // refills to the burst only, not to a second's worth
  });

  it('rate 0 means unlimited', () => {
    const b = new TokenBucket(0);
    for (let i = 0; i < 1000; i++) expect(b.take()).toBe(0);
  });
});
