/**
 * RosterSync: the cloud sends the full list of valid subject ids of an org;
 * anyone else of that org on the device is erased. Erasure thereby converges
 * even when a SubjectErase command was lost.
 */
import type { Purger, PurgeOutcome } from './purge.js';

/** Who is on the device (the vault implements this). */
export interface RosterSource {
  subjectIds(orgId: string): Promise<string[]>;
}

export interface RosterSyncOptions {
  source: RosterSource;
  purger: Purger;
  orgId: string;
  validSubjectIds: readonly string[];
  requestRef?: string;
}

export interface RosterSyncResult {
  /** How many subjects were erased (never who). */
  erased: number;
  /** The purge and its signed receipt; undefined when nobody had to go. */
  outcome: PurgeOutcome | undefined;
}

export async function syncRoster(opts: RosterSyncOptions): Promise<RosterSyncResult> {
  const valid = new Set(opts.validSubjectIds);
  const extra = (await opts.source.subjectIds(opts.orgId)).filter((id) => !valid.has(id));
  if (extra.length === 0) return { erased: 0, outcome: undefined };
  const outcome = await opts.purger.eraseSubjects(opts.orgId, extra, opts.requestRef === undefined ? {} : { requestRef: opts.requestRef });
  return { erased: extra.length, outcome };
}
