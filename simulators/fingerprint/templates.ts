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

/** 0..200: the share of identity bytes that agree. */
export function score(a: Uint8Array, b: Uint8Array): number {
  let same = 0;
  for (let i = 0; i < IDENTITY_BYTES; i++) if (a[i] === b[i]) same++;
  return Math.floor((same * MAX_SCORE) / IDENTITY_BYTES);
}

/** Short, non-reversible label of a template for state dumps (never the bytes themselves). */
export function templateDigest(t: Uint8Array): string {
  return createHash('sha256').update(t.subarray(0, IDENTITY_BYTES)).digest('hex').slice(0, 16);
}
