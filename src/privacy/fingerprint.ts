/**
 * Keyed fingerprints of erasure samples: what lets a purge that was cut short
 * by a crash verify as strongly as the first run, without keeping the sampled
 * bytes themselves.
 *
 * A sample (a fragment of a ciphertext, wrapped key, lookup HMAC or subject
 * id) is kept only as
 *   - window fingerprints: PRF(8 bytes of the sample at k = 0..7), the windows
 *     the scan can meet at an 8-aligned file offset (4 bytes at k = 0..3 and
 *     4-aligned offsets for samples under 15 bytes), and
 *   - a confirmation tag over the whole sample (16 bytes): CBC-MAC under its
 *     own AES key of the length-prefixed sample (prefix-free, so secure for
 *     variable lengths), computed for all samples in a few bulk passes,
 * all under a per-job key. The PRF is AES-128 of the window padded to one
 * block, so the scan can fingerprint every aligned window of a file with one
 * bulk ECB pass (hundreds of MB/s) instead of one HMAC per offset.
 *
 * Without the key these values say nothing about the sample. The key is never
 * stored: it is derived (HKDF) from a root the caller supplies (the agent
 * derives it from the device KEK, which lives outside the data directory) and
 * a random per-job salt that is stored with the fingerprints. A check tag
 * detects a wrong key (a re-provisioned device), so a key mismatch can never
 * read as "nothing found".
 */
import { createCipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { TallyboxError } from '../util/errors.js';
import type { ErasureSample, SampleLabel } from './types.js';

export const WINDOW = 8;
/** Shortest sample whose every occurrence holds an 8-aligned 8-byte window: k in 0..7 plus 8 bytes. */
export const ALIGNED_MIN = 2 * WINDOW - 1;
/** Shorter samples are indexed by 4-byte windows at 4-aligned offsets (k in 0..3: any sample of >= 7 bytes). */
export const SHORT_WINDOW = 4;
export const MIN_SAMPLE_BYTES = WINDOW;
const TAG = 16;
const LABELS: readonly SampleLabel[] = ['ciphertext', 'wrapped_key', 'lookup_hmac', 'subject_id'];
const MAGIC = Buffer.from('TBFP1', 'latin1');
const CHECK_INFO = Buffer.from('tallybox.v1.purge-fingerprint-check', 'utf8');

/** The two keys of one job. */
export interface FingerprintKey {
  /** Window PRF. */
  aes: Buffer;
  /** Confirmation tags (CBC-MAC). */
  tag: Buffer;
  /** Key check. */
  mac: Buffer;
}

/**
 * Fingerprints of many samples in flat arrays (no object per sample: tens of
 * thousands of them must be built in milliseconds). Entry e has
 * windowWidth(len[e]) windows, first[e] .. first[e + 1] - 1; window w starts
 * at offset w - first[e] of the sample.
 */
export interface FingerprintSet {
  key: FingerprintKey;
  count: number;
  len: Uint16Array;
  /** Label index (LABELS) | 0x80 for store scope. */
  meta: Uint8Array;
  /** 16-byte confirmation tags, entry e at 16e. */
  tags: Buffer;
  first: Int32Array;
  hi: Int32Array;
  lo: Int32Array;
}

export function labelOf(set: FingerprintSet, e: number): SampleLabel {
  return LABELS[set.meta[e]! & 0x7f]!;
}

export function isStoreScoped(set: FingerprintSet, e: number): boolean {
  return (set.meta[e]! & 0x80) !== 0;
}

/** Per-job key from a root secret (KEK-derived) and the job's salt. */
export function deriveJobKey(root: Buffer, salt: Buffer, jobId: string): FingerprintKey {
  return split(Buffer.from(hkdfSync('sha256', root, salt, Buffer.from(`tallybox.v1.purge-fingerprint\0${jobId}`, 'utf8'), 64)));
}

function split(okm: Buffer): FingerprintKey {
  return { aes: okm.subarray(0, 16), tag: okm.subarray(16, 32), mac: okm.subarray(32, 64) };
}

/** A throwaway key, for a purge with nowhere durable to keep fingerprints. */
export function ephemeralKey(): FingerprintKey {
  return split(randomBytes(64));
}

export function keyCheck(key: FingerprintKey): Buffer {
  return createHmac('sha256', key.mac).update(CHECK_INFO).digest().subarray(0, TAG);
}

export function keyMatches(key: FingerprintKey, check: Buffer): boolean {
  const want = keyCheck(key);
  return check.length === want.length && timingSafeEqual(check, want);
}

/** u16 length || bytes, zero-padded to whole blocks. */
function tagMessage(bytes: Buffer): Buffer {
  const m = Buffer.alloc(Math.ceil((bytes.length + 2) / 16) * 16);
  m.writeUInt16BE(bytes.length, 0);
  bytes.copy(m, 2);
  return m;
}

/** CBC-MAC of one sample (the last block of AES-CBC with a zero IV). */
export function confirmTag(key: FingerprintKey, bytes: Buffer): Buffer {
  const c = createCipheriv('aes-128-cbc', key.tag, Buffer.alloc(16));
  c.setAutoPadding(false);
  const out = c.update(tagMessage(bytes));
  return out.subarray(out.length - TAG);
}

/** The same CBC-MAC for many samples: one ECB pass per block index instead of one cipher per sample. */
function confirmTags(key: FingerprintKey, samples: readonly Buffer[]): Buffer {
  const n = samples.length;
  const blocks = new Int32Array(n);
  let rounds = 0;
  for (let i = 0; i < n; i++) {
    blocks[i] = Math.ceil((samples[i]!.length + 2) / 16);
    if (blocks[i]! > rounds) rounds = blocks[i]!;
  }
  const state = Buffer.alloc(16 * n);
  const ecb = createCipheriv('aes-128-ecb', key.tag, null);
  ecb.setAutoPadding(false);
  const input = Buffer.alloc(16 * n);
  const active = new Int32Array(n);
  for (let r = 0; r < rounds; r++) {
    let m = 0;
    for (let i = 0; i < n; i++) {
      if (blocks[i]! <= r) continue;
      const b = samples[i]!;
      const o = 16 * m;
      // Message = u16 length || bytes || zero padding; byte j of block r is message byte 16r + j.
      for (let j = 0; j < 16; j++) {
        const at = 16 * r + j;
        const mb = at === 0 ? b.length >>> 8 : at === 1 ? b.length & 0xff : at - 2 < b.length ? b[at - 2]! : 0;
        input[o + j] = state[16 * i + j]! ^ mb;
      }
      active[m++] = i;
    }
    const out = ecb.update(input.subarray(0, 16 * m));
    for (let j = 0; j < m; j++) out.copy(state, 16 * active[j]!, 16 * j, 16 * j + 16);
  }
  input.fill(0);
  return state;
}

/** An ECB cipher: stateless, so one instance can fingerprint any number of blocks. */
export function windowCipher(key: FingerprintKey): { update(b: Buffer): Buffer } {
  const c = createCipheriv('aes-128-ecb', key.aes, null);
  c.setAutoPadding(false);
  return c;
}

/** Window width a sample of `len` bytes is indexed by. */
export function windowWidth(len: number): 4 | 8 {
  return len >= ALIGNED_MIN ? WINDOW : SHORT_WINDOW;
}

/** A 4-byte-aligned native view of `buf` (a copy when it is not aligned). */
export function int32Words(buf: Buffer): Int32Array {
  const b = buf.byteOffset % 4 === 0 ? buf : Buffer.from(buf);
  return new Int32Array(b.buffer, b.byteOffset, b.length >>> 2);
}

/** Fingerprint samples (>= 8 bytes; shorter ones cannot be told from noise and are skipped). */
export function fingerprintSamples(key: FingerprintKey, samples: readonly ErasureSample[]): FingerprintSet {
  const usable = samples.filter((s) => s.bytes.length >= MIN_SAMPLE_BYTES && s.bytes.length <= 0xffff);
  const count = usable.length;
  const len = new Uint16Array(count);
  const meta = new Uint8Array(count);
  const first = new Int32Array(count + 1);
  for (let e = 0; e < count; e++) {
    const s = usable[e]!;
    len[e] = s.bytes.length;
    meta[e] = LABELS.indexOf(s.label) | (s.scope === 'store' ? 0x80 : 0);
    first[e + 1] = first[e]! + windowWidth(s.bytes.length);
  }
  const total = first[count]!;
  // Window w of a sample: its bytes k .. k + width - 1 followed by zeros (k = 0 .. width - 1).
  const blocks = Buffer.alloc(total * 16);
  for (let e = 0; e < count; e++) {
    const b = usable[e]!.bytes;
    const width = first[e + 1]! - first[e]!;
    for (let k = 0, at = 16 * first[e]!; k < width; k++, at += 16) for (let j = 0; j < width; j++) blocks[at + j] = b[k + j]!;
  }
  const out = int32Words(windowCipher(key).update(blocks));
  blocks.fill(0);
  // Read as native 32-bit words, exactly as the scan reads the fingerprints of file windows.
  const hi = new Int32Array(total);
  const lo = new Int32Array(total);
  for (let w = 0; w < total; w++) {
    hi[w] = out[4 * w]!;
    lo[w] = out[4 * w + 1]!;
  }
  return {
    key,
    count,
    len,
    meta,
    tags: confirmTags(
      key,
      usable.map((s) => s.bytes),
    ),
    first,
    hi,
    lo,
  };
}

/** Serialise a set (not its key) for the purge journal. */
export function encodeSet(set: FingerprintSet): Buffer {
  const n = set.count;
  const w = set.first[n]!;
  const b = Buffer.alloc(MAGIC.length + 8 + n * (2 + 1 + TAG) + w * 8);
  let o = MAGIC.copy(b, 0);
  o = b.writeUInt32BE(n, o);
  o = b.writeUInt32BE(w, o);
  for (let e = 0; e < n; e++) o = b.writeUInt16BE(set.len[e]!, o);
  for (let e = 0; e < n; e++) o = b.writeUInt8(set.meta[e]!, o);
  o += set.tags.copy(b, o, 0, n * TAG);
  for (let i = 0; i < w; i++) o = b.writeInt32BE(set.hi[i]!, o);
  for (let i = 0; i < w; i++) o = b.writeInt32BE(set.lo[i]!, o);
  return b;
}

/** Parse what encodeSet wrote; any damage is FINGERPRINTS_CORRUPT (never a silently shorter list). */
export function decodeSet(key: FingerprintKey, b: Buffer): FingerprintSet {
  const bad = (why: string) => new TallyboxError('FINGERPRINTS_CORRUPT', `stored erasure fingerprints are damaged (${why})`);
  if (b.length < MAGIC.length + 8 || !b.subarray(0, MAGIC.length).equals(MAGIC)) throw bad('bad header');
  let o = MAGIC.length;
  const n = b.readUInt32BE(o);
  const w = b.readUInt32BE(o + 4);
  o += 8;
  if (b.length !== o + n * (2 + 1 + TAG) + w * 8) throw bad('wrong length');
  const len = new Uint16Array(n);
  const meta = new Uint8Array(n);
  const first = new Int32Array(n + 1);
  for (let e = 0; e < n; e++, o += 2) {
    len[e] = b.readUInt16BE(o);
    if (len[e]! < MIN_SAMPLE_BYTES) throw bad('bad length');
    first[e + 1] = first[e]! + windowWidth(len[e]!);
  }
  if (first[n] !== w) throw bad('window count');
  for (let e = 0; e < n; e++, o++) {
    meta[e] = b.readUInt8(o);
    if (LABELS[meta[e]! & 0x7f] === undefined) throw bad('bad label');
  }
  const tags = Buffer.from(b.subarray(o, o + n * TAG));
  o += n * TAG;
  const hi = new Int32Array(w);
  const lo = new Int32Array(w);
  for (let i = 0; i < w; i++, o += 4) hi[i] = b.readInt32BE(o);
  for (let i = 0; i < w; i++, o += 4) lo[i] = b.readInt32BE(o);
  return { key, count: n, len, meta, tags, first, hi, lo };
}
