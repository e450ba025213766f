/**
 * The command journal's part in an erasure (src/privacy ErasureParticipant).
 *
 * commands.db keeps the last commands' journal rows with their signed
 * results (so a replayed command is answered, and a crash re-queues a result
 * exactly once). A result of a subject-bearing command (SubjectUpsert: "window
 * armed for sub-…", SubjectErase, RosterSync) can echo the subject's id, so
 * after an org withdrawal or an account closure those rows must go too — or
 * the device keeps an erased person's id for as long as the journal keeps
 * rows. Replay protection does not depend on them: the counter and the
 * nonces live in their own tables.
 *
 * Only rows whose result is already in the delivery queue are deleted: a
 * result not yet queued must still be delivered (the cloud waits for it; the
 * withdrawal's own command is one). Its row goes with the next erasure or the
 * journal's pruning. Opened on its own connection per call: the purge may run
 * with the agent stopped (`tallybox purge`) or at boot before the intake is up.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ErasureParticipant, ErasureReport } from '../../privacy/types.js';
import { Sqlite } from '../../store/sqlite.js';

export const COMMANDS_DB_FILE = 'commands.db';

/** Command kinds whose journal rows name subjects (their results may echo ids). */
export const SUBJECT_BEARING_KINDS: readonly string[] = ['subjectUpsert', 'subjectErase', 'rosterSync'];

const kindsIn = `kind IN (${SUBJECT_BEARING_KINDS.map(() => '?').join(', ')})`;

/** Delete the queued journal rows matching `where` (with `params`), compact the file, and count what is left. */
async function eraseRows(path: string, where: string, params: string[]): Promise<ErasureReport> {
  if (!existsSync(path)) return { ok: true, counts: { commandRows: 0 } };
  const db = await Sqlite.open(path, { create: false });
  try {
    const have = await db.get<{ n: number }>("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'journal'");
    if (!have || have.n === 0) return { ok: true, counts: { commandRows: 0 } };
    const deleted = (await db.run(`DELETE FROM journal WHERE queued = 1 AND ${where}`, params)).changes;
    // secure_delete zeroes the freed cells; VACUUM and the truncating checkpoints drop the old pages and the WAL.
    await db.exec('PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);');
    const left = (await db.get<{ n: number }>(`SELECT count(*) AS n FROM journal WHERE queued = 1 AND ${where}`, params))?.n ?? 0;
    return left === 0 ? { ok: true, counts: { commandRows: deleted } } : { ok: false, counts: { commandRows: deleted }, detail: `${left} command journal rows of the scope still present` };
  } finally {
    await db.close();
  }
}

export function commandJournalErasureParticipant(dataDir: string): ErasureParticipant {
  const path = join(dataDir, COMMANDS_DB_FILE);
  return {
    name: 'command-journal',
    // The org is gone: none of its delivered command rows has a reason to stay.
    eraseOrg: (orgId) => eraseRows(path, 'org_id = ?', [orgId]),
    // Which of the org's subject-bearing rows names this subject is not indexed: all of them go (diagnostic history only).
    eraseSubject: (orgId) => eraseRows(path, `org_id = ? AND ${kindsIn}`, [orgId, ...SUBJECT_BEARING_KINDS]),
    scanFiles: () => [path, `${path}-wal`, `${path}-shm`, `${path}-journal`],
  };
}
