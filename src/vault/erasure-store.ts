/**
 * The vault as the ErasableStore the purge pipeline drives (src/privacy) and
 * the RetentionSource that finds stale templates: samples taken before an
 * erasure, the purge journal, crypto-shredding, row deletion, compaction.
 */
import type { ErasureSample, ErasureScope, PurgeJob, StoreErasureResult } from '../privacy/types.js';
import { MIN_SAMPLE_BYTES } from '../privacy/scan.js';
import type { VaultContext } from './context.js';

/** SQLite's default limit on bound parameters is 32766; stay far below it. */
const IN_CHUNK = 500;

interface PurgeJobRow {
  job_id: string;
  kind: ErasureScope['kind'];
  org_id: string;
  subject_ids: string | null;
  request_ref: string | null;
  state: PurgeJob['state'];
  started_at_ms: number;
  attempts: number;
  counts: string;
  key_versions: string;
}

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += IN_CHUNK) out.push(items.slice(i, i + IN_CHUNK));
  return out;
}

function placeholders(n: number): string {
  return new Array(n).fill('?').join(',');
}

/** Byte fragments of a sealed blob or key for the erasure scan: start, middle and end. */
function fragments(blob: Buffer | null, label: ErasureSample['label'], out: ErasureSample[]): void {
  if (!blob || blob.length < MIN_SAMPLE_BYTES) return;
  if (blob.length <= 48) {
    out.push({ bytes: Buffer.from(blob), label, scope: 'all' });
    return;
  }
  const mid = Math.floor(blob.length / 2) - 8;
  for (const at of [0, mid, blob.length - 16]) out.push({ bytes: Buffer.from(blob.subarray(at, at + 16)), label, scope: 'all' });
}

export class ErasureStore {
  readonly #ctx: VaultContext;

  constructor(ctx: VaultContext) {
    this.#ctx = ctx;
  }

  /** Orgs with a withdrawal journalled: they stay refused after a restart until it completes. */
  async loadPurgingOrgs(): Promise<void> {
    for (const r of await this.#ctx.db.all<{ org_id: string }>("SELECT org_id FROM purge_jobs WHERE kind = 'org'")) this.#ctx.keyring.markPurging(r.org_id);
  }

  // ---------------------------------------------------------------- retention (RetentionSource)

  async staleTemplateSubjects(cutoffMs: number): Promise<Array<{ orgId: string; subjectIds: string[] }>> {
    const rows = await this.#ctx.db.all<{ org_id: string; subject_id: string }>(
      `SELECT DISTINCT s.org_id, s.subject_id FROM subjects s
       JOIN templates t ON t.org_id = s.org_id AND t.subject_id = s.subject_id
       WHERE s.last_seen_ms < ? ORDER BY s.org_id, s.subject_id`,
      [cutoffMs],
    );
    const byOrg = new Map<string, string[]>();
    for (const r of rows) {
      if (this.#ctx.keyring.isPurging(r.org_id)) continue;
      const list = byOrg.get(r.org_id) ?? [];
      list.push(r.subject_id);
      byOrg.set(r.org_id, list);
    }
    return [...byOrg].map(([orgId, subjectIds]) => ({ orgId, subjectIds }));
  }

  // ---------------------------------------------------------------- erasure (ErasableStore)

  async sample(scope: ErasureScope): Promise<ErasureSample[]> {
    const { db } = this.#ctx;
    const out: ErasureSample[] = [];
    const { orgId } = scope;
    const bySubject = scope.kind === 'org' ? [undefined] : chunks(scope.subjectIds);
    if (scope.kind === 'org') {
      for (const r of await db.all<{ wrapped: Buffer }>('SELECT wrapped FROM org_keys WHERE org_id = ?', [orgId])) fragments(r.wrapped, 'wrapped_key', out);
    }
    const ids = new Set<string>();
    for (const chunk of bySubject) {
      const where = chunk ? `org_id = ? AND subject_id IN (${placeholders(chunk.length)})` : 'org_id = ?';
      const params = chunk ? [orgId, ...chunk] : [orgId];
      for (const r of await db.all<{ ct: Buffer }>(`SELECT ct FROM templates WHERE ${where}`, params)) fragments(r.ct, 'ciphertext', out);
      if (scope.kind === 'templates') continue;
      for (const r of await db.all<{ name_ct: Buffer; subject_id: string }>(`SELECT name_ct, subject_id FROM subjects WHERE ${where}`, params)) {
        fragments(r.name_ct, 'ciphertext', out);
        ids.add(r.subject_id);
      }
      for (const r of await db.all<{ evidence_ct: Buffer | null }>(`SELECT evidence_ct FROM consents WHERE ${where}`, params)) fragments(r.evidence_ct, 'ciphertext', out);
      for (const r of await db.all<{ lookup: Buffer; subject_id: string }>(`SELECT lookup, subject_id FROM credentials WHERE ${where}`, params)) {
        fragments(r.lookup, 'lookup_hmac', out);
        ids.add(r.subject_id);
      }
      for (const r of await db.all<{ subject_id: string }>(`SELECT DISTINCT subject_id FROM templates WHERE ${where}`, params)) ids.add(r.subject_id);
    }
    // A subject id that another org legitimately still uses (one person, two
    // employers) must not count as a leftover of this one.
    for (const chunk of chunks([...ids])) {
      const rows = await db.all<{ subject_id: string }>(
        `SELECT subject_id FROM subjects WHERE org_id <> ? AND subject_id IN (${placeholders(chunk.length)})
         UNION SELECT subject_id FROM credentials WHERE org_id <> ? AND subject_id IN (${placeholders(chunk.length)})
         UNION SELECT subject_id FROM templates WHERE org_id <> ? AND subject_id IN (${placeholders(chunk.length)})`,
        [orgId, ...chunk, orgId, ...chunk, orgId, ...chunk],
      );
      for (const r of rows) ids.delete(r.subject_id);
    }
    for (const id of ids) {
      const b = Buffer.from(id, 'utf8');
      if (b.length >= MIN_SAMPLE_BYTES) out.push({ bytes: b, label: 'subject_id', scope: 'store' });
    }
    return out;
  }

  async beginPurge(job: PurgeJob): Promise<void> {
    const subjectIds = job.scope.kind === 'org' ? null : JSON.stringify(job.scope.subjectIds);
    await this.#ctx.db.run('INSERT INTO purge_jobs (job_id, kind, org_id, subject_ids, request_ref, state, started_at_ms, attempts, counts, key_versions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', [
      job.jobId,
      job.scope.kind,
      job.scope.orgId,
      subjectIds,
      job.requestRef,
      job.state,
      job.startedAtMs,
      job.attempts,
      JSON.stringify(job.counts),
      JSON.stringify(job.keyVersionsDestroyed),
    ]);
    if (job.scope.kind === 'org') this.#ctx.keyring.markPurging(job.scope.orgId);
  }

  private async addJobCounts(jobId: string, counts: Record<string, number>): Promise<void> {
    const { db } = this.#ctx;
    const row = await db.get<{ counts: string }>('SELECT counts FROM purge_jobs WHERE job_id = ?', [jobId]);
    const merged = JSON.parse(row?.counts ?? '{}') as Record<string, number>;
    for (const [k, v] of Object.entries(counts)) merged[k] = (merged[k] ?? 0) + v;
    await db.run('UPDATE purge_jobs SET counts = ?, attempts = attempts + 1 WHERE job_id = ?', [JSON.stringify(merged), jobId]);
  }

  async erase(jobId: string, scope: ErasureScope): Promise<StoreErasureResult> {
    const { db, keyring } = this.#ctx;
    const { orgId } = scope;
    const result: StoreErasureResult = { counts: {}, keyVersionsDestroyed: [] };
    if (scope.kind === 'org') {
      // Crypto-shredding first, in its own committed transaction: once this
      // commits, every ciphertext of the org is noise even if the power goes now.
      await db.transaction(async () => {
        const keys = await db.all<{ key_version: number }>('SELECT key_version FROM org_keys WHERE org_id = ?', [orgId]);
        result.keyVersionsDestroyed = keys.map((k) => k.key_version);
        const r = await db.run('DELETE FROM org_keys WHERE org_id = ?', [orgId]);
        result.counts.dataKeys = r.changes;
        const row = await db.get<{ key_versions: string }>('SELECT key_versions FROM purge_jobs WHERE job_id = ?', [jobId]);
        const versions = new Set<number>([...(JSON.parse(row?.key_versions ?? '[]') as number[]), ...result.keyVersionsDestroyed]);
        await db.run('UPDATE purge_jobs SET key_versions = ? WHERE job_id = ?', [JSON.stringify([...versions].sort((a, b) => a - b)), jobId]);
      });
      keyring.forget(orgId);
    }
    const tables = scope.kind === 'templates' ? (['templates'] as const) : (['templates', 'credentials', 'consents', 'subjects'] as const);
    await db.transaction(async () => {
      for (const chunk of scope.kind === 'org' ? [undefined] : chunks(scope.subjectIds)) {
        const where = chunk ? `org_id = ? AND subject_id IN (${placeholders(chunk.length)})` : 'org_id = ?';
        const params = chunk ? [orgId, ...chunk] : [orgId];
        for (const t of tables) {
          const r = await db.run(`DELETE FROM ${t} WHERE ${where}`, params);
          result.counts[t] = (result.counts[t] ?? 0) + r.changes;
        }
      }
      await this.addJobCounts(jobId, result.counts);
    });
    return result;
  }

  async markPurgeCompacting(jobId: string): Promise<void> {
    await this.#ctx.db.run("UPDATE purge_jobs SET state = 'compacting', subject_ids = NULL WHERE job_id = ?", [jobId]);
  }

  /**
   * Push everything to the main file and rebuild it: the WAL holds old page
   * images until a checkpoint, and freed pages (zeroed by secure_delete) are
   * dropped by VACUUM. TRUNCATE leaves a zero-length -wal behind.
   */
  async compact(): Promise<void> {
    const { db, log } = this.#ctx;
    await db.get('PRAGMA wal_checkpoint(TRUNCATE)');
    await db.exec('VACUUM');
    const r = await db.get<{ busy: number }>('PRAGMA wal_checkpoint(TRUNCATE)');
    if (r && r.busy !== 0) log.warn({ busy: r.busy }, 'WAL checkpoint could not complete; the scan will tell');
  }

  async finishPurge(jobId: string): Promise<void> {
    const { db, keyring } = this.#ctx;
    const row = await db.get<{ kind: string; org_id: string }>('SELECT kind, org_id FROM purge_jobs WHERE job_id = ?', [jobId]);
    await db.run('DELETE FROM purge_jobs WHERE job_id = ?', [jobId]);
    if (row?.kind === 'org') {
      const other = await db.get("SELECT 1 FROM purge_jobs WHERE kind = 'org' AND org_id = ?", [row.org_id]);
      if (!other) keyring.unmarkPurging(row.org_id);
    }
  }

  async pendingPurges(): Promise<PurgeJob[]> {
    const rows = await this.#ctx.db.all<PurgeJobRow>('SELECT * FROM purge_jobs ORDER BY started_at_ms, job_id');
    return rows.map((r): PurgeJob => {
      const subjectIds = r.subject_ids ? (JSON.parse(r.subject_ids) as string[]) : [];
      const scope: ErasureScope = r.kind === 'org' ? { kind: 'org', orgId: r.org_id } : { kind: r.kind, orgId: r.org_id, subjectIds };
      return {
        jobId: r.job_id,
        scope,
        requestRef: r.request_ref,
        state: r.state,
        startedAtMs: r.started_at_ms,
        attempts: r.attempts,
        counts: JSON.parse(r.counts) as Record<string, number>,
        keyVersionsDestroyed: JSON.parse(r.key_versions) as number[],
      };
    });
  }
}
