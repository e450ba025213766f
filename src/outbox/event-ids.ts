/**
 * Event ids the outbox makes for punches whose caller supplied none: UUIDv7s
 * (RFC 9562 §5.7: 48-bit Unix ms timestamp, version 7, variant, 74 bits the
 * generator chooses) whose last 48 bits are the punch's sequence number XOR a
 * random salt kept in the outbox file (meta 'id_salt'), the other 26 random.
 *
 * Why (issue 10 §5): an id made this way is unique within the outbox by
 * construction (no two rows share a seq), so idempotency needs no index over
 * every row — the drain's deletes and the accepts no longer maintain one. Only
 * ids a caller supplied (a retry may repeat them) are indexed (a partial
 * index), and a supplied id equal to one made here is found through its seq:
 * `seqOfEventId` reverses the XOR and the row is looked up by primary key.
 * Across devices the salt keeps ids as unpredictable as random UUIDv7s (two
 * devices collide only if salt⊕seq and the 26 random bits all match).
 */
import { randomFillSync, randomInt } from 'node:crypto';
import { formatUuid, stampUuidv7 } from '../util/uuidv7.js';

const TWO32 = 2 ** 32;
/** Largest seq an id can carry (48 bits); above it the outbox supplies a random UUIDv7 and indexes it. */
export const MAX_ID_SEQ = 2 ** 48 - 1;

/** A new salt: 48 random bits. */
export function newIdSalt(): number {
  return randomInt(0, 2 ** 24) * 2 ** 24 + randomInt(0, 2 ** 24);
}

/** 48-bit XOR (JS bit operators are 32-bit). */
function xor48(a: number, b: number): number {
  const hi = (Math.floor(a / TWO32) ^ Math.floor(b / TWO32)) & 0xffff;
  const lo = ((a >>> 0) ^ (b >>> 0)) >>> 0;
  return hi * TWO32 + lo;
}

const rnd = Buffer.alloc(4 * 256);
let rndOffset = rnd.length;

/** The id for the row numbered `seq` (1 ≤ seq ≤ MAX_ID_SEQ), stamped with `nowMs`. */
export function eventIdFor(seq: number, nowMs: number, salt: number): string {
  if (rndOffset + 4 > rnd.length) {
    randomFillSync(rnd);
    rndOffset = 0;
  }
  const b = Buffer.allocUnsafe(16);
  // 26 random bits: bytes 6-9 less the version and variant bits stampUuidv7 writes over them.
  rnd.copy(b, 6, rndOffset, rndOffset + 4);
  rndOffset += 4;
  const v = xor48(seq, salt);
  b.writeUInt16BE(Math.floor(v / TWO32), 10);
  b.writeUInt32BE(v >>> 0, 12);
  stampUuidv7(b, nowMs);
  return formatUuid(b);
}

const ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-([0-9a-f]{12})$/;

/** The seq an id made by eventIdFor with this salt would carry; undefined when `id` cannot be one. */
export function seqOfEventId(id: string, salt: number): number | undefined {
  const m = ID_RE.exec(id);
  if (!m) return undefined;
  const seq = xor48(Number.parseInt(m[1]!, 16), salt);
  return seq >= 1 ? seq : undefined;
}
