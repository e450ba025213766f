/**
 * UUIDv7 (RFC 9562 §5.7): 48-bit Unix ms timestamp, version 7, 74 random bits.
 * Time-ordered, so event ids sort roughly by creation and index well.
 * node:crypto has randomUUID (v4) only; this is the 10 lines it takes.
 *
 * The layout (`stampUuidv7`, `formatUuid`) is shared with the outbox's event
 * ids (src/outbox/event-ids.ts), which choose their own 74 bits.
 */
import { randomFillSync } from 'node:crypto';

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const pool = Buffer.alloc(16 * 256);
let poolOffset = pool.length;

export function uuidv7(nowMs: number = Date.now()): string {
  if (poolOffset + 16 > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const b = pool.subarray(poolOffset, poolOffset + 16);
  poolOffset += 16;
  stampUuidv7(b, nowMs);
  return formatUuid(b);
}

/**
 * Make the 16 bytes `b` a UUIDv7 stamped with `nowMs`: the timestamp into
 * bytes 0–5, the version over the high nibble of byte 6 and the variant over
 * the two high bits of byte 8. The other 74 bits stay as the caller put them.
 */
export function stampUuidv7(b: Uint8Array, nowMs: number): void {
  const ms = Math.max(0, Math.floor(nowMs));
  b[0] = Math.floor(ms / 2 ** 40) & 0xff;
  b[1] = Math.floor(ms / 2 ** 32) & 0xff;
  b[2] = (ms >>> 24) & 0xff;
  b[3] = (ms >>> 16) & 0xff;
  b[4] = (ms >>> 8) & 0xff;
  b[5] = ms & 0xff;
  b[6] = 0x70 | (b[6]! & 0x0f);
  b[8] = 0x80 | (b[8]! & 0x3f);
}

/** The 16 bytes `b` as a UUID string: lower-case hex, 8-4-4-4-12. */
export function formatUuid(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < 16; i++) {
    s += HEX[b[i]!]!;
    if (i === 3 || i === 5 || i === 7 || i === 9) s += '-';
  }
  return s;
}

export const UUIDV7_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
