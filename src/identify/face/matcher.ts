/**
 * Exact 1:N face matching by cosine similarity.
 *
 * Templates sit in one contiguous Float32 matrix (row = template), normalised
 * at insert, so a search is one matrix-vector product (the SIMD kernel in
 * kernel.ts) and an argmax: exact, no index to approximate with, recall 1.0 by
 * construction. 10,000 × 512 floats = 20 MB. With wasm SIMD an int8 copy of
 * the matrix (+5 MB) is scanned first and only the rows whose proven error
 * bound lets them reach the maximum are re-scored in float32
 * (ScoreMatrix.best): same row, same float32 score, a quarter of the bytes.
 *
 * With a CancelableTransform, every vector coming from the module (enrolment
 * captures and probes) is rotated by the org's secret matrix first; templates
 * handed out for storage and loaded back are in the rotated space, so the
 * vault never holds a template that another org's index could match.
 *
 * Templates are personal data: nothing here logs or serialises them.
 */
import { TallyboxError } from '../../util/errors.js';
import { ScoreMatrix } from './kernel.js';
import type { CancelableTransform } from './transform.js';

/**
 * Default decision threshold on cosine similarity. Thresholds are
 * model-specific: this one suits the simulator's 512-dim model (FAR ~3e-5,
 * FRR ~0.7% per comparison) and is in the usual range of ArcFace-class models
 * (0.35–0.5). Configure it per deployed model.
 */
export const DEFAULT_THRESHOLD = 0.4;
/** Default liveness threshold: the module's presentation-attack score is 0..1, 1 = live. */
export const DEFAULT_LIVENESS_THRESHOLD = 0.5;
/**
 * Default duplicate-enrolment threshold, template against template. Higher
 * than the decision threshold because both sides are averaged (less noisy):
 * two templates of one person score ~0.8, of two look-alikes up to ~0.45.
 */
export const DEFAULT_DUPLICATE_THRESHOLD = 0.55;
/** Captures an enrolment needs by default. */
export const DEFAULT_MIN_CAPTURES = 3;

export interface FaceProbe {
  vector: Float32Array;
  /** 0..1 from the module; omitted = not checked (templates loaded from storage). */
  liveness?: number;
}

export type IdentifyResult = { decision: 'match'; subjectId: string; score: number; liveness: number | undefined } | { decision: 'no-match'; score: number; liveness: number | undefined } | { decision: 'spoof'; liveness: number };

export interface EnrolResult {
  /** The template to store (encrypted) in the vault: normalised, in the org's transformed space. */
  template: Float32Array;
  /** Lowest cosine between a capture and the average of the other captures; how consistent they were. */
  consistency: number;
}

export interface FaceMatcherOptions {
  dim: number;
  threshold?: number;
  livenessThreshold?: number;
  /** A new enrolment at least this close to another subject's template is refused. Default DEFAULT_DUPLICATE_THRESHOLD. */
  duplicateThreshold?: number;
  minCaptures?: number;
  /**
   * Each enrolment capture must reach this similarity to the average of the
   * others. Lower than `threshold` on purpose: single captures are noisy (a
   * poor one may score ~0.3 against its own person) while another person's
   * capture scores ~0 ± 0.1. Default: threshold / 2.
   */
  consistencyThreshold?: number;
  /** The org's cancelable transform; without it vectors are matched as the module sends them. */
  transform?: CancelableTransform;
  /** Rows to reserve up front (avoids re-allocation while loading). */
  initialCapacity?: number;
  /** false forces the plain-JS kernel (tests, or runtimes without wasm SIMD). */
  useSimd?: boolean;
}

function checkUnitInterval(name: string, v: number): number {
  if (!Number.isFinite(v) || v < -1 || v > 1) throw new TallyboxError('FACE_BAD_THRESHOLD', `face ${name} ${v} is not a number in -1..1`, { name, value: v });
  return v;
}

export class FaceMatcher {
  readonly dim: number;
  readonly threshold: number;
  readonly livenessThreshold: number;
  readonly duplicateThreshold: number;
  readonly minCaptures: number;
  readonly consistencyThreshold: number;
  private readonly transform: CancelableTransform | undefined;
  private readonly matrix: ScoreMatrix;
  /** Row index → subject id (parallel to the matrix rows). */
  private subjectOf: string[] = [];
  private readonly scratch: Float32Array;

  constructor(opts: FaceMatcherOptions) {
    if (!Number.isInteger(opts.dim) || opts.dim < 2 || opts.dim > 4096) throw new TallyboxError('FACE_BAD_DIM', `face vector dim ${opts.dim} is not an integer in 2..4096`, { dim: opts.dim });
    if (opts.transform && opts.transform.dim !== opts.dim) throw new TallyboxError('FACE_DIM_MISMATCH', `cancelable transform is for dim ${opts.transform.dim}; the matcher for ${opts.dim}`, { got: opts.transform.dim, want: opts.dim });
    this.dim = opts.dim;
    this.threshold = checkUnitInterval('threshold', opts.threshold ?? DEFAULT_THRESHOLD);
    this.livenessThreshold = checkUnitInterval('livenessThreshold', opts.livenessThreshold ?? DEFAULT_LIVENESS_THRESHOLD);
    this.duplicateThreshold = checkUnitInterval('duplicateThreshold', opts.duplicateThreshold ?? DEFAULT_DUPLICATE_THRESHOLD);
    this.minCaptures = opts.minCaptures ?? DEFAULT_MIN_CAPTURES;
    this.consistencyThreshold = checkUnitInterval('consistencyThreshold', opts.consistencyThreshold ?? this.threshold / 2);
    this.transform = opts.transform;
    this.matrix = new ScoreMatrix({ dim: opts.dim, initialCapacity: opts.initialCapacity ?? 1024, quantise: true, ...(opts.useSimd === undefined ? {} : { useSimd: opts.useSimd }) });
    this.scratch = new Float32Array(opts.dim);
  }

  /** Number of templates in the index. */
  get size(): number {
    return this.matrix.size;
  }

  get simd(): boolean {
    return this.matrix.simd;
  }

  subjects(): Set<string> {
    return new Set(this.subjectOf);
  }

  has(subjectId: string): boolean {
    return this.subjectOf.includes(subjectId);
  }

  /**
   * Put a stored template (from the vault, already in the transformed space)
   * into the index. Used at start-up and after enrolment.
   */
  add(subjectId: string, template: Float32Array): void {
    this.checkVector(template, 'template');
    this.normaliseInto(template, this.scratch);
    this.matrix.push(this.scratch);
    this.subjectOf.push(subjectId);
  }

  /**
   * Average the captures into one template (each capture normalised first, so
   * a capture's gain does not weigh it), check it, and return what the vault
   * should store. Changes nothing in the index; `enrol` does both.
   */
  prepareEnrolment(subjectId: string, captures: readonly FaceProbe[]): EnrolResult {
    if (captures.length < this.minCaptures) throw new TallyboxError('FACE_TOO_FEW_CAPTURES', `enrolment has ${captures.length} captures; at least ${this.minCaptures} are needed`, { got: captures.length, want: this.minCaptures });
    const rotated: Float32Array[] = [];
    for (const c of captures) {
      this.checkVector(c.vector, 'capture');
      if (c.liveness !== undefined && !(c.liveness >= this.livenessThreshold)) {
        throw new TallyboxError('FACE_SPOOF', `enrolment capture failed the liveness check (below livenessThreshold ${this.livenessThreshold})`, {});
      }
      rotated.push(this.normaliseInto(this.transform ? this.transform.apply(c.vector) : c.vector, new Float32Array(this.dim)));
    }
    const template = new Float32Array(this.dim);
    for (const r of rotated) for (let i = 0; i < this.dim; i++) template[i] = template[i]! + r[i]!;
    this.normaliseInto(template, template);
    // Each capture must match the average of the others: captures of two
    // different people averaged together would match neither of them well.
    let consistency = 1;
    if (rotated.length > 1) {
      const sum = new Float32Array(this.dim);
      for (const r of rotated) for (let i = 0; i < this.dim; i++) sum[i] = sum[i]! + r[i]!;
      const others = new Float32Array(this.dim);
      for (const r of rotated) {
        for (let i = 0; i < this.dim; i++) others[i] = sum[i]! - r[i]!;
        consistency = Math.min(consistency, dot(r, others) / Math.sqrt(dot(others, others)));
      }
    }
    if (consistency < this.consistencyThreshold)
      throw new TallyboxError('FACE_CAPTURES_INCONSISTENT', `enrolment captures disagree (lowest similarity of a capture to the others ${consistency.toFixed(3)} is below consistencyThreshold ${this.consistencyThreshold})`, { consistency });
    const best = this.bestOtherThan(template, subjectId);
    if (best && best.score >= this.duplicateThreshold) {
      throw new TallyboxError('FACE_DUPLICATE', `this face is already enrolled for another subject (similarity ${best.score.toFixed(3)} ≥ duplicateThreshold ${this.duplicateThreshold})`, {
        otherSubjectId: best.subjectId,
        score: best.score,
      });
    }
    return { template, consistency };
  }

  /** prepareEnrolment + add. The caller stores `template` (encrypted); if that fails, remove(subjectId). */
  enrol(subjectId: string, captures: readonly FaceProbe[]): EnrolResult {
    const r = this.prepareEnrolment(subjectId, captures);
    this.add(subjectId, r.template);
    return r;
  }

  /** Liveness check, exact 1:N search, threshold decision. */
  identify(probe: FaceProbe): IdentifyResult {
    if (probe.liveness !== undefined && !(probe.liveness >= this.livenessThreshold)) return { decision: 'spoof', liveness: probe.liveness };
    const best = this.search(probe.vector);
    if (best && best.score >= this.threshold) return { decision: 'match', subjectId: best.subjectId, score: best.score, liveness: probe.liveness };
    return { decision: 'no-match', score: best ? best.score : -1, liveness: probe.liveness };
  }

  /** Best template for a probe from the module (rotated by the transform when one is set); null if the index is empty. */
  search(vector: Float32Array): { subjectId: string; score: number; row: number } | null {
    this.checkVector(vector, 'probe');
    const q = this.normaliseInto(this.transform ? this.transform.apply(vector) : vector, this.scratch);
    return this.named(this.matrix.best(q));
  }

  /**
   * Similarity of a probe to every template, row order (a copy). For accuracy
   * measurement and diagnostics; `rowSubject` names the rows.
   */
  scoreAll(vector: Float32Array): Float32Array {
    this.checkVector(vector, 'probe');
    const q = this.normaliseInto(this.transform ? this.transform.apply(vector) : vector, this.scratch);
    return this.matrix.scores(q).slice();
  }

  rowSubject(row: number): string | undefined {
    return this.subjectOf[row];
  }

  /** Remove every template of a subject (erasure hook, re-enrolment). Returns how many were removed. */
  remove(subjectId: string): number {
    let removed = 0;
    for (let i = this.subjectOf.length - 1; i >= 0; i--) {
      if (this.subjectOf[i] !== subjectId) continue;
      const moved = this.matrix.removeSwap(i);
      if (moved >= 0) this.subjectOf[i] = this.subjectOf[moved]!;
      this.subjectOf.pop();
      removed++;
    }
    return removed;
  }

  /** Drop every template and zero the memory that held them (org erasure). */
  clear(): void {
    this.matrix.clear();
    this.subjectOf = [];
    this.scratch.fill(0);
  }

  private bestOtherThan(template: Float32Array, subjectId: string): { subjectId: string; score: number; row: number } | null {
    return this.named(this.matrix.best(template, (r) => this.subjectOf[r] === subjectId));
  }

  private named(b: { row: number; score: number } | null): { subjectId: string; score: number; row: number } | null {
    return b === null ? null : { subjectId: this.subjectOf[b.row]!, score: b.score, row: b.row };
  }

  private normaliseInto(v: Float32Array, out: Float32Array): Float32Array {
    let s = 0;
    for (let i = 0; i < this.dim; i++) s += v[i]! * v[i]!;
    if (!(s > 0) || !Number.isFinite(s)) throw new TallyboxError('FACE_BAD_VECTOR', 'face vector has zero or non-finite norm', {});
    const k = 1 / Math.sqrt(s);
    for (let i = 0; i < this.dim; i++) out[i] = v[i]! * k;
    return out;
  }

  private checkVector(v: Float32Array, what: string): void {
    if (!(v instanceof Float32Array) || v.length !== this.dim) {
      throw new TallyboxError('FACE_DIM_MISMATCH', `face ${what} has ${(v as { length?: number })?.length ?? 0} dimensions; the matcher expects ${this.dim}`, { got: (v as { length?: number })?.length ?? 0, want: this.dim });
    }
  }
}

function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}
