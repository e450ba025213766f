/**
 * The spool's part of an org withdrawal, in one place for both ways it runs:
 *
 *  - the print role is running: Spool.eraseOrg stops the org's jobs in flight, then calls
 *    `shredOrgJobs` on its own store;
 *  - the print role is not running (a purge resumed at start-up, before the role is attached; a
 *    `tallybox purge` with the agent stopped): `spoolErasureParticipant` opens the spool database
 *    itself, calls `shredOrgJobs`, and closes it again.
 *
 * So the purge pipeline always has the spool as a participant, and every withdrawal receipt,
 * resumed or not, lists `p1-spool` with what it did (the participant is registered where the
 * pipeline is opened, src/agent/privacy.ts, like the C1 window file; the role attaches its live
 * spool to it instead of registering a second one).
 *
 * What the counts say (a receipt claims neither less nor more than happened):
 *   printJobs                   the org's job rows shredded, by this call and earlier calls of the
 *                               withdrawal (a tally in the spool database, p1_withdrawn, added to in
 *                               the transaction that deletes the rows; dropped when the org prints again)
 *   printKeysDestroyed          of them, wrapped keys destroyed by the call that deleted the row
 *   printKeysDestroyedEarlier   keys already gone then: an earlier, interrupted run destroyed them
 *   printFilesRemoved / printFilesRemovedEarlier   likewise for the spool files
 *   printSamples                fragments sampled before anything went (all calls)
 *   printScanHits               fragments this call's scan found (0 for ok)
 *   printScanHitsEarlier        fragments an earlier call's scan found (its samples are scanned for again)
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ErasureParticipant, ErasureReport, ErasureSample } from '../../privacy/types.js';
import { silentLogger, type Logger } from '../../util/log.js';
import { removeSpoolFile, sampleJob, scanJob } from './shred.js';
import { SpoolStore } from './store.js';

export const SPOOL_PARTICIPANT = 'p1-spool';
export const SPOOL_DB_FILE = 'p1-spool.db';

export interface ShredOrgOptions {
  store: SpoolStore;
  spoolDir: string;
  orgId: string;
  logger?: Logger;
  /** Called again after the keys are destroyed: a job picked up just before it fails on its missing key, stopped here. */
  stopRunning?: () => Promise<void>;
  /** Samples an earlier call of this withdrawal took whose fragments its scan still found: scanned for again. */
  carried?: readonly ErasureSample[];
}

/** The report, and the samples to carry into the next call when fragments were found (else none; the rest are wiped). */
export interface ShredOrgResult {
  report: ErasureReport;
  leftover: ErasureSample[];
}

/** The org's withdrawal tally in the spool database (counts only; kept until the org prints again). */
interface Tally {
  jobs: number;
  keys_destroyed: number;
  keys_earlier: number;
  files_removed: number;
  files_earlier: number;
  samples: number;
}

export async function shredOrgJobs(o: ShredOrgOptions): Promise<ShredOrgResult> {
  const log = o.logger ?? silentLogger();
  const { store, spoolDir, orgId } = o;
  const rows = (await store.all()).filter((r) => r.orgId === orgId);
  // Fragments of every job's spool file and wrapped key, taken before they go: the report then says
  // whether any of them survived here (the vault's scan knows nothing of them).
  const samples: Awaited<ReturnType<typeof sampleJob>> = [];
  for (const row of rows) samples.push(...(await sampleJob(join(spoolDir, row.file), row.wrappedKey)));
  const keysBefore = rows.filter((r) => r.wrappedKey?.length).length;
  log.info({ event: 'p1_withdraw_step', step: 'sampled', jobs: rows.length }, 'withdrawal: print jobs sampled');
  // Keys first, in one statement, whatever state a worker left a job in; then the files, then the rows.
  await store.db.run('UPDATE p1_jobs SET wrapped_key = NULL WHERE org_id = ?', [orgId]);
  log.info({ event: 'p1_withdraw_step', step: 'keys' }, 'withdrawal: print job keys destroyed');
  await o.stopRunning?.();
  let filesRemoved = 0;
  for (const row of rows) if (await removeSpoolFile(spoolDir, row.file)) filesRemoved++;
  log.info({ event: 'p1_withdraw_step', step: 'files' }, 'withdrawal: spool files removed');
  // The rows go in the same transaction that adds them to the org's tally (p1_withdrawn): a call
  // after a run killed past this point still reports what that run shredded.
  await store.db.transaction(async () => {
    await store.db.run('DELETE FROM p1_jobs WHERE org_id = ?', [orgId]);
    await store.db.run('DELETE FROM p1_ended WHERE org_id = ?', [orgId]);
    await store.db.run(
      `INSERT INTO p1_withdrawn (org_id, jobs, keys_destroyed, keys_earlier, files_removed, files_earlier, samples, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (org_id) DO UPDATE SET jobs = jobs + excluded.jobs, keys_destroyed = keys_destroyed + excluded.keys_destroyed, keys_earlier = keys_earlier + excluded.keys_earlier,
         files_removed = files_removed + excluded.files_removed, files_earlier = files_earlier + excluded.files_earlier, samples = samples + excluded.samples, updated_at_ms = excluded.updated_at_ms`,
      // updated_at_ms: a timestamp for whoever reads the tally, never compared or subtracted.
      [orgId, rows.length, keysBefore, rows.length - keysBefore, filesRemoved, rows.length - filesRemoved, samples.length, Date.now()],
    );
  });
  const tally = (await store.db.get<Tally>('SELECT jobs, keys_destroyed, keys_earlier, files_removed, files_earlier, samples FROM p1_withdrawn WHERE org_id = ?', [orgId])) ?? {
    jobs: 0,
    keys_destroyed: 0,
    keys_earlier: 0,
    files_removed: 0,
    files_earlier: 0,
    samples: 0,
  };
  // Old page images (with the wrapped keys) must not outlive the jobs in the -wal file.
  await store.db.get('PRAGMA wal_checkpoint(TRUNCATE)').catch(() => undefined); // busy: the scan below says what is left
  // This call's samples and those an earlier call could not clear: a retry must not be blind to what it left.
  const all = [...samples, ...(o.carried ?? [])];
  const scan = all.length ? await scanJob(spoolDir, store.files(), all) : undefined;
  const hits = scan?.hits ?? 0;
  const ok = scan === undefined || (scan.ok && hits === 0);
  if (ok) for (const s of all) s.bytes.fill(0);
  if (!ok) log.error({ event: 'p1_withdraw_unverified', hits }, 'print jobs of a withdrawn organisation were shredded but the scan found fragments');
  const report: ErasureReport = {
    ok,
    counts: {
      printJobs: tally.jobs,
      printKeysDestroyed: tally.keys_destroyed,
      printKeysDestroyedEarlier: tally.keys_earlier,
      printFilesRemoved: tally.files_removed,
      printFilesRemovedEarlier: tally.files_earlier,
      printSamples: tally.samples,
      printScanHits: hits,
    },
    ...(ok ? {} : { detail: `spool scan found ${hits} fragments` }),
  };
  return { report, leftover: ok ? [] : all };
}

/** What the participant delegates to while the print role runs (P1Role). */
export interface LiveSpool {
  shredOrg(orgId: string, carried: readonly ErasureSample[]): Promise<ShredOrgResult>;
  scanFiles(): readonly string[];
}

export interface SpoolErasureParticipant extends ErasureParticipant {
  /** The running role takes over (its spool stops the org's jobs in flight first); undefined: back to offline. */
  attach(live: LiveSpool | undefined): void;
}

export function isSpoolErasureParticipant(p: ErasureParticipant | undefined): p is SpoolErasureParticipant {
  return !!p && p.name === SPOOL_PARTICIPANT && typeof (p as Partial<SpoolErasureParticipant>).attach === 'function';
}

/**
 * The spool as an erasure participant whether or not the print role runs. Offline it opens the
 * spool database for the call only (a spool never created holds nothing: an empty report).
 */
export function spoolErasureParticipant(o: { dataDir: string; spoolDir?: string | undefined; logger?: Logger }): SpoolErasureParticipant {
  const dbPath = join(o.dataDir, SPOOL_DB_FILE);
  const spoolDir = o.spoolDir ?? join(o.dataDir, 'spool');
  let live: LiveSpool | undefined;
  /**
   * Per org, while its withdrawal is not done here: the samples whose fragments earlier calls still
   * found, and how many. The pipeline calls again (its retries, its timer): that call's scan still
   * looks for them. In memory: a restart loses them (the README says so).
   */
  const earlier = new Map<string, { hits: number; leftover: ErasureSample[] }>();
  const offline = async (orgId: string, carried: readonly ErasureSample[]): Promise<ShredOrgResult> => {
    if (!existsSync(dbPath)) return { report: { ok: true, counts: { printJobs: 0 } }, leftover: [] };
    const store = await SpoolStore.open(dbPath);
    try {
      return await shredOrgJobs({ store, spoolDir, orgId, carried, ...(o.logger ? { logger: o.logger } : {}) });
    } finally {
      await store.close();
    }
  };
  return {
    name: SPOOL_PARTICIPANT,
    attach: (l) => {
      live = l;
    },
    eraseOrg: async (orgId) => {
      const before = earlier.get(orgId);
      const { report, leftover } = live ? await live.shredOrg(orgId, before?.leftover ?? []) : await offline(orgId, before?.leftover ?? []);
      // The counts are the org's tally (every call's, in the spool database); fragments an earlier
      // call found are said too (gone now, or still there: printScanHits says).
      const counts: Record<string, number> = { ...report.counts, ...(before ? { printScanHitsEarlier: before.hits } : {}) };
      if (report.ok) earlier.delete(orgId);
      else earlier.set(orgId, { hits: Math.max(before?.hits ?? 0, report.counts.printScanHits ?? 0), leftover });
      return { ...report, counts };
    },
    // Print jobs belong to an organisation, not to a subject: nothing to erase per person.
    eraseSubject: async () => ({ ok: true, counts: {} }),
    // Not the -shm (see SpoolStore.files): the same files whoever has the database open.
    scanFiles: () => (live ? live.scanFiles() : [dbPath, `${dbPath}-wal`, `${dbPath}-journal`]),
  };
}
