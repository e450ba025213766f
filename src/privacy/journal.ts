/**
 * The purge pipeline's own journal, `purge-journal.db` next to the vault:
 *
 *  - the keyed fingerprints of a purge's samples (fingerprint.ts), written
 *    durably before anything is erased, so a purge resumed after a crash
 *    verifies against the same evidence as the first run;
 *  - the signed receipt of every completed purge, written in the same
 *    transaction that marks the purge complete, and kept until it has been
 *    handed to the result queue (`settle`). A crash at any point therefore
 *    leaves either a purge to finish or a receipt to deliver, never neither.
 *
 * Where the key lives: not here. Each job stores a random salt and a check
 * tag; the key is HKDF(root, salt, jobId), and the root is derived from the
 * device KEK (outside the data directory: a key file or a systemd
 * credential). A copy of the data directory alone therefore cannot test a
 * guessed subject id against the fingerprints. This file is itself covered
 * by the verification scan: it holds only fingerprints, receipts and org ids,
 * and the scan shows that.
 *
 * The vault's purge_jobs row stays the authority on whether a purge is
 * pending; a journal entry without one is an orphan of a crash between the
 * two writes and is dropped (`dropOrphans`).
 */
import { chmod } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { Sqlite } from '../store/sqlite.js';
import { SerialQueue } from '../util/serial-queue.js';
import { TallyboxError } from '../util/errors.js';
import { decodeSet, deriveJobKey, encodeSet, fingerprintSamples, keyCheck, keyMatches, type FingerprintSet } from './fingerprint.js';
import { sqliteFiles } from './scan.js';
import type { ErasureSample } from './types.js';

export const PURGE_JOURNAL_FILE = 'purge-journal.db';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS purge_fingerprints (
  job_id        TEXT PRIMARY KEY,
  org_id        TEXT NOT NULL,
  state         TEXT NOT NULL CHECK (state IN ('sampled', 'done')),
  salt          BLOB,
  key_check     BLOB,
  entries       BLOB,
  created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS purge_receipts (
  receipt_id    TEXT PRIMARY KEY,
  job_id        TEXT NOT NULL UNIQUE,
  org_id        TEXT NOT NULL,
  request_ref   TEXT,
  ok            INTEGER NOT NULL,
  resumed       INTEGER NOT NULL,
  signed        TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL
);
`;

/** A receipt waiting to be handed to the result queue. */
export interface QueuedReceipt {
  receiptId: string;
  jobId: string;
  orgId: string;
  requestRef: string | null;
  ok: boolean;
  resumed: boolean;
  /** The SignedErasureReceipt as JSON. */
  signed: string;
}

/** What the journal holds for a job. */
export type JobEvidence =
  | { state: 'sampled'; set: FingerprintSet }
  | { state: 'done'; receiptId: string | undefined }
  /** No entry (a job journalled before this version, or the journal was lost). */
  | { state: 'missing' }
  /** An entry that cannot be used: damaged, or the key does not match (re-provisioned KEK). */
  | { state: 'unusable'; reason: 'FINGERPRINTS_CORRUPT' | 'FINGERPRINT_KEY_MISMATCH' };

interface FingerprintRow {
  job_id: string;
  state: 'sampled' | 'done';
  salt: Buffer | null;
  key_check: Buffer | null;
  entries: Buffer | null;
}

export class PurgeJournal {
  private readonly queue = new SerialQueue();
  private closed = false;

  private constructor(
    private readonly db: Sqlite,
    private readonly root: Buffer,
    private readonly clock: () => number,
  ) {}

  /**
   * Open (creating if needed). `root` is the fingerprint root key (32 bytes,
   * derived from the KEK by the caller); the journal keeps its own copy and
   * wipes it on close.
   */
  static async open(opts: { path: string; root: Buffer; clock?: () => number }): Promise<PurgeJournal> {
    if (opts.root.length < 32) throw new TallyboxError('KEY_INVALID', 'the purge fingerprint root key must be at least 32 bytes');
    const db = await Sqlite.open(opts.path);
    try {
      await db.exec(SCHEMA);
      for (const f of sqliteFiles(opts.path)) await chmod(f, 0o600).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
    } catch (err) {
      await db.close().catch(() => undefined);
      throw err;
    }
    return new PurgeJournal(db, Buffer.from(opts.root), opts.clock ?? Date.now);
  }

  get path(): string {
    return this.db.path;
  }

  files(): string[] {
    return sqliteFiles(this.db.path);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const guarded = async (): Promise<T> => {
      if (this.closed) throw new TallyboxError('PURGE_JOURNAL_CLOSED', 'the purge journal has been closed');
      return fn();
    };
    return this.queue.run(guarded);
  }

  /** Fingerprint the samples under a fresh per-job key and store them durably. */
  record(jobId: string, orgId: string, samples: readonly ErasureSample[]): Promise<FingerprintSet> {
    return this.serial(async () => {
      const salt = randomBytes(16);
      const set = fingerprintSamples(deriveJobKey(this.root, salt, jobId), samples);
      await this.db.run('INSERT INTO purge_fingerprints (job_id, org_id, state, salt, key_check, entries, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)', [jobId, orgId, 'sampled', salt, keyCheck(set.key), encodeSet(set), this.clock()]);
      return set;
    });
  }

  evidence(jobId: string): Promise<JobEvidence> {
    return this.serial(async () => {
      const row = await this.db.get<FingerprintRow>('SELECT job_id, state, salt, key_check, entries FROM purge_fingerprints WHERE job_id = ?', [jobId]);
      if (!row) return { state: 'missing' };
      if (row.state === 'done') {
        const r = await this.db.get<{ receipt_id: string }>('SELECT receipt_id FROM purge_receipts WHERE job_id = ?', [jobId]);
        return { state: 'done', receiptId: r?.receipt_id };
      }
      if (!row.salt || !row.key_check || !row.entries) return { state: 'unusable', reason: 'FINGERPRINTS_CORRUPT' };
      const key = deriveJobKey(this.root, row.salt, jobId);
      if (!keyMatches(key, row.key_check)) return { state: 'unusable', reason: 'FINGERPRINT_KEY_MISMATCH' };
      try {
        return { state: 'sampled', set: decodeSet(key, row.entries) };
      } catch {
        // decodeSet throws only FINGERPRINTS_CORRUPT; the caller reports the purge unverified.
        return { state: 'unusable', reason: 'FINGERPRINTS_CORRUPT' };
      }
    });
  }

  /**
   * The purge is complete: in one transaction, mark it done, drop its
   * fingerprints and queue its receipt. Idempotent per job.
   */
  complete(r: QueuedReceipt): Promise<void> {
    return this.serial(async () => {
      await this.db.transaction(async () => {
        await this.db.run(
          `INSERT INTO purge_fingerprints (job_id, org_id, state, created_at_ms) VALUES (?, ?, 'done', ?)
           ON CONFLICT (job_id) DO UPDATE SET state = 'done', salt = NULL, key_check = NULL, entries = NULL`,
          [r.jobId, r.orgId, this.clock()],
        );
        await this.db.run('INSERT OR IGNORE INTO purge_receipts (receipt_id, job_id, org_id, request_ref, ok, resumed, signed, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [
          r.receiptId,
          r.jobId,
          r.orgId,
          r.requestRef,
          r.ok ? 1 : 0,
          r.resumed ? 1 : 0,
          r.signed,
          this.clock(),
        ]);
      });
      // The fingerprints' pages are zeroed (secure_delete); old copies leave the WAL here.
      await this.db.get('PRAGMA wal_checkpoint(TRUNCATE)');
    });
  }

  /** The vault's job row is gone too: the journal entry has served its purpose. */
  forget(jobId: string): Promise<void> {
    return this.serial(async () => {
      await this.db.run('DELETE FROM purge_fingerprints WHERE job_id = ?', [jobId]);
    });
  }

  /** Drop entries whose job the vault no longer (or never) journalled: crashes between the two writes. */
  dropOrphans(pendingJobIds: ReadonlySet<string>): Promise<number> {
    return this.serial(async () => {
      const rows = await this.db.all<{ job_id: string }>('SELECT job_id FROM purge_fingerprints');
      let n = 0;
      for (const r of rows) {
        if (pendingJobIds.has(r.job_id)) continue;
        await this.db.run('DELETE FROM purge_fingerprints WHERE job_id = ?', [r.job_id]);
        n++;
      }
      return n;
    });
  }

  pendingReceipts(): Promise<QueuedReceipt[]> {
    return this.serial(async () => {
      const rows = await this.db.all<{ receipt_id: string; job_id: string; org_id: string; request_ref: string | null; ok: number; resumed: number; signed: string }>(
        'SELECT receipt_id, job_id, org_id, request_ref, ok, resumed, signed FROM purge_receipts ORDER BY created_at_ms, receipt_id',
      );
      return rows.map((r) => ({ receiptId: r.receipt_id, jobId: r.job_id, orgId: r.org_id, requestRef: r.request_ref, ok: r.ok === 1, resumed: r.resumed === 1, signed: r.signed }));
    });
  }

  /** The receipt is durably in the result queue: forget it. */
  settle(receiptId: string): Promise<boolean> {
    return this.serial(async () => (await this.db.run('DELETE FROM purge_receipts WHERE receipt_id = ?', [receiptId])).changes > 0);
  }

  /** Idempotent: a second close (stop after a failed start) is a no-op. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.serial(async () => {
      if (this.closed) return;
      this.closed = true;
      this.root.fill(0);
      await this.db.close();
    });
  }
}
