/**
 * The verification scan: look for sampled byte fragments in raw database files
 * (main file, -wal, -shm, rollback journal). It reads the files as bytes, not
 * through SQLite, because what matters is what a disk image would show.
 *
 * Tens of thousands of samples over tens of megabytes must take milliseconds.
 * Long samples (>= 15 bytes: ciphertext fragments, keys, HMACs, uuids) are
 * found with aligned windows: any occurrence of such a sample contains an
 * 8-byte window starting at a file offset that is a multiple of 8, at some
 * offset k in 0..7 of the sample. So every sample is indexed by its eight
 * windows, and the file is read in 8-byte steps: one hash and two bit tests
 * per step, a full comparison only when both bitmaps agree. Short samples
 * (8-14 bytes) take the slower byte-by-byte pass, which runs only if there
 * are any.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { ErasureSample, SampleLabel } from './types.js';

const WINDOW = 8;
/** Shortest sample the aligned pass can find: k in 0..7 plus an 8-byte window. */
const ALIGNED_MIN = 2 * WINDOW - 1;
// Two independent 16 Mi-bit bitmaps (2 MiB each): with ~10^6 indexed windows a
// random window passes both with probability ~4e-3, so the map is rarely consulted.
const BITS = 24;
export const MIN_SAMPLE_BYTES = WINDOW;

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
 * Windows of the samples in flat typed arrays grouped by bucket (a counting
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
  /** Index into `samples`. */
  sample: Int32Array;
  /** Where in the sample the window starts. */
  k: Uint8Array;
}

const BUCKET_SHIFT = 4; // buckets = top 20 bits of hash1

interface Window {
  sample: number;
  k: number;
}

function buildTable(samples: readonly ErasureSample[], windows: Window[]): Table {
  const n = windows.length;
  const bitmap1 = new Uint8Array(1 << (BITS - 3));
  const bitmap2 = new Uint8Array(1 << (BITS - 3));
  const his = new Int32Array(n);
  const los = new Int32Array(n);
  const buckets = new Int32Array(n);
  const starts = new Int32Array((1 << (BITS - BUCKET_SHIFT)) + 1);
  for (let i = 0; i < n; i++) {
    const w = windows[i]!;
    const bytes = samples[w.sample]!.bytes;
    // Signed 32-bit like the scan loops: V8 keeps int32 unboxed, uint32 > 2^31 becomes a heap double.
    const hi = bytes.readInt32BE(w.k);
    const lo = bytes.readInt32BE(w.k + 4);
    const h1 = hash1(hi, lo);
    const h2 = hash2(hi, lo);
    bitmap1[h1 >>> 3]! |= 1 << (h1 & 7);
    bitmap2[h2 >>> 3]! |= 1 << (h2 & 7);
    his[i] = hi;
    los[i] = lo;
    buckets[i] = h1 >>> BUCKET_SHIFT;
    starts[(h1 >>> BUCKET_SHIFT) + 1]!++;
  }
  for (let b = 1; b < starts.length; b++) starts[b]! += starts[b - 1]!;
  const fill = starts.slice(0, starts.length - 1);
  const t: Table = { bitmap1, bitmap2, starts, hi: new Int32Array(n), lo: new Int32Array(n), sample: new Int32Array(n), k: new Uint8Array(n) };
  for (let i = 0; i < n; i++) {
    const at = fill[buckets[i]!]!++;
    t.hi[at] = his[i]!;
    t.lo[at] = los[i]!;
    t.sample[at] = windows[i]!.sample;
    t.k[at] = windows[i]!.k;
  }
  return t;
}

interface Index {
  samples: readonly ErasureSample[];
  /** Long samples, every window k = 0..7. */
  aligned: Table;
  /** Short samples, anchored on their last 8 bytes; undefined when there are none. */
  rolling: Table | undefined;
}

function buildIndex(samples: readonly ErasureSample[]): Index {
  const aligned: Window[] = [];
  const rolling: Window[] = [];
  samples.forEach((s, i) => {
    if (s.bytes.length >= ALIGNED_MIN) for (let k = 0; k < WINDOW; k++) aligned.push({ sample: i, k });
    else if (s.bytes.length >= WINDOW) rolling.push({ sample: i, k: s.bytes.length - WINDOW });
  });
  return { samples, aligned: buildTable(samples, aligned), rolling: rolling.length > 0 ? buildTable(samples, rolling) : undefined };
}

interface Counter {
  hits: number;
  byLabel: Partial<Record<SampleLabel, number>>;
}

/** Compare the candidates of a window (hash h1, bytes hi/lo) found at file offset p. */
function check(buf: Buffer, index: Index, t: Table, h1: number, p: number, hi: number, lo: number, includeStore: boolean, c: Counter): void {
  const b = h1 >>> BUCKET_SHIFT;
  for (let e = t.starts[b]!, end = t.starts[b + 1]!; e < end; e++) {
    if (t.hi[e] !== hi || t.lo[e] !== lo) continue;
    const sample = index.samples[t.sample[e]!]!;
    if (sample.scope === 'store' && !includeStore) continue;
    const start = p - t.k[e]!;
    const len = sample.bytes.length;
    if (start < 0 || start + len > buf.length) continue;
    if (buf.compare(sample.bytes, 0, len, start, start + len) === 0) {
      c.hits++;
      c.byLabel[sample.label] = (c.byLabel[sample.label] ?? 0) + 1;
    }
  }
}

function scanBuffer(buf: Buffer, index: Index, includeStore: boolean, c: Counter): number {
  const before = c.hits;
  const n = buf.length;
  {
    const t = index.aligned;
    const { bitmap1, bitmap2 } = t;
    for (let p = 0; p + WINDOW <= n; p += WINDOW) {
      const hi = (buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!;
      const lo = (buf[p + 4]! << 24) | (buf[p + 5]! << 16) | (buf[p + 6]! << 8) | buf[p + 7]!;
      const h1 = hash1(hi, lo);
      if ((bitmap1[h1 >>> 3]! & (1 << (h1 & 7))) === 0) continue;
      const h2 = hash2(hi, lo);
      if ((bitmap2[h2 >>> 3]! & (1 << (h2 & 7))) === 0) continue;
      check(buf, index, t, h1, p, hi, lo, includeStore, c);
    }
  }
  if (index.rolling) {
    const t = index.rolling;
    const { bitmap1, bitmap2 } = t;
    let hi = 0;
    let lo = 0;
    for (let i = 0; i < n; i++) {
      hi = (hi << 8) | (lo >>> 24);
      lo = (lo << 8) | buf[i]!;
      if (i < WINDOW - 1) continue;
      const h1 = hash1(hi, lo);
      if ((bitmap1[h1 >>> 3]! & (1 << (h1 & 7))) === 0) continue;
      const h2 = hash2(hi, lo);
      if ((bitmap2[h2 >>> 3]! & (1 << (h2 & 7))) === 0) continue;
      // The window ends at i, so it starts at i - 7, which is sample offset len - 8.
      check(buf, index, t, h1, i - WINDOW + 1, hi, lo, includeStore, c);
    }
  }
  return c.hits - before;
}

/** Scan every target for every applicable sample. Missing files count as scanned and clean. */
export async function scanForSamples(targets: readonly ScanTarget[], samples: readonly ErasureSample[]): Promise<ScanResult> {
  const started = performance.now();
  const index = buildIndex(samples);
  const counter: Counter = { hits: 0, byLabel: {} };
  const files: FileScan[] = [];
  let bytesScanned = 0;
  let hits = 0;
  for (const t of targets) {
    let buf: Buffer;
    try {
      buf = await readFile(t.path);
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
    samples: samples.filter((s) => s.bytes.length >= WINDOW).length,
    hits,
    bytesScanned,
    files,
    hitsByLabel: counter.byLabel,
    durationMs: Math.round(performance.now() - started),
  };
}

/** The files SQLite may write next to a database: all of them hold page images. */
export function sqliteFiles(dbPath: string): string[] {
  return [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, `${dbPath}-journal`];
}
