/**
 * The verification scan: look for erased byte fragments in raw database files
 * (main file, -wal, -shm, rollback journal). It reads the files as bytes, not
 * through SQLite, because what matters is what a disk image would show.
 *
 * It searches for keyed fingerprints (fingerprint.ts), never for the sampled
 * bytes themselves, so that the first run and a run resumed after a crash use
 * the same evidence: the fingerprints survive in the purge journal, the
 * samples do not exist anywhere after the first run.
 *
 * Tens of thousands of samples over tens of megabytes must take milliseconds.
 * Long samples (>= 15 bytes: ciphertext fragments, keys, HMACs, uuids): any
 * occurrence contains an 8-byte window starting at a file offset that is a
 * multiple of 8, at some offset k in 0..7 of the sample. So each sample is
 * indexed by the fingerprints of its eight windows, every aligned 8-byte
 * window of the file is fingerprinted in one bulk AES-ECB pass, and each
 * window costs two bit tests; a window whose fingerprint is indexed is
 * confirmed with the HMAC tag of the whole sample at the implied start.
 * Short samples (8-14 bytes, subject ids) are indexed the same way by their
 * four 4-byte windows at k = 0..3 and found with a second pass over the
 * 4-aligned windows, which runs only on files where such samples apply.
 */
import { basename } from 'node:path';
import { ALIGNED_MIN, SHORT_WINDOW, WINDOW, confirmTag, ephemeralKey, fingerprintSamples, int32Words, isStoreScoped, labelOf, windowCipher, type FingerprintKey, type FingerprintSet } from './fingerprint.js';
import { readPinned } from '../store/pinned-read.js';
import type { ErasureSample, SampleLabel } from './types.js';

export { MIN_SAMPLE_BYTES } from './fingerprint.js';

// Two independent 16 Mi-bit bitmaps (2 MiB each): with ~10^6 indexed windows a
// random window passes both with probability ~4e-3, so the table is rarely consulted.
const BITS = 24;
/** Windows fingerprinted per AES call: 1 MiB of blocks. */
const CHUNK = 65_536;

export interface ScanTarget {
  path: string;
  /** Which samples apply to this file. */
  scope: 'store' | 'other';
}

export interface FileScan {
  /** Base name only: receipts carry no paths of the device. */
  file: string;
  bytes: number;
  hits: number;
  present: boolean;
}

export interface ScanResult {
  ok: boolean;
  samples: number;
  hits: number;
  bytesScanned: number;
  files: FileScan[];
  hitsByLabel: Partial<Record<SampleLabel, number>>;
  durationMs: number;
}

function hash1(hi: number, lo: number): number {
  return (Math.imul(hi, 0x9e3779b1) ^ Math.imul(lo ^ (lo >>> 15), 0x85ebca77)) >>> (32 - BITS);
}

function hash2(hi: number, lo: number): number {
  return (Math.imul(lo, 0xc2b2ae35) ^ Math.imul(hi ^ (hi >>> 13), 0x27d4eb2f)) >>> (32 - BITS);
}

/**
 * Window fingerprints in flat typed arrays grouped by bucket (a counting
 * sort): building it for ~10^6 windows takes milliseconds and allocates no
 * object per window.
 */
interface Table {
  bitmap1: Uint8Array;
  bitmap2: Uint8Array;
  /** Bucket b's windows are [starts[b], starts[b + 1]). */
  starts: Int32Array;
  hi: Int32Array;
  lo: Int32Array;
  /** Index of the entry in the set. */
  entry: Int32Array;
  /** Where in the sample the window starts. */
  k: Uint8Array;
  size: number;
}

const BUCKET_SHIFT = 4; // buckets = top 20 bits of hash1

const EMPTY: Table = { bitmap1: new Uint8Array(0), bitmap2: new Uint8Array(0), starts: new Int32Array(0), hi: new Int32Array(0), lo: new Int32Array(0), entry: new Int32Array(0), k: new Uint8Array(0), size: 0 };

/** Index the windows of the entries `pick` selects. */
function buildTable(set: FingerprintSet, pick: (e: number) => boolean): Table {
  let n = 0;
  for (let e = 0; e < set.count; e++) if (pick(e)) n += set.first[e + 1]! - set.first[e]!;
  if (n === 0) return EMPTY;
  const bitmap1 = new Uint8Array(1 << (BITS - 3));
  const bitmap2 = new Uint8Array(1 << (BITS - 3));
  const starts = new Int32Array((1 << (BITS - BUCKET_SHIFT)) + 1);
  const ws = new Int32Array(n);
  const es = new Int32Array(n);
  let i = 0;
  for (let e = 0; e < set.count; e++) {
    if (!pick(e)) continue;
    for (let w = set.first[e]!; w < set.first[e + 1]!; w++, i++) {
      ws[i] = w;
      es[i] = e;
      const h1 = hash1(set.hi[w]!, set.lo[w]!);
      const h2 = hash2(set.hi[w]!, set.lo[w]!);
      bitmap1[h1 >>> 3]! |= 1 << (h1 & 7);
      bitmap2[h2 >>> 3]! |= 1 << (h2 & 7);
      starts[(h1 >>> BUCKET_SHIFT) + 1]!++;
    }
  }
  for (let b = 1; b < starts.length; b++) starts[b]! += starts[b - 1]!;
  const fill = starts.slice(0, starts.length - 1);
  const t: Table = { bitmap1, bitmap2, starts, hi: new Int32Array(n), lo: new Int32Array(n), entry: new Int32Array(n), k: new Uint8Array(n), size: n };
  for (let j = 0; j < n; j++) {
    const w = ws[j]!;
    const e = es[j]!;
    const at = fill[hash1(set.hi[w]!, set.lo[w]!) >>> BUCKET_SHIFT]!++;
    t.hi[at] = set.hi[w]!;
    t.lo[at] = set.lo[w]!;
    t.entry[at] = e;
    t.k[at] = w - set.first[e]!;
  }
  return t;
}

interface Index {
  set: FingerprintSet;
  /** Long samples, every window k = 0..7. */
  aligned: Table;
  /** Short samples, every 4-byte window k = 0..3; undefined when there are none. */
  short: Table | undefined;
  /** Some short sample applies to files outside the store (scope all). */
  shortOther: boolean;
}

/** A purge scans up to maxPasses times with one set: the index is built once. */
const indexes = new WeakMap<FingerprintSet, Index>();

function indexFor(set: FingerprintSet): Index {
  let index = indexes.get(set);
  if (!index) indexes.set(set, (index = buildIndex(set)));
  return index;
}

function buildIndex(set: FingerprintSet): Index {
  const long = (e: number) => set.len[e]! >= ALIGNED_MIN;
  const short = buildTable(set, (e) => !long(e));
  let shortOther = false;
  for (let e = 0; e < set.count; e++) if (!long(e) && !isStoreScoped(set, e)) shortOther = true;
  return { set, aligned: buildTable(set, long), short: short.size > 0 ? short : undefined, shortOther };
}

interface Counter {
  hits: number;
  byLabel: Partial<Record<SampleLabel, number>>;
}

/** Confirm the candidates of a window (fingerprint hi/lo) that starts at file offset p. */
function check(buf: Buffer, index: Index, t: Table, p: number, hi: number, lo: number, includeStore: boolean, c: Counter): void {
  const set = index.set;
  const b = hash1(hi, lo) >>> BUCKET_SHIFT;
  for (let e = t.starts[b]!, end = t.starts[b + 1]!; e < end; e++) {
    if (t.hi[e] !== hi || t.lo[e] !== lo) continue;
    const entry = t.entry[e]!;
    if (!includeStore && isStoreScoped(set, entry)) continue;
    const start = p - t.k[e]!;
    const len = set.len[entry]!;
    if (start < 0 || start + len > buf.length) continue;
    if (confirmTag(set.key, buf.subarray(start, start + len)).equals(set.tags.subarray(16 * entry, 16 * entry + 16))) {
      const label = labelOf(set, entry);
      c.hits++;
      c.byLabel[label] = (c.byLabel[label] ?? 0) + 1;
    }
  }
}

/**
 * Fingerprint the `count` windows of `width` bytes at offsets 0, width,
 * 2*width, ... and test each. Blocks are the window's bytes followed by
 * zeros, exactly as in fingerprintSamples; the copy moves whole 32-bit words.
 */
function sweep(buf: Buffer, index: Index, t: Table, width: 4 | 8, includeStore: boolean, c: Counter): void {
  const count = Math.floor(buf.length / width);
  if (count === 0) return;
  const src = int32Words(buf);
  const cipher = windowCipher(index.set.key);
  const blocks = Buffer.alloc(Math.min(count, CHUNK) * 16);
  const bw = new Int32Array(blocks.buffer, blocks.byteOffset, blocks.length >>> 2);
  const { bitmap1, bitmap2 } = t;
  for (let first = 0; first < count; first += CHUNK) {
    const m = Math.min(CHUNK, count - first);
    if (width === 8) {
      for (let i = 0, s = 2 * first; i < m; i++, s += 2) {
        bw[4 * i] = src[s]!;
        bw[4 * i + 1] = src[s + 1]!;
      }
    } else {
      for (let i = 0, s = first; i < m; i++, s++) bw[4 * i] = src[s]!;
    }
    const out = cipher.update(m === CHUNK ? blocks : blocks.subarray(0, 16 * m));
    const ow = int32Words(out);
    for (let i = 0; i < m; i++) {
      const hi = ow[4 * i]!;
      const lo = ow[4 * i + 1]!;
      const h1 = hash1(hi, lo);
      if ((bitmap1[h1 >>> 3]! & (1 << (h1 & 7))) === 0) continue;
      const h2 = hash2(hi, lo);
      if ((bitmap2[h2 >>> 3]! & (1 << (h2 & 7))) === 0) continue;
      check(buf, index, t, (first + i) * width, hi, lo, includeStore, c);
    }
  }
  blocks.fill(0);
}

function scanBuffer(buf: Buffer, index: Index, includeStore: boolean, c: Counter): number {
  const before = c.hits;
  if (index.aligned.size > 0) sweep(buf, index, index.aligned, WINDOW, includeStore, c);
  if (index.short && (includeStore || index.shortOther)) sweep(buf, index, index.short, SHORT_WINDOW, includeStore, c);
  return c.hits - before;
}

/** Scan every target for every applicable fingerprint. Missing files count as scanned and clean. */
export async function scanForFingerprints(targets: readonly ScanTarget[], set: FingerprintSet): Promise<ScanResult> {
  const started = performance.now();
  const index = indexFor(set);
  const counter: Counter = { hits: 0, byLabel: {} };
  const files: FileScan[] = [];
  let bytesScanned = 0;
  let hits = 0;
  for (const t of targets) {
    let buf: Buffer;
    try {
      // Never readFile(): closing its descriptor would drop this process's SQLite locks on the file (pinned-read.ts).
      buf = readPinned(t.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        files.push({ file: basename(t.path), bytes: 0, hits: 0, present: false });
        continue;
      }
      throw err;
    }
    const fileHits = scanBuffer(buf, index, t.scope === 'store', counter);
    files.push({ file: basename(t.path), bytes: buf.length, hits: fileHits, present: true });
    bytesScanned += buf.length;
    hits += fileHits;
  }
  return {
    ok: hits === 0,
    samples: set.count,
    hits,
    bytesScanned,
    files,
    hitsByLabel: counter.byLabel,
    durationMs: Math.round(performance.now() - started),
  };
}

/** Convenience: fingerprint `samples` under a throwaway key and scan for them. */
export function scanForSamples(targets: readonly ScanTarget[], samples: readonly ErasureSample[], key: FingerprintKey = ephemeralKey()): Promise<ScanResult> {
  return scanForFingerprints(targets, fingerprintSamples(key, samples));
}

/** The files SQLite may write next to a database: all of them hold page images. */
export function sqliteFiles(dbPath: string): string[] {
  return [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, `${dbPath}-journal`];
}
