/**
 * Deterministic simulated fingerprints. A template (char file) is 512 bytes:
 * bytes 0..479 are the finger's identity (HMAC-SHA-256 expansion of a seed,
 * the person and the finger), bytes 480..511 vary per capture like real
 * minutiae noise. Matching compares the identity part only, so a capture, the
 * model built from two captures, and that model written back by DownChar all
 * match each other, and two different fingers practically never do.
 */
import { createHash, createHmac } from 'node:crypto';
import { TEMPLATE_SIZE } from '../../firmware-bridge/r30x/constants.js';

export const IDENTITY_BYTES = 480;
/** Scores run 0..200; the module reports a match from this score up. */
export const MATCH_THRESHOLD = 50;
export const MAX_SCORE = 200;
export const DEFAULT_SEED = 'tallybox-sim-fingerprint';

export interface FingerRef {
  /** Any stable label of the simulated person (a name, a subject id). */
  person: string;
  /** 0..9 (right thumb … left little finger); any integer is accepted. */
  finger: number;
}

function expand(key: string, label: string, bytes: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; parts.length * 32 < bytes; i++) parts.push(createHmac('sha256', key).update(`${label}\0${i}`).digest());
  return Buffer.concat(parts).subarray(0, bytes);
}

/** The stored model of a finger: identity bytes then a zero tail. */
export function modelFor(ref: FingerRef, seed: string = DEFAULT_SEED): Buffer {
  const out = Buffer.alloc(TEMPLATE_SIZE);
  expand(seed, `r30x-template\0${ref.person}\0${ref.finger}`, IDENTITY_BYTES).copy(out, 0);
  return out;
}

/** What Img2Tz puts in a char buffer for capture number `capture` of a finger. */
export function captureFor(ref: FingerRef, capture: number, seed: string = DEFAULT_SEED): Buffer {
  const out = modelFor(ref, seed);
  expand(seed, `r30x-capture\0${ref.person}\0${ref.finger}\0${capture}`, TEMPLATE_SIZE - IDENTITY_BYTES).copy(out, IDENTITY_BYTES);
  return out;
}

/** RegModel: the identity part of a capture with the noise tail cleared. */
export function combine(a: Buffer): Buffer {
  const out = Buffer.alloc(TEMPLATE_SIZE);
  a.copy(out, 0, 0, IDENTITY_BYTES);
  return out;
}

/** Identity bytes that agree from this share up are "the same finger". */
const SAME_FINGER_SHARE = 0.9;
/** Spread of a genuine score around its finger's mean (about one standard deviation). */
export const SCORE_SPREAD = 15;

/**
 * 0..200, like a module's matcher. Different fingers score the share of
 * identity bytes that agree (near 0). The same finger scores around a mean of
 * its own (70..169, from its identity bytes, so fixed per seed and finger),
 * moved by the capture noise of both sides: a different number every capture,
 * the same number for the same pair of captures (deterministic per seed).
 * Genuine scores are kept at or above MATCH_THRESHOLD: the simulator never
 * rejects a finger at random (a test that wants a miss presents another finger).
 */
export function score(a: Uint8Array, b: Uint8Array): number {
  let same = 0;
  for (let i = 0; i < IDENTITY_BYTES; i++) if (a[i] === b[i]) same++;
  const share = same / IDENTITY_BYTES;
  if (share < SAME_FINGER_SHARE) return Math.floor(share * MAX_SCORE);
  const mean = fingerMean(a);
  // Order-independent noise: Match(1,2) and Match(2,1) agree.
  const [ta, tb] = [Buffer.from(a.subarray(IDENTITY_BYTES)), Buffer.from(b.subarray(IDENTITY_BYTES))].sort(Buffer.compare) as [Buffer, Buffer];
  const h = createHash('sha256').update(ta).update(tb).digest();
  // Sum of four uniform bytes: roughly normal, mean 510, sd ≈ 148.
  const z = ((h[0] as number) + (h[1] as number) + (h[2] as number) + (h[3] as number) - 510) / 148;
  return Math.max(MATCH_THRESHOLD, Math.min(MAX_SCORE, Math.round(mean + z * SCORE_SPREAD)));
}

/** Per-finger mean genuine score, 70..169: some fingers image well, some poorly. */
export function fingerMean(t: Uint8Array): number {
  const h = createHash('sha256').update('r30x-mean\0').update(t.subarray(0, IDENTITY_BYTES)).digest();
  return 70 + (h.readUInt16BE(0) % 100);
}

/** Short, non-reversible label of a template for state dumps (never the bytes themselves). */
export function templateDigest(t: Uint8Array): string {
  return createHash('sha256').update(t.subarray(0, IDENTITY_BYTES)).digest('hex').slice(0, 16);
}
