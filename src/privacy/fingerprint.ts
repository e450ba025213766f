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

/** One fingerprinted sample. */
export interface FingerprintEntry {
  len: number;
  label: SampleLabel;
  scope: 'store' | 'all';
  /** HMAC(len || sample), truncated. */
  tag: Buffer;
  /** Window fingerprints as signed 32-bit halves; `k` is where in the sample each window starts. */
  hi: Int32Array;
  lo: Int32Array;
  k: Uint8Array;
}

export interface FingerprintSet {
  key: FingerprintKey;
  entries: FingerprintEntry[];
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
function confirmTags(key: FingerprintKey, samples: readonly Buffer[]): Buffer[] {
  const msgs = samples.map(tagMessage);
  const state = msgs.map(() => Buffer.alloc(16));
  const ecb = createCipheriv('aes-128-ecb', key.tag, null);
  ecb.setAutoPadding(false);
  for (let r = 0; ; r++) {
    const active = msgs.flatMap((m, i) => (m.length > 16 * r ? [i] : []));
    if (active.length === 0) break;
    const input = Buffer.alloc(16 * active.length);
    active.forEach((i, j) => {
      for (let b = 0; b < 16; b++) input[16 * j + b] = state[i]![b]! ^ msgs[i]![16 * r + b]!;
    });
    const out = ecb.update(input);
    active.forEach((i, j) => out.copy(state[i]!, 0, 16 * j, 16 * j + 16));
    input.fill(0);
  }
  for (const m of msgs) m.fill(0);
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
  const windowsOf = (s: ErasureSample): number[] => (s.bytes.length >= ALIGNED_MIN ? [0, 1, 2, 3, 4, 5, 6, 7] : [0, 1, 2, 3]);
  const total = usable.reduce((n, s) => n + windowsOf(s).length, 0);
  const blocks = Buffer.alloc(total * 16);
  let at = 0;
  for (const s of usable) {
    const width = windowWidth(s.bytes.length);
    for (const k of windowsOf(s)) s.bytes.copy(blocks, 16 * at++, k, k + width);
  }
  const out = int32Words(windowCipher(key).update(blocks));
  blocks.fill(0);
  at = 0;
  const tags = confirmTags(key, usable.map((s) => s.bytes));
  const entries = usable.map((s, j): FingerprintEntry => {
    const ks = windowsOf(s);
    const e: FingerprintEntry = { len: s.bytes.length, label: s.label, scope: s.scope, tag: tags[j]!, hi: new Int32Array(ks.length), lo: new Int32Array(ks.length), k: Uint8Array.from(ks) };
    ks.forEach((_, i) => {
      // Read as native 32-bit words, exactly as the scan reads the fingerprints of file windows.
      e.hi[i] = out[4 * at]!;
      e.lo[i] = out[4 * at + 1]!;
      at++;
    });
    return e;
  });
  return { key, entries };
}

/** Serialise the entries (not the key) for the purge journal. */
export function encodeEntries(entries: readonly FingerprintEntry[]): Buffer {
  const size = entries.reduce((n, e) => n + 4 + TAG + e.k.length * 9, MAGIC.length + 4);
  const b = Buffer.alloc(size);
  let o = MAGIC.copy(b, 0);
  o = b.writeUInt32BE(entries.length, o);
  for (const e of entries) {
    o = b.writeUInt16BE(e.len, o);
    o = b.writeUInt8(LABELS.indexOf(e.label) | (e.scope === 'store' ? 0x80 : 0), o);
    o = b.writeUInt8(e.k.length, o);
    o += e.tag.copy(b, o);
    for (let i = 0; i < e.k.length; i++) {
      o = b.writeUInt8(e.k[i]!, o);
      o = b.writeInt32BE(e.hi[i]!, o);
      o = b.writeInt32BE(e.lo[i]!, o);
    }
  }
  return b;
}

/** Parse what encodeEntries wrote; any damage is FINGERPRINTS_CORRUPT (never a silently shorter list). */
export function decodeEntries(b: Buffer): FingerprintEntry[] {
  const bad = (why: string) => new TallyboxError('FINGERPRINTS_CORRUPT', `stored erasure fingerprints are damaged (${why})`);
  if (b.length < MAGIC.length + 4 || !b.subarray(0, MAGIC.length).equals(MAGIC)) throw bad('bad header');
  let o = MAGIC.length;
  const n = b.readUInt32BE(o);
  o += 4;
  const entries: FingerprintEntry[] = [];
  for (let j = 0; j < n; j++) {
    if (o + 4 + TAG > b.length) throw bad('truncated');
    const len = b.readUInt16BE(o);
    const flags = b.readUInt8(o + 2);
    const count = b.readUInt8(o + 3);
    o += 4;
    const label = LABELS[flags & 0x7f];
    if (!label || len < MIN_SAMPLE_BYTES || count !== (windowWidth(len) === WINDOW ? 8 : 4)) throw bad('bad entry');
    const tag = Buffer.from(b.subarray(o, o + TAG));
    o += TAG;
    if (o + count * 9 > b.length) throw bad('truncated');
    const e: FingerprintEntry = { len, label, scope: flags & 0x80 ? 'store' : 'all', tag, hi: new Int32Array(count), lo: new Int32Array(count), k: new Uint8Array(count) };
    for (let i = 0; i < count; i++) {
      e.k[i] = b.readUInt8(o);
      e.hi[i] = b.readInt32BE(o + 1);
      e.lo[i] = b.readInt32BE(o + 5);
      o += 9;
      if (e.k[i]! + windowWidth(len) > len) throw bad('bad window');
    }
    entries.push(e);
  }
  if (o !== b.length) throw bad('trailing bytes');
  return entries;
}
