/**
 * Event ids made by the outbox (src/outbox/event-ids.ts): valid UUIDv7s that
 * carry their seq under a salt, which is what lets idempotency go without an
 * index over every row (issue 10 §5).
 */
import { describe, expect, it } from 'vitest';
import { MAX_ID_SEQ, eventIdFor, newIdSalt, seqOfEventId } from '../../src/outbox/event-ids.js';
import { UUIDV7_RE } from '../../src/util/uuidv7.js';

describe('outbox event ids', () => {
  it('are UUIDv7s stamped with the time, and give back their seq under the same salt only', () => {
    const salt = newIdSalt();
    const at = Date.UTC(2026, 11, 1, 12, 0, 0);
    for (const seq of [1, 2, 255, 65_536, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 12_345, MAX_ID_SEQ]) {
      const id = eventIdFor(seq, at, salt);
      expect(id).toMatch(UUIDV7_RE);
      expect(Number.parseInt(id.replace(/-/g, '').slice(0, 12), 16)).toBe(at);
      expect(seqOfEventId(id, salt)).toBe(seq);
      expect(seqOfEventId(id, (salt + 1) % 2 ** 48)).not.toBe(seq);
    }
    expect(seqOfEventId('not-a-uuid', salt)).toBeUndefined();
    expect(seqOfEventId('0190c3c4-0000-4000-8000-000000000001', salt)).toBeUndefined(); // v4, not ours
  });

  it('differ for the same seq and time (random bits and salt), and the salt is 48 bits', () => {
    const salt = newIdSalt();
    const ids = new Set(Array.from({ length: 1000 }, () => eventIdFor(42, 1_700_000_000_000, salt)));
    // 26 random bits: a pair may collide by chance (p ≈ 0.7 % over 1,000), ten never in practice.
    expect(ids.size).toBeGreaterThan(990);
    const salts = Array.from({ length: 200 }, newIdSalt);
    for (const s of salts) expect(Number.isSafeInteger(s) && s >= 0 && s <= MAX_ID_SEQ).toBe(true);
    expect(new Set(salts).size).toBe(200);
    expect(eventIdFor(42, 1, salts[0]!)).not.toBe(eventIdFor(42, 1, salts[1]!));
  });
});
