/**
 * The spool's job table (SQLite, one file: DATADIR/p1-spool.db). It holds job
 * metadata and each job's data key wrapped by its org key; never document
 * bytes, file names or user names (the document is in an encrypted spool file
 * named after a random id). Every state change goes through `transition`,
 * which checks the state machine (states.ts) and writes in one statement.
 */
import { Sqlite } from '../../store/sqlite.js';
import { TallyboxError } from '../../util/errors.js';
import { sqliteFiles } from '../../privacy/scan.js';
import { assertTransition, isJobState, type JobState } from './states.js';
import type { PrintFormat } from '../../../firmware-bridge/devices.js';

export interface JobRow {
  jobId: string;
  orgId: string;
  state: JobState;
  format: PrintFormat;
  copies: number;
  printer: string;
  printAfterMs: number | null;
  fetchUrl: string | null;
  fetchSha256: Buffer | null;
  fetchSize: number | null;
  /** The job's data key, wrapped by the org key; NULL once destroyed (the job ended). */
  wrappedKey: Buffer | null;
  keyVersion: number;
  /** Random name of the encrypted spool file in the spool directory. */
  file: string;
  bytesTotal: number;
  bytesSent: number;
  /** The printer took responsibility (onAccepted) in the current attempt: never re-sent automatically. */
  accepted: boolean;
  printerRef: string | null;
  errorCode: string | null;
  pages: number;
  attempts: number;
  /** The PrintJob command's counter: every status of the job is a result under it. */
  counter: number;
  statusSeq: number;
  createdAtMs: number;
}

const COLS = `job_id, org_id, state, format, copies, printer, print_after_ms, fetch_url, fetch_sha256, fetch_size, wrapped_key, key_version, file,
  bytes_total, bytes_sent, accepted, printer_ref, error_code, pages, attempts, counter, status_seq, created_at_ms`;

interface Raw {
  job_id: string;
  org_id: string;
  state: string;
  format: string;
  copies: number;
  printer: string;
  print_after_ms: number | null;
  fetch_url: string | null;
  fetch_sha256: Buffer | null;
  fetch_size: number | null;
  wrapped_key: Buffer | null;
  key_version: number;
  file: string;
  bytes_total: number;
  bytes_sent: number;
  accepted: number;
  printer_ref: string | null;
  error_code: string | null;
  pages: number;
  attempts: number;
  counter: number;
  status_seq: number;
  created_at_ms: number;
}

function fromRaw(r: Raw): JobRow {
  if (!isJobState(r.state)) throw new TallyboxError('P1_SPOOL_CORRUPT', `P1_SPOOL_CORRUPT: job ${r.job_id} has unknown state "${r.state}"`);
  return {
    jobId: r.job_id,
    orgId: r.org_id,
    state: r.state,
    format: r.format as PrintFormat,
    copies: r.copies,
    printer: r.printer,
    printAfterMs: r.print_after_ms,
    fetchUrl: r.fetch_url,
    fetchSha256: r.fetch_sha256,
    fetchSize: r.fetch_size,
    wrappedKey: r.wrapped_key,
    keyVersion: r.key_version,
    file: r.file,
    bytesTotal: r.bytes_total,
    bytesSent: r.bytes_sent,
    accepted: r.accepted === 1,
    printerRef: r.printer_ref,
    errorCode: r.error_code,
    pages: r.pages,
    attempts: r.attempts,
    counter: r.counter,
    statusSeq: r.status_seq,
    createdAtMs: r.created_at_ms,
  };
}

/** Fields a transition may change besides the state. */
export type JobPatch = Partial<Pick<JobRow, 'bytesTotal' | 'bytesSent' | 'accepted' | 'printerRef' | 'errorCode' | 'pages' | 'attempts' | 'wrappedKey' | 'keyVersion' | 'file'>>;

const PATCH_COLS: Record<keyof JobPatch, string> = {
  bytesTotal: 'bytes_total',
  bytesSent: 'bytes_sent',
  accepted: 'accepted',
  printerRef: 'printer_ref',
  errorCode: 'error_code',
  pages: 'pages',
  attempts: 'attempts',
  wrappedKey: 'wrapped_key',
  keyVersion: 'key_version',
  file: 'file',
};

export class SpoolStore {
  private constructor(readonly db: Sqlite) {}

  static async open(path: string): Promise<SpoolStore> {
    const db = await Sqlite.open(path);
    await db.exec(`CREATE TABLE IF NOT EXISTS p1_jobs (
      job_id TEXT NOT NULL, org_id TEXT NOT NULL, state TEXT NOT NULL, format TEXT NOT NULL, copies INTEGER NOT NULL, printer TEXT NOT NULL,
      print_after_ms INTEGER, fetch_url TEXT, fetch_sha256 BLOB, fetch_size INTEGER, wrapped_key BLOB, key_version INTEGER NOT NULL,
      file TEXT NOT NULL, bytes_total INTEGER NOT NULL DEFAULT 0, bytes_sent INTEGER NOT NULL DEFAULT 0, accepted INTEGER NOT NULL DEFAULT 0,
      printer_ref TEXT, error_code TEXT, pages INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, counter INTEGER NOT NULL,
      status_seq INTEGER NOT NULL DEFAULT 0, created_at_ms INTEGER NOT NULL,
      PRIMARY KEY (org_id, job_id))`);
    // Ended jobs (no key, no content): a retried PrintJob with a known id is answered, never queued again.
    await db.exec('CREATE TABLE IF NOT EXISTS p1_ended (org_id TEXT NOT NULL, job_id TEXT NOT NULL, state TEXT NOT NULL, ended_at_ms INTEGER NOT NULL, PRIMARY KEY (org_id, job_id))');
    // An org withdrawal's tally (counts only, withdraw.ts): what the spool shredded, across interrupted runs.
    await db.exec(
      'CREATE TABLE IF NOT EXISTS p1_withdrawn (org_id TEXT PRIMARY KEY, jobs INTEGER NOT NULL, keys_destroyed INTEGER NOT NULL, keys_earlier INTEGER NOT NULL, files_removed INTEGER NOT NULL, files_earlier INTEGER NOT NULL, samples INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL)',
    );
    return new SpoolStore(db);
  }

  /**
   * The database files the erasure scan reads. Not the -shm: it is the WAL index (page numbers,
   * salts; no page content), and opening and closing it here drops this process's POSIX locks on
   * it, after which another process's connection (doctor, a read-only reader) may take it for
   * unused and truncate it under our mapping (SIGBUS).
   */
  files(): string[] {
    return sqliteFiles(this.db.path).filter((f) => !f.endsWith('-shm'));
  }

  async insert(row: JobRow): Promise<void> {
    await this.db.run(`INSERT INTO p1_jobs (${COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
      row.jobId,
      row.orgId,
      row.state,
      row.format,
      row.copies,
      row.printer,
      row.printAfterMs,
      row.fetchUrl,
      row.fetchSha256,
      row.fetchSize,
      row.wrappedKey,
      row.keyVersion,
      row.file,
      row.bytesTotal,
      row.bytesSent,
      row.accepted ? 1 : 0,
      row.printerRef,
      row.errorCode,
      row.pages,
      row.attempts,
      row.counter,
      row.statusSeq,
      row.createdAtMs,
    ]);
  }

  async get(orgId: string, jobId: string): Promise<JobRow | undefined> {
    const r = await this.db.get<Raw>(`SELECT ${COLS} FROM p1_jobs WHERE org_id = ? AND job_id = ?`, [orgId, jobId]);
    return r ? fromRaw(r) : undefined;
  }

  async all(): Promise<JobRow[]> {
    return (await this.db.all<Raw>(`SELECT ${COLS} FROM p1_jobs ORDER BY created_at_ms, rowid`)).map(fromRaw);
  }

  /**
   * Move a job from `row.state` to `to` (checked against the state machine), with the patch, and a
   * new status sequence number. Conditional on the state still being `row.state`: a concurrent
   * change (a CancelJob while sending) makes this one P1_STATE_RACE, never a silent overwrite.
   */
  async transition(row: JobRow, to: JobState, patch: JobPatch = {}): Promise<JobRow> {
    assertTransition(row.jobId, row.state, to);
    const sets = ['state = ?', 'status_seq = status_seq + 1'];
    const params: Array<string | number | Buffer | null> = [to];
    for (const [k, v] of Object.entries(patch) as Array<[keyof JobPatch, JobPatch[keyof JobPatch]]>) {
      sets.push(`${PATCH_COLS[k]} = ?`);
      params.push(typeof v === 'boolean' ? (v ? 1 : 0) : (v ?? null));
    }
    params.push(row.orgId, row.jobId, row.state);
    const r = await this.db.run(`UPDATE p1_jobs SET ${sets.join(', ')} WHERE org_id = ? AND job_id = ? AND state = ?`, params);
    if (r.changes !== 1) throw new TallyboxError('P1_STATE_RACE', `P1_STATE_RACE: print job ${row.jobId} is no longer ${row.state}`);
    return { ...row, ...patch, state: to, statusSeq: row.statusSeq + 1 };
  }

  /** A field that is not a state change (progress, the accepted mark); conditional on the state. */
  async update(row: JobRow, patch: JobPatch): Promise<JobRow> {
    const sets: string[] = [];
    const params: Array<string | number | Buffer | null> = [];
    for (const [k, v] of Object.entries(patch) as Array<[keyof JobPatch, JobPatch[keyof JobPatch]]>) {
      sets.push(`${PATCH_COLS[k]} = ?`);
      params.push(typeof v === 'boolean' ? (v ? 1 : 0) : (v ?? null));
    }
    if (sets.length === 0) return row;
    params.push(row.orgId, row.jobId, row.state);
    const r = await this.db.run(`UPDATE p1_jobs SET ${sets.join(', ')} WHERE org_id = ? AND job_id = ? AND state = ?`, params);
    if (r.changes !== 1) throw new TallyboxError('P1_STATE_RACE', `P1_STATE_RACE: print job ${row.jobId} is no longer ${row.state}`);
    return { ...row, ...patch };
  }

  async delete(orgId: string, jobId: string): Promise<void> {
    await this.db.run('DELETE FROM p1_jobs WHERE org_id = ? AND job_id = ?', [orgId, jobId]);
  }

  close(): Promise<void> {
    return this.db.close();
  }
}
