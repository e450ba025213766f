/**
 * Cancelable face templates (ISO/IEC 24745): every template an organisation
 * stores, and every probe matched against them, first passes through a secret
 * random orthogonal matrix Q derived from that organisation's key.
 *
 * - Accuracy unchanged: Q is orthogonal, so cos(Qx, Qy) = cos(x, y).
 * - Unlinkable: two organisations' Q are independent random rotations, so the
 *   same face stored in both looks like two unrelated vectors (cosine ~ N(0, 1/√dim)).
 * - Renewable: rotating the org key gives a new Q; `reissue` re-keys stored
 *   templates (Q_new · Q_oldᵀ · t) and the old ones stop matching.
 *
 * Derivation: HKDF-SHA256(orgKey, salt "tallybox/face-transform/v1", info "dim=<d>")
 * gives an AES-256-CTR key and IV, whose keystream is the deterministic random
 * source; Q = S · H_1 ⋯ H_{d-1}, a product of Householder reflections with
 * Gaussian directions on shrinking coordinate ranges and a random sign diagonal
 * S (Stewart 1980), which is a Haar-random orthogonal matrix. Built once per org
 * key in float64, stored as float32 rows; applying it is one matrix-vector
 * product in the SIMD kernel.
 */
import { createCipheriv, hkdfSync } from 'node:crypto';
import { TallyboxError } from '../../util/errors.js';
import { ScoreMatrix } from './kernel.js';

const SALT = 'tallybox/face-transform/v1';

/** Deterministic uniform doubles in (0, 1) from an AES-256-CTR keystream. */
function keystreamUniforms(key: Uint8Array, iv: Uint8Array, count: number): Float64Array {
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  const bytes = cipher.update(Buffer.alloc(count * 4));
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, count);
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = (words[i]! + 0.5) / 4294967296;
  return out;
}

export interface CancelableTransformOptions {
  /** The organisation's key bytes (or a key derived from it for this purpose). At least 16 bytes. */
  orgKey: Uint8Array;
  dim: number;
}

export class CancelableTransform {
  readonly dim: number;
  /** Rows of Q (float32), also the matrix of the kernel that applies it. */
  private readonly q: ScoreMatrix;

  constructor(opts: CancelableTransformOptions) {
    if (opts.orgKey.length < 16) throw new TallyboxError('FACE_TRANSFORM_KEY_TOO_SHORT', `cancelable transform key has ${opts.orgKey.length} bytes; at least 16 are needed`, { length: opts.orgKey.length });
    if (!Number.isInteger(opts.dim) || opts.dim < 2 || opts.dim > 4096) throw new TallyboxError('FACE_BAD_DIM', `face vector dim ${opts.dim} is not an integer in 2..4096`, { dim: opts.dim });
    const d = (this.dim = opts.dim);
    const okm = new Uint8Array(hkdfSync('sha256', opts.orgKey, SALT, `dim=${d}`, 48));
    const u = keystreamUniforms(okm.subarray(0, 32), okm.subarray(32, 48), d * d + d + 2);
    let ui = 0;
    let spare: number | null = null;
    const gauss = () => {
      if (spare !== null) {
        const s = spare;
        spare = null;
        return s;
      }
      const r = Math.sqrt(-2 * Math.log(u[ui++]!));
      const t = 2 * Math.PI * u[ui++]!;
      spare = r * Math.sin(t);
      return r * Math.cos(t);
    };
    // M starts as the sign diagonal S; each reflection H_k = I − 2vvᵀ (v on
    // coordinates k..d−1) is applied on the right: M ← M·H_k, touching columns k..d−1.
    const m = new Float64Array(d * d);
    for (let i = 0; i < d; i++) m[i * d + i] = gauss() < 0 ? -1 : 1;
    const v = new Float64Array(d);
    for (let k = 0; k < d - 1; k++) {
      let norm = 0;
      for (let j = k; j < d; j++) {
        const g = gauss();
        v[j] = g;
        norm += g * g;
      }
      norm = Math.sqrt(norm);
      for (let j = k; j < d; j++) v[j] = v[j]! / norm;
      for (let i = 0; i < d; i++) {
        const row = i * d;
        let dot = 0;
        for (let j = k; j < d; j++) dot += m[row + j]! * v[j]!;
        if (dot === 0) continue;
        const s = 2 * dot;
        for (let j = k; j < d; j++) m[row + j] = m[row + j]! - s * v[j]!;
      }
    }
    this.q = new ScoreMatrix({ dim: d, initialCapacity: d });
    const row = new Float32Array(d);
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) row[j] = m[i * d + j]!;
      this.q.push(row);
    }
  }

  /** Q·x, as a new array. */
  apply(x: Float32Array): Float32Array {
    this.checkDim(x);
    return this.q.scores(x).slice();
  }

  /** Qᵀ·y: back to the module's feature space (used only by `reissue`). */
  invert(y: Float32Array): Float32Array {
    this.checkDim(y);
    const out = new Float64Array(this.dim);
    for (let i = 0; i < this.dim; i++) {
      const r = this.q.row(i);
      const yi = y[i]!;
      for (let j = 0; j < this.dim; j++) out[j] = out[j]! + r[j]! * yi;
    }
    return Float32Array.from(out);
  }

  /**
   * Re-key a template stored under `from` for storage under `to` (key
   * rotation). The plain template exists only transiently inside this call.
   */
  static reissue(template: Float32Array, from: CancelableTransform, to: CancelableTransform): Float32Array {
    const plain = from.invert(template);
    const out = to.apply(plain);
    plain.fill(0);
    return out;
  }

  private checkDim(x: Float32Array): void {
    if (x.length !== this.dim) throw new TallyboxError('FACE_DIM_MISMATCH', `face vector has ${x.length} dimensions; the transform is for ${this.dim}`, { got: x.length, want: this.dim });
  }
}
