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
 *   [qBytes, qBytes + n*4)      the scores output
 *   [matOff, matOff + n*dim*4)  the template matrix, row-major
 * The matrix lives in wasm memory itself so a search copies nothing.
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
const F32_STORE = 0x38, F32_ADD = 0x92;
const SIMD = 0xfd;
const V128_LOAD = [SIMD, 0x00], V128_CONST_ZERO = [SIMD, 0x0c, ...new Array<number>(16).fill(0)];
const F32X4_ADD = [SIMD, ...uleb(0xe4)], F32X4_MUL = [SIMD, ...uleb(0xe6)];
const lane = (i: number) => [SIMD, 0x1f, i];

/**
 * scores(mat, q, n, dim, out): params 0..4. Locals: 5 r, 6 mp, 7 qp, 8 qend,
 * 9..12 accumulators a0..a3. dim must be a multiple of 16 (callers pad).
 */
function buildKernel(): Uint8Array<ArrayBuffer> {
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
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 5, I32, I32, I32, I32, I32, 0]),
    ...section(3, [1, 0]),
    ...section(5, [1, 0x00, 1]),
    ...section(7, [2, 3, ...Buffer.from('mem'), 0x02, 0, 6, ...Buffer.from('scores'), 0x00, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
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

/**
 * A growable row-major Float32 matrix with a scores buffer, in wasm memory when
 * SIMD is available (else in ordinary typed arrays).
 */
export class ScoreMatrix {
  readonly stride: number;
  private rows = 0;
  private capacity: number;
  private readonly wasm: { memory: WebAssembly.Memory; scores: ScoresFn } | null;
  private qOff = 0;
  private outOff = 0;
  private matOff = 0;
  private mat!: Float32Array;
  private query!: Float32Array;
  private out!: Float32Array;

  constructor(opts: { dim: number; initialCapacity?: number; useSimd?: boolean }) {
    this.stride = paddedDim(opts.dim);
    this.capacity = Math.max(16, opts.initialCapacity ?? 1024);
    const mod = opts.useSimd === false ? null : kernelModule();
    if (mod) {
      const inst = new WebAssembly.Instance(mod, {});
      this.wasm = { memory: inst.exports.mem as WebAssembly.Memory, scores: inst.exports.scores as ScoresFn };
    } else {
      this.wasm = null;
    }
    this.allocate(this.capacity, null);
  }

  get size(): number {
    return this.rows;
  }

  get simd(): boolean {
    return this.wasm !== null;
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
    return this.rows++;
  }

  /** Move the last row into slot i (O(1) delete); returns the index that moved, or -1. */
  removeSwap(i: number): number {
    const last = this.rows - 1;
    if (i !== last) this.mat.copyWithin(i * this.stride, last * this.stride, (last + 1) * this.stride);
    this.rows--;
    return i !== last ? last : -1;
  }

  clear(): void {
    this.mat.fill(0);
    this.rows = 0;
  }

  /** Scores of every row against `q` (length ≤ stride). The returned view is reused by the next call. */
  scores(q: Float32Array): Float32Array {
    this.query.set(q.subarray(0, Math.min(q.length, this.stride)));
    this.query.fill(0, q.length);
    if (this.wasm) this.wasm.scores(this.matOff, this.qOff, this.rows, this.stride, this.outOff);
    else scoreJs(this.mat, this.query, this.rows, this.stride, this.out);
    return this.out.subarray(0, this.rows);
  }

  private grow(capacity: number): void {
    this.allocate(capacity, this.mat.slice(0, this.rows * this.stride));
    this.capacity = capacity;
  }

  private allocate(capacity: number, keep: Float32Array | null): void {
    const qBytes = this.stride * 4;
    const outBytes = Math.ceil((capacity * 4) / 16) * 16;
    const matBytes = capacity * this.stride * 4;
    if (this.wasm) {
      const mem = this.wasm.memory;
      const need = qBytes + outBytes + matBytes;
      if (need > mem.buffer.byteLength) mem.grow(Math.ceil((need - mem.buffer.byteLength) / PAGE));
      this.qOff = 0;
      this.outOff = qBytes;
      this.matOff = qBytes + outBytes;
      this.query = new Float32Array(mem.buffer, this.qOff, this.stride);
      this.out = new Float32Array(mem.buffer, this.outOff, capacity);
      this.mat = new Float32Array(mem.buffer, this.matOff, capacity * this.stride);
      // The scores region grew over the old matrix start: rewrite the rows at their new offset.
      if (keep) this.mat.set(keep);
    } else {
      this.query = new Float32Array(this.stride);
      this.out = new Float32Array(capacity);
      const mat = new Float32Array(capacity * this.stride);
      if (keep) mat.set(keep);
      this.mat = mat;
    }
  }
}
