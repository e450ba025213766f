/**
 * The scoring kernel: scores[r] = dot(matrix row r, query) for every row, in
 * WebAssembly SIMD (f32x4, four independent accumulators: 16 floats per loop
 * step). A plain JS loop does ~1 multiply-add per ns; the SIMD kernel is
 * memory-bound instead (10,000 × 512 floats = 20 MB per query).
 *
 * The module (1.3 KB) is written in WebAssembly text, kernel.wat beside this
 * file, and assembled to kernel.wasm by wabt (scripts/build-wasm.mjs, run by
 * `npm run build`; kernel-wat.test.ts fails if the two disagree). The same
 * computation in JS (`scoreJs`) is the fallback where SIMD is unavailable
 * (logged once, see loadKernel) and the reference the tests compare with.
 *
 * Memory layout (one linear memory, owned by the kernel; n = capacity):
 *   [0, qBytes)                 the query (dim floats)
 *   [q16Off, +qstride*2)        * the query quantised to int16
 *   [outOff, +n*4)              the float32 scores output
 *   [iOutOff, +n*4)             * the int32 quantised scores output
 *   [candOff, +n*4)             * candidate rows (int32)
 *   [scaleOff, +n*4)            * per-row int8 scale s_r (float32)
 *   [residOff, +n*4)            * per-row residual norm ‖e_r‖ (float32, rounded up)
 *   [lsOff, +16)                * L* (float64)
 *   [matOff, +n*stride*4)       the template matrix, row-major
 *   [mat8Off, +n*qstride)       * its int8 copy, in blocks of four rows (see qscoresBody)
 * (* = quantised matrices only.) The matrices live in wasm memory itself so a
 * search copies nothing.
 *
 * EXACT SEARCH WITH AN INT8 PREFILTER (`best`)
 *
 * A float32 scan reads n*dim*4 bytes per query and is memory-bound. A
 * quantised matrix (option `quantise`) also keeps each row r as int8:
 *   s_r = fround(max_i |x_ri| / 127),  x8_ri = round(x_ri / s_r) ∈ [-127, 127],
 * and the query as int16 (Q = the largest int16 magnitude that cannot overflow
 * an int32 sum, ≤ 32767):
 *   t = max_i |q_i| / Q,  q16_i = round(q_i / t).
 * The `qscores` kernel computes D_r = Σ_i x8_ri·q16_i exactly in int32
 * (v128.load8x8_s sign-extends 8 row bytes to int16; i32x4.dot_i16x8_s
 * multiplies and adds pairs; no overflow: every partial sum is at most
 * qstride·127·Q < 2^31 in magnitude), a quarter of the bytes of the float32
 * scan. A_r = s_r·t·D_r approximates the score; the same pass collects the
 * rows whose score can still be the maximum, and `best` re-scores only those
 * in float32, with the very kernel the full scan uses.
 *
 * The bound. Let x = row r (float32 values, as stored), q = the query (float32,
 * as stored), x̂ = s_r·x8 and q̂ = t·q16 (real numbers), e = x − x̂, f = q − q̂,
 * S_r = the float32 score the full scan computes for row r. Then
 *   A_r = x̂·q̂ (in exact arithmetic; D_r is exact)
 *   x·q − x̂·q̂ = e·q + x̂·f,  so by Cauchy–Schwarz
 *   |x·q − A_r| ≤ ‖e‖·‖q‖ + ‖x̂‖·‖f‖ ≤ ‖e‖·(‖q‖ + ‖f‖) + ‖x‖·‖f‖   (‖x̂‖ ≤ ‖x‖ + ‖e‖)
 * and the float32 kernel's rounding (each product sees at most 1 + stride/16 + 4
 * roundings ≤ m = stride + 8; Higham, Accuracy and Stability, Thm 3.1 / eq. 3.5):
 *   |S_r − x·q| ≤ γ_m · Σ|x_i q_i| ≤ γ_m·‖x‖·‖q‖,   γ_m = m·u/(1 − m·u), u = 2⁻²⁴.
 * With ‖e_r‖ measured per row at insert (float64, stored rounded up to a
 * float32; s_r is itself a float32, so x̂ is exactly what D_r scales), N = an upper bound on every
 * row's ‖x‖ (the largest inserted, kept until clear), and ‖q‖, ‖f‖ measured per
 * query (float64):
 *   |S_r − A_r| ≤ E_r = ‖e_r‖·(‖q‖ + ‖f‖) + N·(γ_m·‖q‖ + ‖f‖) + 1e-9
 * where the 1e-9 absorbs every float64 rounding in computing A_r, ‖e_r‖, ‖q‖,
 * ‖f‖, N and E_r itself (D_r converts to float64 exactly; A_r ≤ ~1 takes two
 * roundings; the norms are sums of ≤ qstride squares: each error < 1e-12).
 * So S_r ∈ [L_r, U_r] = [A_r − E_r, A_r + E_r]. Let L* = max_r L_r (over the
 * rows eligible for the answer). The float32 argmax row r* has S_r* ≥ L*, and
 * any row with U_r < L* has S_r < L* ≤ S_r*: it can neither be the maximum nor
 * tie with it. Every other row (U_r ≥ L*) is re-scored in float32, in row
 * order, keeping the first strictly greater score — so the result is the same
 * row and the same float32 score as the full float32 scan's first-maximum
 * argmax, bit for bit. (With unit rows ‖e_r‖ ≈ 0.008 at dim 512, so typically
 * one to a handful of rows are re-scored.)
 */

import { readFileSync } from 'node:fs';
import { createLogger, type Logger } from '../../util/log.js';

const PAGE = 65536;

/** The int8 stride: rows padded to a multiple of 64 (≥ the qscores loop step of 16). */
export function quantStride(dim: number): number {
  return Math.ceil(dim / 64) * 64;
}

/** kernel.wat assembled (scripts/build-wasm.mjs, wabt); checked against the .wat by kernel-wat.test.ts. */
export const KERNEL_WASM_URL = new URL('./kernel.wasm', import.meta.url);

type ScoresFn = (mat: number, q: number, n: number, dim: number, out: number) => void;

/** Why the SIMD kernel is not in use (null while it is, or before the first matrix). */
let unavailableReason: string | null = null;

/**
 * Compile the kernel, or say why not. A runtime without WebAssembly SIMD (an
 * old Node, `--no-experimental-wasm-simd`, a JIT-less build) cannot compile
 * it; the matrices then score in JS, about 10× slower at 10,000 rows. That is
 * worth one warning, not silence: a device that falls back misses the search
 * latency target and whoever reads its log should know why.
 */
export function loadKernel(bytes: BufferSource, logger: Logger): WebAssembly.Module | null {
  let reason: string;
  try {
    if (WebAssembly.validate(bytes)) return new WebAssembly.Module(bytes);
    reason = 'this runtime does not validate the module (no WebAssembly SIMD?)';
  } catch (err) {
    reason = err instanceof Error ? err.message : String(err);
  }
  unavailableReason = reason;
  logger.warn({ event: 'face_kernel_simd_unavailable', reason }, 'face matching falls back to the JS kernel: WebAssembly SIMD is unavailable');
  return null;
}

let compiled: WebAssembly.Module | null | undefined;
function kernelModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    let bytes: BufferSource;
    try {
      bytes = new Uint8Array(readFileSync(KERNEL_WASM_URL));
    } catch (err) {
      // A missing kernel file is a broken install, not a slow runtime: say so, still answer (in JS).
      bytes = new Uint8Array();
      unavailableReason = `cannot read ${KERNEL_WASM_URL.pathname}: ${(err as Error).message}`;
    }
    const logger = createLogger({ base: { component: 'face-kernel' } });
    if (bytes.byteLength === 0) {
      logger.error({ event: 'face_kernel_missing', reason: unavailableReason }, 'face matching falls back to the JS kernel: kernel.wasm is missing (run `npm run build`)');
      compiled = null;
    } else {
      compiled = loadKernel(bytes, logger);
    }
  }
  return compiled;
}

/** True when the SIMD kernel is available on this runtime. */
export function simdAvailable(): boolean {
  return kernelModule() !== null;
}

/** Why the SIMD kernel is unavailable, or null when it is in use. */
export function simdUnavailableReason(): string | null {
  kernelModule();
  return unavailableReason;
}

/** Round a dimension up to the kernel's stride (16 floats). Extra columns are zero. */
export function paddedDim(dim: number): number {
  return Math.ceil(dim / 16) * 16;
}

/** Plain JS scoring (reference and fallback). */
export function scoreJs(matrix: Float32Array, query: Float32Array, n: number, stride: number, out: Float32Array): void {
  for (let r = 0, o = 0; r < n; r++, o += stride) {
    let s0 = 0,
      s1 = 0,
      s2 = 0,
      s3 = 0;
    let j = 0;
    for (; j + 3 < stride; j += 4) {
      s0 += matrix[o + j]! * query[j]!;
      s1 += matrix[o + j + 1]! * query[j + 1]!;
      s2 += matrix[o + j + 2]! * query[j + 2]!;
      s3 += matrix[o + j + 3]! * query[j + 3]!;
    }
    for (; j < stride; j++) s0 += matrix[o + j]! * query[j]!;
    out[r] = s0 + s1 + s2 + s3;
  }
}

/** Unit roundoff of float32. */
const U32 = 2 ** -24;
/** Absolute slack for the float64 arithmetic of the bound (see the header). */
const F64_SLACK = 1e-9;
/** Above this share of rows to re-score, one full float32 scan is cheaper. */
const RESCORE_SHARE = 1 / 16;

type QScoresFn = (mat8: number, q16: number, n: number, qstride: number, out: number, cand: number, scale: number, resid: number, lsOut: number, t: number, ka: number, kc: number) => number;

/** The smallest float32 ≥ x (x ≥ 0, finite). */
function roundUp32(x: number): number {
  const f = Math.fround(x);
  if (f >= x) return f;
  // f < x < f + ulp(f), and ulp(f) ≤ f·2⁻²³ < 2·ulp(f): rounds to f + ulp or f + 2ulp.
  return f === 0 ? 2 ** -149 : Math.fround(f + f * 2 ** -23);
}

/**
 * The candidate collection of the qscores kernel, in JS, for `best` with a
 * skip predicate: over the rows skip does not reject, L* = max_r L_r (into
 * lStarOut[0]), and into cand (ascending) every row whose U_r reached the
 * running L* — L* only grows, so that is a superset of the rows with U_r ≥ the
 * final L*. Returns how many. A_r = scale[r]·t·d[r], E_r = resid[r]·ka + kc.
 */
function collect(n: number, scale: Float32Array, resid: Float32Array, d: Int32Array, t: number, ka: number, kc: number, cand: Int32Array, skip: (row: number) => boolean, lStarOut: Float64Array): number {
  let lStar = -Infinity;
  let nc = 0;
  for (let r = 0; r < n; r++) {
    if (skip(r)) continue;
    const a = scale[r]! * t * d[r]!;
    const e = resid[r]! * ka + kc;
    if (a + e >= lStar) {
      cand[nc++] = r;
      if (a - e > lStar) lStar = a - e;
    }
  }
  lStarOut[0] = lStar;
  return nc;
}

/**
 * A growable row-major Float32 matrix with a scores buffer, in wasm memory when
 * SIMD is available (else in ordinary typed arrays). With `quantise` (and
 * SIMD) it also keeps the int8 copy that `best` prefilters with.
 */
export class ScoreMatrix {
  readonly stride: number;
  /** Row length of the int8 copy (a multiple of 64). */
  readonly qstride: number;
  private rows = 0;
  private capacity: number;
  private readonly wasm: { memory: WebAssembly.Memory; scores: ScoresFn; qscores: QScoresFn } | null;
  private readonly quantised: boolean;
  /** Largest int16 probe magnitude: qstride·127·qmax < 2^31, so int32 sums never overflow. */
  private readonly qmax: number;
  /** γ_m for the float32 kernel's rounding (header). */
  private readonly gamma: number;
  private qOff = 0;
  private q16Off = 0;
  private outOff = 0;
  private iOutOff = 0;
  private lsOff = 0;
  private candOff = 0;
  private scaleOff = 0;
  private residOff = 0;
  private matOff = 0;
  private mat8Off = 0;
  private mat!: Float32Array;
  private query!: Float32Array;
  private out!: Float32Array;
  private mat8!: Int8Array;
  /** The same bytes as int32 words (at8 offsets are multiples of 8). */
  private mat8w!: Int32Array;
  /** One row quantised, before it is interleaved into mat8 (zeroed after use); as int32 words. */
  private row8!: Int8Array;
  private row8w!: Int32Array;
  private q16!: Int16Array;
  private iout!: Int32Array;
  /**
   * Per row: the int8 scale s_r (a float32; x̂ is defined with exactly this
   * value) and ‖e_r‖ rounded up to a float32 (float32 halves what the
   * candidate pass reads after the scan has flushed the caches).
   */
  private scale!: Float32Array;
  private resid!: Float32Array;
  /** Upper bound on every row's float64 norm (the largest pushed since the last clear). */
  private maxNorm = 0;
  private lStar!: Float64Array;
  /** Rows the last `best` scored in float32 (diagnostics; all of them after a fallback to a full scan). */
  rescored = 0;
  /** Candidate rows of the last `best` (scratch). */
  private cand!: Int32Array;

  constructor(opts: { dim: number; initialCapacity?: number; useSimd?: boolean; quantise?: boolean }) {
    this.stride = paddedDim(opts.dim);
    this.qstride = quantStride(opts.dim);
    // A multiple of 4: the int8 copy is stored in blocks of four rows.
    this.capacity = Math.ceil(Math.max(16, opts.initialCapacity ?? 1024) / 4) * 4;
    const mod = opts.useSimd === false ? null : kernelModule();
    if (mod) {
      const inst = new WebAssembly.Instance(mod, {});
      this.wasm = { memory: inst.exports.mem as WebAssembly.Memory, scores: inst.exports.scores as ScoresFn, qscores: inst.exports.qscores as QScoresFn };
    } else {
      this.wasm = null;
    }
    this.quantised = this.wasm !== null && opts.quantise === true;
    this.qmax = Math.min(32767, Math.floor((2 ** 31 - 1) / (127 * this.qstride)));
    const m = this.stride + 8;
    this.gamma = (m * U32) / (1 - m * U32);
    this.allocate(this.capacity, null);
  }

  get size(): number {
    return this.rows;
  }

  get simd(): boolean {
    return this.wasm !== null;
  }

  /** True when `best` uses the int8 prefilter. */
  get prefilter(): boolean {
    return this.quantised;
  }

  /** The live matrix (rows × stride). Views are replaced when the matrix grows. */
  get data(): Float32Array {
    return this.mat.subarray(0, this.rows * this.stride);
  }

  row(i: number): Float32Array {
    return this.mat.subarray(i * this.stride, (i + 1) * this.stride);
  }

  /** Append a row (already normalised by the caller); returns its index. */
  push(v: Float32Array): number {
    if (this.rows === this.capacity) this.grow(this.capacity * 2);
    const o = this.rows * this.stride;
    this.mat.set(v.subarray(0, Math.min(v.length, this.stride)), o);
    this.mat.fill(0, o + v.length, o + this.stride);
    if (this.quantised) this.quantiseRow(this.rows);
    return this.rows++;
  }

  /** Move the last row into slot i (O(1) delete); returns the index that moved, or -1. */
  removeSwap(i: number): number {
    const last = this.rows - 1;
    if (i !== last) {
      this.mat.copyWithin(i * this.stride, last * this.stride, (last + 1) * this.stride);
      if (this.quantised) {
        const to = this.at8(i);
        const from = this.at8(last);
        for (let c = 0; c < this.qstride; c += 8) this.mat8.copyWithin(to + 4 * c, from + 4 * c, from + 4 * c + 8);
        this.scale[i] = this.scale[last]!;
        this.resid[i] = this.resid[last]!;
      }
    }
    // The vacated slot holds no template any more.
    this.mat.fill(0, last * this.stride, (last + 1) * this.stride);
    if (this.quantised) {
      const o = this.at8(last);
      for (let c = 0; c < this.qstride; c += 8) this.mat8.fill(0, o + 4 * c, o + 4 * c + 8);
      this.scale[last] = 0;
      this.resid[last] = 0;
    }
    this.rows--;
    return i !== last ? last : -1;
  }

  /** Drop every row and zero all memory that held templates, probes or scores (both copies). */
  clear(): void {
    this.mat.fill(0);
    this.query.fill(0);
    this.out.fill(0);
    if (this.quantised) {
      this.mat8.fill(0);
      this.q16.fill(0);
      this.iout.fill(0);
      this.scale.fill(0);
      this.resid.fill(0);
      this.cand.fill(0);
      this.lStar.fill(0);
    }
    this.maxNorm = 0;
    this.rows = 0;
  }

  /** Scores of every row against `q` (length ≤ stride). The returned view is reused by the next call. */
  scores(q: Float32Array): Float32Array {
    this.setQuery(q);
    if (this.wasm) this.wasm.scores(this.matOff, this.qOff, this.rows, this.stride, this.outOff);
    else scoreJs(this.mat, this.query, this.rows, this.stride, this.out);
    return this.out.subarray(0, this.rows);
  }

  /**
   * The first row with the highest float32 score against `q` among the rows
   * `skip` does not reject, and that score: exactly what argmax over
   * `scores(q)` gives (same row, same float32 value), via the int8 prefilter
   * when the matrix is quantised (proof in the header). Null if no row qualifies.
   */
  best(q: Float32Array, skip?: (row: number) => boolean): { row: number; score: number } | null {
    if (!this.quantised || this.rows === 0) {
      this.rescored = this.rows;
      return this.argmaxOf(this.scores(q), skip);
    }
    const wasm = this.wasm!;
    const n = this.rows;
    const { t, ka, kc, nc: ncScan } = this.prefilterScan(q);
    const d = this.iout;
    const scale = this.scale;
    const resid = this.resid;
    const cand = this.cand;
    // Without skip the kernel has collected the candidates during the scan.
    const nc = skip === undefined ? ncScan : collect(n, scale, resid, d, t, ka, kc, cand, skip, this.lStar);
    if (nc === 0) {
      this.rescored = 0;
      return null;
    }
    // Final filter against the final L*, then exact float32 re-scores in row order.
    const lStar = this.lStar[0]!;
    let m = 0;
    for (let k = 0; k < nc; k++) {
      const r = cand[k]!;
      if (scale[r]! * t * d[r]! + (resid[r]! * ka + kc) >= lStar) cand[m++] = r;
    }
    if (m > 32 && m > n * RESCORE_SHARE) {
      this.rescored = n;
      wasm.scores(this.matOff, this.qOff, n, this.stride, this.outOff);
      return this.argmaxOf(this.out.subarray(0, n), skip);
    }
    this.rescored = m;
    const rowBytes = this.stride * 4;
    const out = this.out;
    let best = -Infinity;
    let row = -1;
    for (let k = 0; k < m; k++) {
      const r = cand[k]!;
      wasm.scores(this.matOff + r * rowBytes, this.qOff, 1, this.stride, this.outOff);
      const s = out[0]!;
      if (s > best) {
        best = s;
        row = r;
      }
    }
    return row < 0 ? null : { row, score: best };
  }

  /**
   * The prefilter's view of every row for `q` (diagnostics and tests):
   * approx[r] = A_r and err[r] = E_r, so the float32 score lies in approx ± err.
   */
  bounds(q: Float32Array): { approx: Float64Array; err: Float64Array } {
    if (!this.quantised) throw new Error('bounds() needs a quantised matrix with wasm SIMD');
    const { t, ka, kc } = this.prefilterScan(q);
    const approx = new Float64Array(this.rows);
    const err = new Float64Array(this.rows);
    for (let r = 0; r < this.rows; r++) {
      approx[r] = this.scale[r]! * t * this.iout[r]!;
      err[r] = this.resid[r]! * ka + kc;
    }
    return { approx, err };
  }

  /**
   * Sets the query (float32 and int16 copies), runs the int8 kernel into iout
   * and returns the per-query constants of the bound: A_r = scale[r]·t·iout[r],
   * E_r = resid[r]·ka + kc.
   */
  private prefilterScan(q: Float32Array): { t: number; ka: number; kc: number; nc: number } {
    this.setQuery(q);
    const query = this.query;
    const q16 = this.q16;
    let amax = 0;
    let qq = 0;
    for (let i = 0; i < this.stride; i++) {
      const v = query[i]!;
      qq += v * v;
      const a = Math.abs(v);
      if (a > amax) amax = a;
    }
    const t = amax / this.qmax;
    let ff = 0;
    if (t > 0) {
      const inv = this.qmax / amax;
      for (let i = 0; i < this.stride; i++) {
        const v = query[i]!;
        let k = Math.round(v * inv);
        if (k > this.qmax) k = this.qmax;
        else if (k < -this.qmax) k = -this.qmax;
        q16[i] = k;
        const f = v - k * t;
        ff += f * f;
      }
    } else {
      q16.fill(0, 0, this.stride);
    }
    const qn = Math.sqrt(qq);
    const fn = Math.sqrt(ff);
    const ka = qn + fn;
    const kc = this.maxNorm * (this.gamma * qn + fn) + F64_SLACK;
    const nc = this.wasm!.qscores(this.mat8Off, this.q16Off, this.rows, this.qstride, this.iOutOff, this.candOff, this.scaleOff, this.residOff, this.lsOff, t, ka, kc);
    return { t, ka, kc, nc };
  }

  private argmaxOf(scores: Float32Array, skip?: (row: number) => boolean): { row: number; score: number } | null {
    let best = -Infinity;
    let row = -1;
    for (let i = 0; i < scores.length; i++) {
      const s = scores[i]!;
      if (s > best && !skip?.(i)) {
        best = s;
        row = i;
      }
    }
    return row < 0 ? null : { row, score: best };
  }

  private setQuery(q: Float32Array): void {
    this.query.set(q.subarray(0, Math.min(q.length, this.stride)));
    this.query.fill(0, q.length);
  }

  /**
   * Where row i's first chunk sits in the int8 copy: blocks of four rows,
   * chunks of 8 elements interleaved (element j at at8(i) + 4·(j & ~7) + (j & 7)).
   */
  private at8(i: number): number {
    return (i >> 2) * 4 * this.qstride + (i & 3) * 8;
  }

  /** int8 copy, scale and residual norm of row i (its float32 values as stored). */
  private quantiseRow(i: number): void {
    const mat = this.mat;
    const stride = this.stride;
    const o = i * stride;
    const o8 = this.at8(i);
    let amax = 0;
    let xx = 0;
    for (let j = 0; j < stride; j++) {
      const v = mat[o + j]!;
      xx += v * v;
      const a = Math.abs(v);
      if (a > amax) amax = a;
    }
    const s = Math.fround(amax / 127);
    // Any integer k in range would keep the bound valid (e is measured against
    // s·k); nearest (half up: floor(x + 0.5), x + 128.5 > 0) is the tight choice.
    const inv = s > 0 ? 1 / s : 0;
    const row8 = this.row8;
    let ee = 0;
    for (let j = 0; j < stride; j++) {
      const v = mat[o + j]!;
      let k = ((v * inv + 128.5) | 0) - 128;
      if (k > 127) k = 127;
      else if (k < -127) k = -127;
      row8[j] = k;
      const e = v - k * s;
      ee += e * e;
    }
    // Into the block layout, 8 bytes (two int32 words) a chunk: chunk c at o8 + 32c.
    const src = this.row8w;
    const dst = this.mat8w;
    for (let c = 0, w = o8 >> 2; c < this.qstride / 8; c++, w += 8) {
      dst[w] = src[2 * c]!;
      dst[w + 1] = src[2 * c + 1]!;
    }
    row8.fill(0);
    this.scale[i] = s;
    this.resid[i] = roundUp32(Math.sqrt(ee));
    const norm = Math.sqrt(xx);
    if (norm > this.maxNorm) this.maxNorm = norm;
  }

  private grow(capacity: number): void {
    const keep8 = this.quantised ? this.mat8.slice(0, Math.ceil(this.rows / 4) * 4 * this.qstride) : null;
    this.allocate(capacity, this.mat.slice(0, this.rows * this.stride), keep8);
    this.capacity = capacity;
  }

  private allocate(capacity: number, keep: Float32Array | null, keep8: Int8Array | null = null): void {
    const qBytes = this.stride * 4;
    const outBytes = Math.ceil((capacity * 4) / 16) * 16;
    const matBytes = capacity * this.stride * 4;
    if (this.wasm) {
      const mem = this.wasm.memory;
      const q = this.quantised;
      const keepScale = q && this.scale ? this.scale.slice(0, this.rows) : null;
      const keepResid = q && this.resid ? this.resid.slice(0, this.rows) : null;
      const q16Bytes = q ? this.qstride * 2 : 0;
      const rowArrayBytes = q ? outBytes : 0; // iout, cand, scale, resid: 4 bytes a row each
      const lsBytes = q ? 16 : 0;
      const mat8Bytes = q ? capacity * this.qstride : 0;
      const need = qBytes + q16Bytes + outBytes + 4 * rowArrayBytes + lsBytes + matBytes + mat8Bytes;
      if (need > mem.buffer.byteLength) mem.grow(Math.ceil((need - mem.buffer.byteLength) / PAGE));
      if (this.mat) {
        // Re-layout: zero every byte the old layout held data in (its rows are in
        // keep/keep8 and are written back below). Not the whole memory: pages
        // never written (fresh from grow, or rows beyond the last) stay untouched
        // and out of the RSS.
        const bytes = new Uint8Array(mem.buffer);
        bytes.fill(0, 0, this.matOff);
        bytes.fill(0, this.matOff, this.matOff + this.rows * this.stride * 4);
        if (q) bytes.fill(0, this.mat8Off, this.mat8Off + Math.ceil(this.rows / 4) * 4 * this.qstride);
      }
      this.qOff = 0;
      this.q16Off = qBytes;
      this.outOff = this.q16Off + q16Bytes;
      this.iOutOff = this.outOff + outBytes;
      this.candOff = this.iOutOff + rowArrayBytes;
      this.scaleOff = this.candOff + rowArrayBytes;
      this.residOff = this.scaleOff + rowArrayBytes;
      this.lsOff = this.residOff + rowArrayBytes;
      this.matOff = this.lsOff + lsBytes;
      this.mat8Off = this.matOff + matBytes;
      this.query = new Float32Array(mem.buffer, this.qOff, this.stride);
      this.out = new Float32Array(mem.buffer, this.outOff, capacity);
      this.mat = new Float32Array(mem.buffer, this.matOff, capacity * this.stride);
      if (keep) this.mat.set(keep);
      if (q) {
        this.q16 = new Int16Array(mem.buffer, this.q16Off, this.qstride);
        this.iout = new Int32Array(mem.buffer, this.iOutOff, capacity);
        this.cand = new Int32Array(mem.buffer, this.candOff, capacity);
        this.scale = new Float32Array(mem.buffer, this.scaleOff, capacity);
        this.resid = new Float32Array(mem.buffer, this.residOff, capacity);
        this.lStar = new Float64Array(mem.buffer, this.lsOff, 1);
        this.mat8 = new Int8Array(mem.buffer, this.mat8Off, capacity * this.qstride);
        this.mat8w = new Int32Array(mem.buffer, this.mat8Off, (capacity * this.qstride) / 4);
        if (!this.row8) {
          this.row8 = new Int8Array(this.qstride);
          this.row8w = new Int32Array(this.row8.buffer);
        }
        if (keep8) this.mat8.set(keep8);
        if (keepScale) this.scale.set(keepScale);
        if (keepResid) this.resid.set(keepResid);
        keepScale?.fill(0);
        keepResid?.fill(0);
      }
    } else {
      this.query = new Float32Array(this.stride);
      this.out = new Float32Array(capacity);
      const mat = new Float32Array(capacity * this.stride);
      if (keep) mat.set(keep);
      this.mat?.fill(0);
      this.mat = mat;
    }
    keep?.fill(0);
    keep8?.fill(0);
  }
}
