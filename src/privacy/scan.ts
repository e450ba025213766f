/**
 * The verification scan: look for sampled byte fragments in raw database files
 * (main file, -wal, -shm, rollback journal). It reads the files as bytes, not
 * through SQLite, because what matters is what a disk image would show.
 *
 * Tens of thousands of samples over tens of megabytes must take milliseconds,
 * so this is a single pass with a rolling 8-byte anchor: every sample is keyed
 * by its last 8 bytes in two bitmaps + a map; each file offset costs two shifts,
 * a hash and a bit test, and only anchor matches compare the full sample.
 * Anchoring on the *last* bytes matters: time-ordered ids share prefixes.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { ErasureSample, SampleLabel } from './types.js';

const ANCHOR = 8;
// Two independent 16 Mi-bit bitmaps (2 MiB each): with 10^5 samples a random
// offset passes both with probability ~4e-5, so the map is rarely consulted.
const BITS = 24;
export const MIN_SAMPLE_BYTES = ANCHOR;

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

function anchorHash(hi: number, lo: number): number {
  return (Math.imul(hi, 0x9e3779b1) ^ Math.imul(lo ^ (lo >>> 15), 0x85ebca77)) >>> (32 - BITS);
}

function anchorHash2(hi: number, lo: number): number {
  return (Math.imul(lo, 0xc2b2ae35) ^ Math.imul(hi ^ (hi >>> 13), 0x27d4eb2f)) >>> (32 - BITS);
}

interface Index {
  bitmap: Uint8Array;
  bitmap2: Uint8Array;
  byAnchor: Map<string, ErasureSample[]>;
}

function buildIndex(samples: readonly ErasureSample[]): Index {
  const bitmap = new Uint8Array(1 << (BITS - 3));
  const bitmap2 = new Uint8Array(1 << (BITS - 3));
  const byAnchor = new Map<string, ErasureSample[]>();
  for (const s of samples) {
    if (s.bytes.length < ANCHOR) continue;
    const end = s.bytes.length;
    // Signed 32-bit, like the scan loop: V8 keeps int32 in registers, uint32 > 2^31 becomes a heap double.
    const hi = s.bytes.readInt32BE(end - 8);
    const lo = s.bytes.readInt32BE(end - 4);
    const h = anchorHash(hi, lo);
    bitmap[h >>> 3]! |= 1 << (h & 7);
    const h2 = anchorHash2(hi, lo);
    bitmap2[h2 >>> 3]! |= 1 << (h2 & 7);
    const key = `${hi}:${lo}`;
    const list = byAnchor.get(key);
    if (list) list.push(s);
    else byAnchor.set(key, [s]);
  }
  return { bitmap, bitmap2, byAnchor };
}

function scanBuffer(buf: Buffer, index: Index, includeStoreScope: boolean, hitsByLabel: Partial<Record<SampleLabel, number>>): number {
  const { bitmap, bitmap2, byAnchor } = index;
  let hits = 0;
  let hi = 0;
  let lo = 0;
  const n = buf.length;
  for (let i = 0; i < n; i++) {
    hi = (hi << 8) | (lo >>> 24);
    lo = (lo << 8) | buf[i]!;
    if (i < ANCHOR - 1) continue;
    const h = anchorHash(hi, lo);
    if ((bitmap[h >>> 3]! & (1 << (h & 7))) === 0) continue;
    const h2 = anchorHash2(hi, lo);
    if ((bitmap2[h2 >>> 3]! & (1 << (h2 & 7))) === 0) continue;
    const list = byAnchor.get(`${hi}:${lo}`);
    if (!list) continue;
    for (const s of list) {
      if (s.scope === 'store' && !includeStoreScope) continue;
      const start = i + 1 - s.bytes.length;
      if (start < 0) continue;
      if (buf.compare(s.bytes, 0, s.bytes.length, start, i + 1) === 0) {
        hits++;
        hitsByLabel[s.label] = (hitsByLabel[s.label] ?? 0) + 1;
      }
    }
  }
  return hits;
}

/** Scan every target for every applicable sample. Missing files count as scanned and clean. */
export async function scanForSamples(targets: readonly ScanTarget[], samples: readonly ErasureSample[]): Promise<ScanResult> {
  const started = performance.now();
  const index = buildIndex(samples);
  const hitsByLabel: Partial<Record<SampleLabel, number>> = {};
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
    const fileHits = scanBuffer(buf, index, t.scope === 'store', hitsByLabel);
    files.push({ file: basename(t.path), bytes: buf.length, hits: fileHits, present: true });
    bytesScanned += buf.length;
    hits += fileHits;
  }
  return {
    ok: hits === 0,
    samples: samples.filter((s) => s.bytes.length >= ANCHOR).length,
    hits,
    bytesScanned,
    files,
    hitsByLabel,
    durationMs: Math.round(performance.now() - started),
  };
}

/** The files SQLite may write next to a database: all of them hold page images. */
export function sqliteFiles(dbPath: string): string[] {
  return [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, `${dbPath}-journal`];
}
