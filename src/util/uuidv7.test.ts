/**
 * The UUIDv7 layout (RFC 9562 §5.7) that uuidv7() and the outbox's event ids
 * (src/outbox/event-ids.ts) share. The random bytes are made predictable — the
 * one thing these tests are not about — so every byte can be compared with
 * what the code wrote before the layout was shared: ids already stored in an
 * outbox must read back the same.
 */
import { describe, expect, it, vi } from 'vitest';

vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  return {
    ...real,
    randomFillSync: <T extends NodeJS.ArrayBufferView>(buf: T): T => {
      const b = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
      for (let i = 0; i < b.length; i++) b[i] = (i * 37 + 11) & 0xff;
      return buf;
    },
  };
});

const { UUIDV7_RE, uuidv7 } = await import('./uuidv7.js');
const { eventIdFor, seqOfEventId } = await import('../outbox/event-ids.js');

const at = Date.UTC(2026, 11, 1, 22, 0, 0);
const salt = 0x9a3b_c4d5_e6f7;

describe('UUIDv7 layout', () => {
  it('uuidv7(): the same bytes as before for the same random bytes; time in the first 48 bits', () => {
    const ids = [uuidv7(at), uuidv7(at), uuidv7(0)];
    expect(ids).toEqual(GOLDEN_UUIDV7);
    for (const id of ids) expect(id).toMatch(UUIDV7_RE);
    expect(Number.parseInt(ids[0]!.replace(/-/g, '').slice(0, 12), 16)).toBe(at);
  });

  it('eventIdFor(): the same bytes as before for the same random bytes, and stored ids give back their seq', () => {
    const seqs = [1, 4242, 2 ** 32 + 7, 2 ** 48 - 1];
    const ids = seqs.map((seq) => eventIdFor(seq, at, salt));
    expect(ids).toEqual(GOLDEN_EVENT_IDS);
    for (const id of ids) expect(id).toMatch(UUIDV7_RE);
    expect(ids.map((id) => seqOfEventId(id, salt))).toEqual(seqs);
  });

  it('ids made (with real random bytes) before the layout was shared still parse', () => {
    // eventIdFor(seq, at, salt) from the code before, with node:crypto's random bytes.
    expect(seqOfEventId('01a2339f-2f00-7d38-974b-9a3bc4d5e6f6', salt)).toBe(1);
    expect(seqOfEventId('01a2339f-2f00-7709-a115-9a3bc4d5f665', salt)).toBe(4242);
    expect(seqOfEventId('01a2339f-2f00-770b-96dc-9a3ac4d5e6f0', salt)).toBe(2 ** 32 + 7);
    expect(seqOfEventId('01a2339f-2f00-7c45-917c-65c43b2a1908', salt)).toBe(2 ** 48 - 1);
  });
});

// Written by the code before the layout was shared (uuidv7.ts and event-ids.ts each had their own copy).
const GOLDEN_UUIDV7 = ['01a2339f-2f00-790e-b358-7da2c7ec1136', '01a2339f-2f00-795e-83a8-cdf2173c6186', '00000000-0000-79ae-93f8-1d42678cb1d6'];
const GOLDEN_EVENT_IDS = ['01a2339f-2f00-7b30-957a-9a3bc4d5e6f6', '01a2339f-2f00-7fc4-a90e-9a3bc4d5f665', '01a2339f-2f00-7358-bda2-9a3ac4d5e6f0', '01a2339f-2f00-77ec-9136-65c43b2a1908'];
