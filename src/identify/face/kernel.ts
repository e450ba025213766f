/**
 * The scoring kernel: scores[r] = dot(matrix row r, query) for every row, in
 * WebAssembly SIMD (f32x4, four independent accumulators: 16 floats per loop
 * step). A plain JS loop does ~1 multiply-add per ns; the SIMD kernel is
 * memory-bound instead (10,000 × 512 floats = 20 MB per query).
 *
 * The module is 200-odd bytes, assembled here from its opcodes so the build has
 * no WebAssembly toolchain step; the same computation in JS (`scoreJs`) is the
 * fallback where SIMD is unavailable and the reference the tests compare with.
 *
 * Memory layout (one linear memory, owned by the kernel):
 *   [0, qBytes)                 the query (dim floats)
 *   [q16Off, +qstride*2)        the query quantised to int16 (quantised matrices only)
 *   [outOff, +n*4)              the float32 scores output
 *   [iOutOff, +n*4)             the int32 quantised scores output (quantised matrices only)
 *   [matOff, +n*stride*4)       the template matrix, row-major
 *   [mat8Off, +n*qstride)       its int8 copy, row-major (quantised matrices only)
 * The matrices live in wasm memory itself so a search copies nothing.
 *
 * EXACT SEARCH WITH AN INT8 PREFILTER (`best`)
 *
 * A float32 scan reads n*dim*4 bytes per query and is memory-bound. A
 * quantised matrix (option `quantise`) also keeps each row r as int8:
 *   s_r = max_i |x_ri| / 127,  x8_ri = round(x_ri / s_r) ∈ [-127, 127],
 * and the query as int16 (Q = the largest int16 magnitude that cannot overflow
 * an int32 sum, ≤ 32767):
 *   t = max_i |q_i| / Q,  q16_i = round(q_i / t).
 * The `qscores` kernel computes D_r = Σ_i x8_ri·q16_i exactly in int32
 * (v128.load8x8_s sign-extends 8 row bytes to int16; i32x4.dot_i16x8_s
 * multiplies and adds pairs; no overflow: |D_r| ≤ qstride·127·Q < 2^31), a
 * quarter of the bytes of the float32 scan. A_r = s_r·t·D_r approximates the
 * score; `best` then re-scores in float32, with the very kernel the full scan
 * uses, only the rows whose score can still be the maximum.
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
 * With ‖e_r‖ measured per row at insert (float64), N = an upper bound on every
 * row's ‖x‖ (the largest inserted, kept until clear), and ‖q‖, ‖f‖ measured per
 * query (float64):
 *   |S_r − A_r| ≤ E_r = ‖e_r‖·(‖q‖ + ‖f‖) + N·(γ_m·‖q‖ + ‖f‖) + 1e-9
 * where the 1e-9 absorbs every float64 rounding in computing A_r, ‖e_r‖, ‖q‖,
 * ‖f‖, N and E_r itself (each is a few ulps of a quantity ≤ ~dim, i.e. < 1e-12).
 * So S_r ∈ [L_r, U_r] = [A_r − E_r, A_r + E_r]. Let L* = max_r L_r (over the
 * rows eligible for the answer). The float32 argmax row r* has S_r* ≥ L*, and
 * any row with U_r < L* has S_r < L* ≤ S_r*: it can neither be the maximum nor
 * tie with it. Every other row (U_r ≥ L*) is re-scored in float32, in row
 * order, keeping the first strictly greater score — so the result is the same
 * row and the same float32 score as the full float32 scan's first-maximum
 * argmax, bit for bit. (With unit rows ‖e_r‖ ≈ 0.008 at dim 512, so typically
 * one to a handful of rows are re-scored.)
 */

const PAGE = 65536;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

const I32 = 0x7f;
const V128 = 0x7b;
// Opcodes used below.
const LOCAL_GET = 0x20, LOCAL_SET = 0x21, I32_CONST = 0x41, I32_ADD = 0x6a, I32_LT_U = 0x49, I32_SHL = 0x74;
const LOOP = 0x03, BLOCK = 0x02, BR_IF = 0x0d, END = 0x0b, VOID = 0x40, I32_EQZ = 0x45;
const F32_STORE = 0x38, F32_ADD = 0x92, I32_STORE = 0x36;
const SIMD = 0xfd;
const V128_LOAD = [SIMD, 0x00], V128_CONST_ZERO = [SIMD, 0x0c, ...new Array<number>(16).fill(0)];
const F32X4_ADD = [SIMD, ...uleb(0xe4)], F32X4_MUL = [SIMD, ...uleb(0xe6)];
const lane = (i: number) => [SIMD, 0x1f, i];
const V128_LOAD8X8_S = [SIMD, 0x01];
const I32X4_ADD = [SIMD, ...uleb(0xae)], I32X4_DOT_I16X8_S = [SIMD, ...uleb(0xba)];
const ilane = (i: number) => [SIMD, 0x1b, i];
/** The int8 stride: rows padded to a multiple of 64 (the qscores loop step). */
export function quantStride(dim: number): number {
  return Math.ceil(dim / 64) * 64;
}

/**
 * scores(mat, q, n, dim, out): params 0..4. Locals: 5 r, 6 mp, 7 qp, 8 qend,
 * 9..12 accumulators a0..a3. dim must be a multiple of 16 (callers pad).
 */
function scoresBody(): number[] {
  const [mat, q, n, dim, out, r, mp, qp, qend] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const acc = [9, 10, 11, 12];
  const get = (i: number) => [LOCAL_GET, i];
  const set = (i: number) => [LOCAL_SET, i];
  const fma = (a: number, off: number) => [
    ...get(a),
    ...get(mp), ...V128_LOAD, 4, ...uleb(off),
    ...get(qp), ...V128_LOAD, 4, ...uleb(off),
    ...F32X4_MUL, ...F32X4_ADD, ...set(a),
  ];
  const body: number[] = [
    // locals: 4 × i32, 4 × v128
    2, 4, I32, 4, V128,
    ...get(mat), ...set(mp),
    // qend = q + dim * 4
    ...get(q), ...get(dim), I32_CONST, 2, I32_SHL, I32_ADD, ...set(qend),
    BLOCK, VOID,
    ...get(n), I32_EQZ, BR_IF, 0,
    LOOP, VOID,
    ...acc.flatMap((a) => [...V128_CONST_ZERO, ...set(a)]),
    ...get(q), ...set(qp),
    LOOP, VOID,
    ...fma(acc[0]!, 0), ...fma(acc[1]!, 16), ...fma(acc[2]!, 32), ...fma(acc[3]!, 48),
    ...get(mp), I32_CONST, ...[0xc0, 0x00], I32_ADD, ...set(mp), // += 64 (signed LEB 64 = c0 00)
    ...get(qp), I32_CONST, ...[0xc0, 0x00], I32_ADD, ...set(qp),
    ...get(qp), ...get(qend), I32_LT_U, BR_IF, 0,
    END,
    // a0 = (a0 + a1) + (a2 + a3); out[r] = lane0 + lane1 + lane2 + lane3
    ...get(acc[0]!), ...get(acc[1]!), ...F32X4_ADD, ...get(acc[2]!), ...get(acc[3]!), ...F32X4_ADD, ...F32X4_ADD, ...set(acc[0]!),
    ...get(out),
    ...get(acc[0]!), ...lane(0), ...get(acc[0]!), ...lane(1), F32_ADD, ...get(acc[0]!), ...lane(2), ...get(acc[0]!), ...lane(3), F32_ADD, F32_ADD,
    F32_STORE, 2, 0,
    ...get(out), I32_CONST, 4, I32_ADD, ...set(out),
    ...get(r), I32_CONST, 1, I32_ADD, ...set(r),
    ...get(r), ...get(n), I32_LT_U, BR_IF, 0,
    END,
    END,
    END,
  ];
  return body;
}

/**
 * qscores(mat8, q16, n, qstride, out): out[r] (int32) = Σ mat8[r][i]·q16[i].
 * Same locals as scores. qstride must be a multiple of 64 (callers pad with
 * zeros); one loop step is 64 elements: 8 × (load8x8_s → dot_i16x8_s) into
 * four int32x4 accumulators.
 */
function qscoresBody(): number[] {
  const [mat, q, n, qstride, out, r, mp, qp, qend] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const acc = [9, 10, 11, 12];
  const get = (i: number) => [LOCAL_GET, i];
  const set = (i: number) => [LOCAL_SET, i];
  const step = (a: number, c: number) => [
    ...get(a),
    ...get(mp), ...V128_LOAD8X8_S, 3, ...uleb(8 * c),
    ...get(qp), ...V128_LOAD, 4, ...uleb(16 * c),
    ...I32X4_DOT_I16X8_S, ...I32X4_ADD, ...set(a),
  ];
  return [
    2, 4, I32, 4, V128,
    ...get(mat), ...set(mp),
    // qend = q + qstride * 2
    ...get(q), ...get(qstride), I32_CONST, 1, I32_SHL, I32_ADD, ...set(qend),
    BLOCK, VOID,
    ...get(n), I32_EQZ, BR_IF, 0,
    LOOP, VOID,
    ...acc.flatMap((a) => [...V128_CONST_ZERO, ...set(a)]),
    ...get(q), ...set(qp),
    LOOP, VOID,
    ...[0, 1, 2, 3, 4, 5, 6, 7].flatMap((c) => step(acc[c % 4]!, c)),
    ...get(mp), I32_CONST, ...[0xc0, 0x00], I32_ADD, ...set(mp), // += 64 (signed LEB)
    ...get(qp), I32_CONST, ...[0x80, 0x01], I32_ADD, ...set(qp), // += 128
    ...get(qp), ...get(qend), I32_LT_U, BR_IF, 0,
    END,
    ...get(acc[0]!), ...get(acc[1]!), ...I32X4_ADD, ...get(acc[2]!), ...get(acc[3]!), ...I32X4_ADD, ...I32X4_ADD, ...set(acc[0]!),
    ...get(out),
    ...get(acc[0]!), ...ilane(0), ...get(acc[0]!), ...ilane(1), I32_ADD, ...get(acc[0]!), ...ilane(2), ...get(acc[0]!), ...ilane(3), I32_ADD, I32_ADD,
    I32_STORE, 2, 0,
    ...get(out), I32_CONST, 4, I32_ADD, ...set(out),
    ...get(r), I32_CONST, 1, I32_ADD, ...set(r),
    ...get(r), ...get(n), I32_LT_U, BR_IF, 0,
    END,
    END,
    END,
  ];
}

function buildKernel(): Uint8Array<ArrayBuffer> {
  const f0 = scoresBody();
  const f1 = qscoresBody();
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 5, I32, I32, I32, I32, I32, 0]),
    ...section(3, [2, 0, 0]),
    ...section(5, [1, 0x00, 1]),
    ...section(7, [3, 3, ...Buffer.from('mem'), 0x02, 0, 6, ...Buffer.from('scores'), 0x00, 0, 7, ...Buffer.from('qscores'), 0x00, 1]),
    ...section(10, [2, ...uleb(f0.length), ...f0, ...uleb(f1.length), ...f1]),
  ];
  return Uint8Array.from(bytes);
}

type ScoresFn = (mat: number, q: number, n: number, dim: number, out: number) => void;

let compiled: WebAssembly.Module | null | undefined;
function kernelModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    const bytes = buildKernel();
    compiled = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  }
  return compiled;
}

/** True when the SIMD kernel is available on this runtime. */
export function simdAvailable(): boolean {
  return kernelModule() !== null;
}

/** Round a dimension up to the kernel's stride (16 floats). Extra columns are zero. */
export function paddedDim(dim: number): number {
  return Math.ceil(dim / 16) * 16;
}

/** Plain JS scoring (reference and fallback). */
export function scoreJs(matrix: Float32Array, query: Float32Array, n: number, stride: number, out: Float32Array): void {
  for (let r = 0, o = 0; r < n; r++, o += stride) {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
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

type QScoresFn = ScoresFn;

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
  private matOff = 0;
  private mat8Off = 0;
  private mat!: Float32Array;
  private query!: Float32Array;
  private out!: Float32Array;
  private mat8!: Int8Array;
  private q16!: Int16Array;
  private iout!: Int32Array;
  /** Per row: [scale s_r, ‖e_r‖] (float64). */
  private meta!: Float64Array;
  /** Upper bound on every row's float64 norm (the largest pushed since the last clear). */
  private maxNorm = 0;
  /** Candidate rows of the last `best` (scratch). */
  private cand!: Int32Array;

  constructor(opts: { dim: number; initialCapacity?: number; useSimd?: boolean; quantise?: boolean }) {
    this.stride = paddedDim(opts.dim);
    this.qstride = quantStride(opts.dim);
    this.capacity = Math.max(16, opts.initialCapacity ?? 1024);
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
        this.mat8.copyWithin(i * this.qstride, last * this.qstride, (last + 1) * this.qstride);
        this.meta.copyWithin(2 * i, 2 * last, 2 * last + 2);
      }
    }
    // The vacated slot holds no template any more.
    this.mat.fill(0, last * this.stride, (last + 1) * this.stride);
    if (this.quantised) {
      this.mat8.fill(0, last * this.qstride, (last + 1) * this.qstride);
      this.meta.fill(0, 2 * last, 2 * last + 2);
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
      this.meta.fill(0);
      this.cand.fill(0);
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
    if (!this.quantised || this.rows === 0) return this.argmaxOf(this.scores(q), skip);
    const wasm = this.wasm!;
    const n = this.rows;
    this.setQuery(q);
    // Quantise the query to int16 and measure ‖q‖, ‖f‖ (float64).
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
    wasm.qscores(this.mat8Off, this.q16Off, n, this.qstride, this.iOutOff);
    const qn = Math.sqrt(qq);
    const fn = Math.sqrt(ff);
    const ka = qn + fn;
    const kc = this.maxNorm * (this.gamma * qn + fn) + F64_SLACK;
    const d = this.iout;
    const meta = this.meta;
    const cand = this.cand;
    // One pass: L* = max L_r, keeping every row whose U_r reached the running L*
    // (L* only grows, so this is a superset of the final candidates).
    let lStar = -Infinity;
    let nc = 0;
    for (let r = 0; r < n; r++) {
      if (skip && skip(r)) continue;
      const a = meta[2 * r]! * t * d[r]!;
      const e = meta[2 * r + 1]! * ka + kc;
      if (a + e >= lStar) {
        cand[nc++] = r;
        if (a - e > lStar) lStar = a - e;
      }
    }
    if (nc === 0) return null;
    // Final filter against the final L*, then exact float32 re-scores in row order.
    let m = 0;
    for (let k = 0; k < nc; k++) {
      const r = cand[k]!;
      if (meta[2 * r]! * t * d[r]! + meta[2 * r + 1]! * ka + kc >= lStar) cand[m++] = r;
    }
    if (m > n * RESCORE_SHARE) {
      wasm.scores(this.matOff, this.qOff, n, this.stride, this.outOff);
      return this.argmaxOf(this.out.subarray(0, n), skip);
    }
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

  private argmaxOf(scores: Float32Array, skip?: (row: number) => boolean): { row: number; score: number } | null {
    let best = -Infinity;
    let row = -1;
    for (let i = 0; i < scores.length; i++) {
      const s = scores[i]!;
      if (s > best && !(skip && skip(i))) {
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

  /** int8 copy, scale and residual norm of row i (its float32 values as stored). */
  private quantiseRow(i: number): void {
    const o = i * this.stride;
    const o8 = i * this.qstride;
    let amax = 0;
    let xx = 0;
    for (let j = 0; j < this.stride; j++) {
      const v = this.mat[o + j]!;
      xx += v * v;
      const a = Math.abs(v);
      if (a > amax) amax = a;
    }
    const s = amax / 127;
    let ee = 0;
    for (let j = 0; j < this.stride; j++) {
      const v = this.mat[o + j]!;
      let k = s > 0 ? Math.round(v / s) : 0;
      if (k > 127) k = 127;
      else if (k < -127) k = -127;
      this.mat8[o8 + j] = k;
      const e = v - k * s;
      ee += e * e;
    }
    this.mat8.fill(0, o8 + this.stride, o8 + this.qstride);
    this.meta[2 * i] = s;
    this.meta[2 * i + 1] = Math.sqrt(ee);
    const norm = Math.sqrt(xx);
    if (norm > this.maxNorm) this.maxNorm = norm;
  }

  private grow(capacity: number): void {
    const keep8 = this.quantised ? this.mat8.slice(0, this.rows * this.qstride) : null;
    const keepMeta = this.quantised ? this.meta.slice(0, 2 * this.rows) : null;
    this.allocate(capacity, this.mat.slice(0, this.rows * this.stride), keep8, keepMeta);
    this.capacity = capacity;
  }

  private allocate(capacity: number, keep: Float32Array | null, keep8: Int8Array | null = null, keepMeta: Float64Array | null = null): void {
    const qBytes = this.stride * 4;
    const outBytes = Math.ceil((capacity * 4) / 16) * 16;
    const matBytes = capacity * this.stride * 4;
    if (this.wasm) {
      const mem = this.wasm.memory;
      const q16Bytes = this.quantised ? this.qstride * 2 : 0;
      const iOutBytes = this.quantised ? outBytes : 0;
      const mat8Bytes = this.quantised ? capacity * this.qstride : 0;
      const need = qBytes + q16Bytes + outBytes + iOutBytes + matBytes + mat8Bytes;
      if (need > mem.buffer.byteLength) mem.grow(Math.ceil((need - mem.buffer.byteLength) / PAGE));
      // The old regions are overwritten below (the new layout overlaps them); zero what is left of them.
      new Uint8Array(mem.buffer).fill(0);
      this.qOff = 0;
      this.q16Off = qBytes;
      this.outOff = this.q16Off + q16Bytes;
      this.iOutOff = this.outOff + outBytes;
      this.matOff = this.iOutOff + iOutBytes;
      this.mat8Off = this.matOff + matBytes;
      this.query = new Float32Array(mem.buffer, this.qOff, this.stride);
      this.out = new Float32Array(mem.buffer, this.outOff, capacity);
      this.mat = new Float32Array(mem.buffer, this.matOff, capacity * this.stride);
      if (keep) this.mat.set(keep);
      if (this.quantised) {
        this.q16 = new Int16Array(mem.buffer, this.q16Off, this.qstride);
        this.iout = new Int32Array(mem.buffer, this.iOutOff, capacity);
        this.mat8 = new Int8Array(mem.buffer, this.mat8Off, capacity * this.qstride);
        if (keep8) this.mat8.set(keep8);
        const meta = new Float64Array(capacity * 2);
        if (keepMeta) meta.set(keepMeta);
        this.meta?.fill(0);
        this.meta = meta;
        this.cand = new Int32Array(capacity);
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
    keepMeta?.fill(0);
  }
}
