/**
 * Retention (privacy rule 7): biometric templates of a subject not seen for
 * the configured period are erased through the same purge pipeline (so they
 * are verified gone and receipted). Identity and consent stay: the person is
 * still on the org's roster, they just have to enrol again.
 */
import { TallyboxError } from '../util/errors.js';
import type { Purger, PurgeOutcome } from './purge.js';

export const DEFAULT_RETENTION_DAYS = 365;
/** Three years: the longest the privacy policy allows templates of an absent person to be kept. */
export const MAX_RETENTION_DAYS = 3 * 365;
const DAY_MS = 86_400_000;

/** Validate a configured period; undefined → the default. */
export function resolveRetentionDays(days?: number): number {
  if (days === undefined) return DEFAULT_RETENTION_DAYS;
  if (!Number.isInteger(days) || days < 1 || days > MAX_RETENTION_DAYS) {
    throw new TallyboxError(
      'RETENTION_OUT_OF_RANGE',
      `RETENTION_OUT_OF_RANGE: retention.templateDays must be a whole number of days from 1 to ${MAX_RETENTION_DAYS}, got ${String(days)}`,
      { key: 'retention.templateDays', value: days },
    );
  }
  return days;
}

/** Who has templates but has not been seen since the cutoff (the vault implements this). */
export interface RetentionSource {
  staleTemplateSubjects(cutoffMs: number): Promise<Array<{ orgId: string; subjectIds: string[] }>>;
}

export interface RetentionOptions {
  source: RetentionSource;
  purger: Purger;
  /** Default 365, max 1095. */
  periodDays?: number;
  nowMs?: number;
}

/** One purge (and receipt) per org that has stale templates. Run daily. */
export async function runRetention(opts: RetentionOptions): Promise<PurgeOutcome[]> {
  const days = resolveRetentionDays(opts.periodDays);
  const cutoff = (opts.nowMs ?? Date.now()) - days * DAY_MS;
  const out: PurgeOutcome[] = [];
  for (const { orgId, subjectIds } of await opts.source.staleTemplateSubjects(cutoff)) {
    if (subjectIds.length > 0) out.push(await opts.purger.eraseTemplates(orgId, subjectIds, { requestRef: `retention:${days}d` }));
  }
  return out;
}
