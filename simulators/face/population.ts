/**
 * A synthetic population for the face-module simulator.
 *
 * Real face embeddings (ArcFace, FaceNet) are unit vectors whose identities
 * occupy a low-dimensional part of the space: impostor cosines spread around
 * 0 with a standard deviation of ~0.1, far wider than the 1/√512 ≈ 0.044 of
 * random vectors, and genuine cosines spread from ~0.9 (good capture) down to
 * ~0.3 (pose, blur, lighting). So here:
 *
 * - identity of person p: a Gaussian point in a `latentDim`-dimensional space
 *   (seeded by (seed, p), so stable across runs and processes), mapped into
 *   `dim` dimensions by a fixed random projection, normalised;
 * - presentation: identity + isotropic noise of norm σ, σ drawn per capture
 *   from a log-normal around `noise` (most captures good, a few poor), then
 *   normalised; quality falls as σ grows;
 * - liveness: live captures score high (Beta-like around 0.9); spoofs
 *   (photo/screen replay) score low, with the occasional hard spoof at ~0.45.
 *
 * With the defaults (latentDim 64, noise 0.8) and the matcher's default
 * threshold, impostor and genuine distributions overlap a little: FAR a few in 10^5,
 * FRR below 1% (genuine mean cosine ~0.69), the regime of a good commercial model.
 */

/** mulberry32: small, fast, seeded; the simulator needs reproducibility, not secrecy. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal deviates from a uniform source (Box–Muller). */
export function gaussian(rand: () => number): () => number {
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u = rand() || 1e-12;
    const r = Math.sqrt(-2 * Math.log(u));
    const t = 2 * Math.PI * rand();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
}

function hashSeed(seed: number, p: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ (p + 0x7f4a7c15), 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export function normalise(v: Float32Array): Float32Array {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  const k = s > 0 ? 1 / Math.sqrt(s) : 0;
  for (let i = 0; i < v.length; i++) v[i] = v[i]! * k;
  return v;
}

export interface PopulationOptions {
  /** Number of people, ids 0..size−1. */
  size: number;
  /** Feature dimension; 512 (ArcFace-like) by default, 128 (FaceNet-like) also typical. */
  dim?: number;
  /** Population seed: the same seed gives the same people. */
  seed?: number;
  /** Dimension of identity variation; smaller = more look-alikes. Default 64. */
  latentDim?: number;
  /** Median capture noise (norm relative to the unit identity). Default 0.8. */
  noise?: number;
  /** Seed of the presentation noise stream (default: derived from seed). */
  presentationSeed?: number;
}

export interface Presentation {
  vector: Float32Array;
  quality: number;
  liveness: number;
}

export class Population {
  readonly size: number;
  readonly dim: number;
  readonly seed: number;
  readonly latentDim: number;
  readonly noise: number;
  private readonly projection: Float32Array; // dim × latentDim
  private readonly cache = new Map<number, Float32Array>();
  private readonly gauss: () => number;
  private readonly rand: () => number;

  constructor(opts: PopulationOptions) {
    this.size = opts.size;
    this.dim = opts.dim ?? 512;
    this.seed = opts.seed ?? 1;
    this.latentDim = opts.latentDim ?? 64;
    this.noise = opts.noise ?? 0.8;
    const g = gaussian(prng(hashSeed(this.seed, 0xffffffff)));
    this.projection = new Float32Array(this.dim * this.latentDim);
    for (let i = 0; i < this.projection.length; i++) this.projection[i] = g();
    this.rand = prng(opts.presentationSeed ?? hashSeed(this.seed, 0xfffffffe));
    this.gauss = gaussian(this.rand);
  }

  /** Person p's stable unit identity vector. */
  identity(p: number): Float32Array {
    if (!Number.isInteger(p) || p < 0 || p >= this.size) throw new RangeError(`person ${p} is not in 0..${this.size - 1}`);
    let v = this.cache.get(p);
    if (v) return v;
    const g = gaussian(prng(hashSeed(this.seed, p)));
    const z = new Float64Array(this.latentDim);
    for (let k = 0; k < this.latentDim; k++) z[k] = g();
    v = new Float32Array(this.dim);
    for (let i = 0; i < this.dim; i++) {
      let s = 0;
      const row = i * this.latentDim;
      for (let k = 0; k < this.latentDim; k++) s += this.projection[row + k]! * z[k]!;
      v[i] = s;
    }
    normalise(v);
    if (this.cache.size < 200_000) this.cache.set(p, v);
    return v;
  }

  /** One live capture of person p. */
  present(p: number): Presentation {
    const id = this.identity(p);
    // Log-normal capture noise: σ = noise · e^(0.35·N(0,1)).
    const sigma = this.noise * Math.exp(0.35 * this.gauss());
    const scale = sigma / Math.sqrt(this.dim);
    const v = new Float32Array(this.dim);
    for (let i = 0; i < this.dim; i++) v[i] = id[i]! + scale * this.gauss();
    normalise(v);
    const quality = Math.max(0, Math.min(1, 1.15 - sigma));
    const liveness = Math.min(0.999, Math.max(0, 0.92 + 0.04 * this.gauss()));
    return { vector: v, quality, liveness };
  }

  /** A presentation attack (printed photo or screen replay of person p): the features may match, liveness fails. */
  spoof(p: number): Presentation {
    const live = this.present(p);
    const hard = this.rand() < 0.05;
    const liveness = Math.max(0, Math.min(0.49, (hard ? 0.42 : 0.12) + 0.05 * this.gauss()));
    return { ...live, liveness };
  }
}
