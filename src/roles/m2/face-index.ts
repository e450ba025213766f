/**
 * The M2 role's in-memory face index: one FaceMatcher per org behind that
 * org's CancelableTransform (key: Vault.faceTransformKey, HKDF of the org's
 * data key), loaded batch by batch from the vault (Vault.forEachTemplate:
 * never all plaintexts at once).
 *
 * Why one matcher per org: each org's templates live in that org's own secret
 * rotated space (unlinkability), so a probe must be rotated per org before it
 * can be compared; a shared index would need a shared transform. Per-org
 * matchers also make org withdrawal one clear() that zeroes the matrix.
 */
import { CancelableTransform } from '../../identify/face/transform.js';
import { FaceMatcher } from '../../identify/face/matcher.js';
import { TallyboxError } from '../../util/errors.js';
import type { Logger } from '../../util/log.js';
import { errorCode } from '../kit/supervisor.js';
import type { M2Vault } from './types.js';

export interface LoadReport {
  orgs: number;
  templates: number;
  quarantined: number;
  /** Stored templates of the wrong size (another model's): skipped. */
  skipped: number;
  ms: number;
}

export interface FaceIndexOptions {
  vault: M2Vault;
  log: Logger;
  dim: number;
  threshold: number;
  livenessThreshold: number;
  duplicateThreshold: number;
  minCaptures: number;
  batchSize: number;
}

interface OrgIndex {
  matcher: FaceMatcher;
}

/** An index being loaded: erasures that land between two vault batches are recorded and applied at the end. */
interface Loading {
  orgId: string;
  matcher: FaceMatcher;
  erased: Set<string>;
  orgErased: boolean;
}

export class FaceIndex {
  readonly #o: FaceIndexOptions;
  #indexes = new Map<string, OrgIndex>();
  /** Orgs whose index is being built (lazily, e.g. first enrolment of a new org): one build per org. */
  readonly #building = new Map<string, Promise<OrgIndex>>();
  readonly #loading = new Set<Loading>();
  #sealed = false;

  constructor(opts: FaceIndexOptions) {
    this.#o = opts;
  }

  /** Templates in memory per org (counts only). */
  sizes(): Map<string, number> {
    return new Map([...this.#indexes].map(([o, i]) => [o, i.matcher.size]));
  }
  has(orgId: string, subjectId: string): boolean {
    return this.#indexes.get(orgId)?.matcher.has(subjectId) ?? false;
  }

  /** (Re)build every org's index from the vault; orgs without face templates get an empty one. */
  async reload(): Promise<LoadReport> {
    const t0 = performance.now();
    const report: LoadReport = { orgs: 0, templates: 0, quarantined: 0, skipped: 0, ms: 0 };
    const fresh = new Map<string, OrgIndex>();
    for (const orgId of await this.#o.vault.orgs()) {
      try {
        fresh.set(orgId, await this.#build(orgId, report));
        report.orgs++;
      } catch (err) {
        // An org being withdrawn right now, or whose key does not unwrap: it has no index.
        const code = errorCode(err);
        this.#o.log.warn({ event: 'm2_org_not_loaded', orgId, code }, `face templates of organisation ${orgId} not loaded: ${code}`);
      }
    }
    for (const [orgId, old] of this.#indexes) if (fresh.get(orgId) !== old) old.matcher.clear();
    this.#indexes = fresh;
    report.ms = performance.now() - t0;
    return report;
  }

  /** Every org's decision for one probe: the matches, and the best non-matching score. */
  identify(probe: { vector: Float32Array; liveness: number }): { matches: Array<{ orgId: string; subjectId: string; score: number }>; best: number } {
    const matches: Array<{ orgId: string; subjectId: string; score: number }> = [];
    let best = -1;
    for (const [orgId, idx] of this.#indexes) {
      if (idx.matcher.size === 0) continue;
      const r = idx.matcher.identify(probe);
      if (r.decision === 'match') matches.push({ orgId, subjectId: r.subjectId, score: r.score });
      else if (r.decision === 'no-match') best = Math.max(best, r.score);
    }
    return { matches, best };
  }

  /** The org's matcher; its index is built on first use (an org created after start). */
  async matcherFor(orgId: string): Promise<FaceMatcher> {
    const have = this.#indexes.get(orgId);
    if (have) return have.matcher;
    let p = this.#building.get(orgId);
    if (!p) {
      p = this.#build(orgId, { orgs: 0, templates: 0, quarantined: 0, skipped: 0, ms: 0 }).then(
        (idx) => {
          this.#building.delete(orgId);
          if (this.#sealed) {
            idx.matcher.clear();
            throw new TallyboxError('ROLE_LOCKED', 'the M2 role is locked after a tamper event');
          }
          this.#indexes.set(orgId, idx);
          return idx;
        },
        (err: unknown) => {
          this.#building.delete(orgId);
          throw err;
        },
      );
      this.#building.set(orgId, p);
    }
    return (await p).matcher;
  }

  /** Is this matcher still the org's live one (not erased or zeroised meanwhile)? */
  isCurrent(orgId: string, matcher: FaceMatcher): boolean {
    return !this.#sealed && this.#indexes.get(orgId)?.matcher === matcher;
  }

  /** Drop an erased org's index (its matrix zeroed, its transform dropped). Returns the templates dropped. */
  dropOrg(orgId: string): number {
    const idx = this.#indexes.get(orgId);
    const n = idx?.matcher.size ?? 0;
    idx?.matcher.clear();
    this.#indexes.delete(orgId);
    for (const l of this.#loading) if (l.orgId === orgId) l.orgErased = true;
    return n;
  }

  /** Take an erased subject out of the org's index (and out of one being loaded). */
  dropSubject(orgId: string, subjectId: string): number {
    let n = this.#indexes.get(orgId)?.matcher.remove(subjectId) ?? 0;
    for (const l of this.#loading) {
      if (l.orgId !== orgId) continue;
      l.erased.add(subjectId);
      n += l.matcher.remove(subjectId);
    }
    return n;
  }

  /** Wipe everything; `seal`: nothing is built again (tamper zeroise). */
  clear(seal = false): { templates: number; orgs: number } {
    if (seal) this.#sealed = true;
    let templates = 0;
    const orgs = this.#indexes.size;
    for (const i of this.#indexes.values()) {
      templates += i.matcher.size;
      i.matcher.clear();
    }
    this.#indexes.clear();
    return { templates, orgs };
  }

  async #build(orgId: string, report: LoadReport): Promise<OrgIndex> {
    const o = this.#o;
    const key = await o.vault.faceTransformKey(orgId);
    let transform: CancelableTransform;
    try {
      transform = new CancelableTransform({ orgKey: key, dim: o.dim });
    } finally {
      key.fill(0);
    }
    const matcher = new FaceMatcher({
      dim: o.dim,
      transform,
      threshold: o.threshold,
      livenessThreshold: o.livenessThreshold,
      duplicateThreshold: o.duplicateThreshold,
      minCaptures: o.minCaptures,
      initialCapacity: 256,
    });
    const loading: Loading = { orgId, matcher, erased: new Set(), orgErased: false };
    this.#loading.add(loading);
    const row = new Float32Array(o.dim);
    const rowBytes = new Uint8Array(row.buffer);
    try {
      const r = await o.vault.forEachTemplate(orgId, 'face', o.batchSize, (batch) => {
        for (const t of batch) {
          if (t.bytes.length !== o.dim * 4) {
            report.skipped++;
            continue;
          }
          rowBytes.set(t.bytes);
          try {
            matcher.add(t.subjectId, row);
            report.templates++;
          } catch {
            // A template the matcher refuses (non-finite, duplicate id): counted as skipped, the rest load.
            report.skipped++;
          }
        }
      });
      report.quarantined += r.quarantined.length;
      if (r.quarantined.length > 0) o.log.warn({ event: 'm2_quarantined_templates', orgId, count: r.quarantined.length }, 'some face templates do not decrypt; they are not matched');
      if (loading.orgErased) throw new TallyboxError('ORG_ERASED', `organisation ${orgId} was erased while its face templates were loading`, { orgId });
      for (const s of loading.erased) matcher.remove(s);
    } catch (err) {
      matcher.clear();
      throw err;
    } finally {
      row.fill(0);
      this.#loading.delete(loading);
    }
    return { matcher };
  }
}
