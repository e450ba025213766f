/**
 * Retention (privacy rule 7): biometric templates of a subject not seen for
 * the configured period are erased through the same purge pipeline (so they
 * are verified gone and receipted). Identity and consent stay: the person is
 * still on the org's roster, they just have to enrol again.
 *
 * Erasure is irreversible and "not seen for N days" is a wall-clock
 * judgement, and devices boot at 1970 or get stepped by NTP. So:
 *  - retention runs only while the clock is synchronised;
 *  - one run erases at most `maxFraction` of the device's templates. A
 *    larger candidate set (a clock jumped years ahead makes everyone stale)
 *    is only recorded; it is erased only if a later run, at least
 *    `confirmAfterMs` of MONOTONIC time later and still on a synchronised
 *    clock, finds the same subjects stale again (those found by both runs
 *    go). The record lives in memory: a restart starts the wait again,
 *    which only ever delays an erasure.
 */
import { TallyboxError } from '../util/errors.js';
import type { Purger, PurgeOutcome } from './purge.js';

export const DEFAULT_RETENTION_DAYS = 365;
/** Three years: the longest the privacy policy allows templates of an absent person to be kept. */
export const MAX_RETENTION_DAYS = 3 * 365;
export const DEFAULT_RETENTION_MAX_FRACTION = 0.1;
export const DEFAULT_RETENTION_CONFIRM_HOURS = 24;
const DAY_MS = 86_400_000;

/** Validate a configured period; undefined → the default. */
export function resolveRetentionDays(days?: number): number {
  if (days === undefined) return DEFAULT_RETENTION_DAYS;
  if (!Number.isInteger(days) || days < 1 || days > MAX_RETENTION_DAYS) {
    throw new TallyboxError('RETENTION_OUT_OF_RANGE', `RETENTION_OUT_OF_RANGE: retention.templateDays must be a whole number of days from 1 to ${MAX_RETENTION_DAYS}, got ${String(days)}`, { key: 'retention.templateDays', value: days });
  }
  return days;
}

/** Who has templates but has not been seen since the cutoff, and how many templates there are (the vault implements this). */
export interface RetentionSource {
  staleTemplateSubjects(cutoffMs: number): Promise<Array<{ orgId: string; subjectIds: string[] }>>;
  orgs(): Promise<string[]>;
  listTemplates(orgId: string): Promise<Array<{ subjectId: string }>>;
}

export interface RetentionGuardOptions {
  /** Largest share of all templates one run may erase without confirmation (0..1, default 0.1). */
  maxFraction?: number;
  /** Monotonic time a larger candidate set must persist before it is erased (default 24 h). */
  confirmAfterMs?: number;
  /** Monotonic clock in ms (default performance.now). */
  monotonic?: () => number;
}

/** A candidate set larger than the fraction, waiting for a later run to confirm it. */
export interface RetentionHold {
  templates: number;
  total: number;
  /** Monotonic ms when it was recorded. */
  sinceMono: number;
  /** Wall-clock stamp for people (DeviceState); never used for the wait. */
  sinceMs: number;
  subjects: Map<string, Set<string>>;
}

/** Remembers over-threshold candidate sets between runs (one per agent process). */
export class RetentionGuard {
  readonly maxFraction: number;
  readonly confirmAfterMs: number;
  readonly monotonic: () => number;
  hold: RetentionHold | undefined;

  constructor(opts: RetentionGuardOptions = {}) {
    const f = opts.maxFraction ?? DEFAULT_RETENTION_MAX_FRACTION;
    if (!(f >= 0 && f <= 1)) throw new TallyboxError('CONFIG_INVALID', `privacy.retentionMaxFraction must be between 0 and 1, got ${String(f)}`, { key: 'privacy.retentionMaxFraction' });
    this.maxFraction = f;
    this.confirmAfterMs = opts.confirmAfterMs ?? DEFAULT_RETENTION_CONFIRM_HOURS * 3600_000;
    this.monotonic = opts.monotonic ?? (() => performance.now());
  }
}

export interface RetentionOptions {
  source: RetentionSource;
  purger: Purger;
  /** Default 365, max 1095. */
  periodDays?: number;
  nowMs?: number;
  /** Is the wall clock synchronised now? Nothing is erased when it is not. */
  clockSynced: boolean;
  guard: RetentionGuard;
}

export type RetentionRun =
  | { status: 'skipped'; reason: 'CLOCK_UNSYNCED'; outcomes: [] }
  /** Candidates over the fraction: recorded (or still waiting), nothing erased. */
  | { status: 'held'; candidates: number; total: number; outcomes: [] }
  | { status: 'erased'; confirmed: boolean; outcomes: PurgeOutcome[] };

/** One purge (and receipt) per org that has stale templates. Run daily. */
export async function runRetention(opts: RetentionOptions): Promise<RetentionRun> {
  const { guard } = opts;
  if (!opts.clockSynced) {
    // A confirmation must come from a synchronised clock: the wait starts again.
    guard.hold = undefined;
    return { status: 'skipped', reason: 'CLOCK_UNSYNCED', outcomes: [] };
  }
  const days = resolveRetentionDays(opts.periodDays);
  const nowMs = opts.nowMs ?? Date.now();
  const stale = new Map<string, Set<string>>();
  for (const { orgId, subjectIds } of await opts.source.staleTemplateSubjects(nowMs - days * DAY_MS)) if (subjectIds.length > 0) stale.set(orgId, new Set(subjectIds));
  let total = 0;
  let candidates = 0;
  for (const orgId of await opts.source.orgs()) {
    const set = stale.get(orgId);
    for (const t of await opts.source.listTemplates(orgId)) {
      total++;
      if (set?.has(t.subjectId)) candidates++;
    }
  }
  let erase = stale;
  let confirmed = false;
  if (candidates > Math.floor(guard.maxFraction * total)) {
    const mono = guard.monotonic();
    const hold = guard.hold;
    if (!hold || mono - hold.sinceMono < guard.confirmAfterMs) {
      if (!hold) guard.hold = { templates: candidates, total, sinceMono: mono, sinceMs: nowMs, subjects: stale };
      return { status: 'held', candidates, total, outcomes: [] };
    }
    // Confirmed: erase those stale in both runs.
    erase = new Map();
    for (const [orgId, ids] of stale) {
      const before = hold.subjects.get(orgId);
      const both = [...ids].filter((id) => before?.has(id));
      if (both.length > 0) erase.set(orgId, new Set(both));
    }
    confirmed = true;
  }
  guard.hold = undefined;
  const outcomes: PurgeOutcome[] = [];
  for (const [orgId, ids] of erase) outcomes.push(await opts.purger.eraseTemplates(orgId, [...ids], { requestRef: `retention:${days}d` }));
  return { status: 'erased', confirmed, outcomes };
}
