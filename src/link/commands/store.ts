/**
 * The intake's replay state, in its own SQLite file: the last accepted counter,
 * the nonces of accepted commands until they expire, and a short journal of
 * accepted commands (counter, org, command kind, outcome — nothing personal),
 * so a command cut short by a power loss can be seen after restart.
 *
 * Acceptance is one transaction (synchronous=FULL, WAL): the counter and the
 * nonce are on disk before the command's handler runs.
 */
import { chmod, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Sqlite } from '../../store/sqlite.js';
import { TallyboxError } from '../../util/errors.js';

const SCHEMA_VERSION = 1;
/** Journal rows kept (oldest pruned first). */
const JOURNAL_KEEP = 1000;

export interface JournalEntry {
  counter: number;
  orgId: string;
  kind: string;
  acceptedAtMs: number;
  /** Null while the command is running, or when it was interrupted (crash). */
  finishedAtMs: number | null;
  code: number | null;
  reason: string | null;
}

export interface Acceptance {
  counter: number;
  nonce: Uint8Array;
  /** Keep the nonce at least until this time. */
  keepNonceUntilMs: number;
  orgId: string;
  kind: string;
  nowMs: number;
}

export class ReplayStore {
  private constructor(private readonly db: Sqlite) {}

  static async open(path: string): Promise<ReplayStore> {
    await mkdir(dirname(path), { recursive: true });
    const db = await Sqlite.open(path);
    try {
      const v = (await db.get<{ user_version: number }>('PRAGMA user_version'))?.user_version ?? 0;
      if (v > SCHEMA_VERSION) {
        throw new TallyboxError('STORAGE_SCHEMA', `STORAGE_SCHEMA: command state ${path} has schema version ${v}, newer than this agent's ${SCHEMA_VERSION}`, { path, version: v });
      }
      await db.exec(`
        CREATE TABLE IF NOT EXISTS intake_state (
          id INTEGER PRIMARY KEY CHECK (id = 1),
          last_counter INTEGER NOT NULL
        );
        INSERT OR IGNORE INTO intake_state (id, last_counter) VALUES (1, 0);
        CREATE TABLE IF NOT EXISTS nonces (
          nonce BLOB PRIMARY KEY,
          keep_until_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS nonces_keep_until ON nonces (keep_until_ms);
        CREATE TABLE IF NOT EXISTS journal (
          counter INTEGER PRIMARY KEY,
          org_id TEXT NOT NULL,
          kind TEXT NOT NULL,
          accepted_at_ms INTEGER NOT NULL,
          finished_at_ms INTEGER,
          code INTEGER,
          reason TEXT
        );
        PRAGMA user_version = ${SCHEMA_VERSION};
      `);
      // Only the agent may write the replay state: a counter rolled back by another
      // local user would re-open the door to replays.
      for (const f of [path, `${path}-wal`, `${path}-shm`]) await chmod(f, 0o600).catch(() => undefined);
    } catch (err) {
      await db.close().catch(() => undefined);
      throw err;
    }
    return new ReplayStore(db);
  }

  async lastCounter(): Promise<number> {
    const row = await this.db.get<{ last_counter: number }>('SELECT last_counter FROM intake_state WHERE id = 1');
    return row?.last_counter ?? 0;
  }

  async nonceSeen(nonce: Uint8Array): Promise<boolean> {
    return (await this.db.get('SELECT 1 AS x FROM nonces WHERE nonce = ?', [Buffer.from(nonce)])) !== undefined;
  }

  /**
   * Record an accepted command: counter, nonce and journal entry in one
   * transaction, pruning nonces past their keep time. The counter update is
   * guarded (only ever moves up), so a racing writer can never move it back.
   */
  async accept(a: Acceptance): Promise<void> {
    await this.db.transaction(async () => {
      const r = await this.db.run('UPDATE intake_state SET last_counter = ? WHERE id = 1 AND last_counter < ?', [a.counter, a.counter]);
      if (r.changes !== 1) throw new TallyboxError('COUNTER_CONFLICT', `COUNTER_CONFLICT: counter ${a.counter} is not above the persisted counter`, { counter: a.counter });
      await this.db.run('INSERT INTO nonces (nonce, keep_until_ms) VALUES (?, ?)', [Buffer.from(a.nonce), a.keepNonceUntilMs]);
      await this.db.run('DELETE FROM nonces WHERE keep_until_ms < ?', [a.nowMs]);
      await this.db.run('INSERT OR REPLACE INTO journal (counter, org_id, kind, accepted_at_ms) VALUES (?, ?, ?, ?)', [a.counter, a.orgId, a.kind, a.nowMs]);
      await this.db.run('DELETE FROM journal WHERE counter NOT IN (SELECT counter FROM journal ORDER BY counter DESC LIMIT ?)', [JOURNAL_KEEP]);
    });
  }

  async finish(counter: number, code: number, reason: string, nowMs: number): Promise<void> {
    await this.db.run('UPDATE journal SET finished_at_ms = ?, code = ?, reason = ? WHERE counter = ?', [nowMs, code, reason, counter]);
  }

  async journal(limit = 100): Promise<JournalEntry[]> {
    const rows = await this.db.all<{ counter: number; org_id: string; kind: string; accepted_at_ms: number; finished_at_ms: number | null; code: number | null; reason: string | null }>(
      'SELECT counter, org_id, kind, accepted_at_ms, finished_at_ms, code, reason FROM journal ORDER BY counter DESC LIMIT ?',
      [limit],
    );
    return rows.map((r) => ({ counter: r.counter, orgId: r.org_id, kind: r.kind, acceptedAtMs: r.accepted_at_ms, finishedAtMs: r.finished_at_ms, code: r.code, reason: r.reason }));
  }

  close(): Promise<void> {
    return this.db.close();
  }
}
