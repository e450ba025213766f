/**
 * The intake's replay state, in its own SQLite file: the last accepted counter,
 * the nonces of accepted commands until they expire, and a short journal of
 * accepted commands (counter, org, command kind, outcome — nothing personal),
 * so a command cut short by a power loss can be seen after restart.
 *
 * Acceptance is one transaction (synchronous=FULL, WAL): the counter and the
 * nonce are on disk before the command's handler runs.
 *
 * Exactly one result per accepted command (schema 2): the signed result is
 * written into the command's journal row in the transaction that marks it
 * finished, and `queued` is set once the result is in the delivery queue (the
 * outbox). After a crash, a row with a result but not queued is queued again
 * (the same bytes, so at worst the cloud sees one identical duplicate — the
 * same as a QoS 1 redelivery); a row without a result gets an `interrupted`
 * result. The journal row of an accepted command is therefore never pruned
 * before its result is queued.
 */
import { chmod, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Sqlite } from '../../store/sqlite.js';
import { TallyboxError } from '../../util/errors.js';

const SCHEMA_VERSION = 2;
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
  /** The signed result (CommandResult JSON, bytes as base64), once decided. */
  result: string | null;
  /** The result is in the delivery queue. */
  queued: boolean;
}

interface Row {
  counter: number;
  org_id: string;
  kind: string;
  accepted_at_ms: number;
  finished_at_ms: number | null;
  code: number | null;
  reason: string | null;
  result: string | null;
  queued: number;
}
const COLS = 'counter, org_id, kind, accepted_at_ms, finished_at_ms, code, reason, result, queued';
const entry = (r: Row): JournalEntry => ({
  counter: r.counter,
  orgId: r.org_id,
  kind: r.kind,
  acceptedAtMs: r.accepted_at_ms,
  finishedAtMs: r.finished_at_ms,
  code: r.code,
  reason: r.reason,
  result: r.result,
  queued: r.queued === 1,
});

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
        throw new TallyboxError('STORAGE_SCHEMA', `command state ${path} has schema version ${v}, newer than this agent's ${SCHEMA_VERSION}`, { path, version: v });
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
      `);
      if (v < 2) {
        // Schema 1 → 2: results kept with their command. Rows finished under schema 1 had
        // their result handed over then (best effort); they count as queued.
        const cols = await db.all<{ name: string }>('PRAGMA table_info(journal)');
        await db.transaction(async () => {
          if (!cols.some((c) => c.name === 'result')) await db.run('ALTER TABLE journal ADD COLUMN result TEXT');
          if (!cols.some((c) => c.name === 'queued')) await db.run('ALTER TABLE journal ADD COLUMN queued INTEGER NOT NULL DEFAULT 0');
          if (!cols.some((c) => c.name === 'nonce')) await db.run('ALTER TABLE journal ADD COLUMN nonce BLOB');
          await db.run('UPDATE journal SET queued = 1 WHERE finished_at_ms IS NOT NULL');
          await db.run('CREATE INDEX IF NOT EXISTS journal_nonce ON journal (nonce)');
          await db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
        });
      }
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
      if (r.changes !== 1) throw new TallyboxError('COUNTER_CONFLICT', `counter ${a.counter} is not above the persisted counter`, { counter: a.counter });
      await this.db.run('INSERT INTO nonces (nonce, keep_until_ms) VALUES (?, ?)', [Buffer.from(a.nonce), a.keepNonceUntilMs]);
      await this.db.run('DELETE FROM nonces WHERE keep_until_ms < ?', [a.nowMs]);
      await this.db.run('INSERT OR REPLACE INTO journal (counter, org_id, kind, accepted_at_ms, nonce) VALUES (?, ?, ?, ?, ?)', [a.counter, a.orgId, a.kind, a.nowMs, Buffer.from(a.nonce)]);
      // Keep the newest rows, and any whose result is not yet queued (it must still be delivered).
      await this.db.run('DELETE FROM journal WHERE queued = 1 AND counter NOT IN (SELECT counter FROM journal ORDER BY counter DESC LIMIT ?)', [JOURNAL_KEEP]);
    });
  }

  /** The command's outcome and its signed result, in one write: from here on this is its only result. */
  async finish(counter: number, code: number, reason: string, nowMs: number, result: string): Promise<void> {
    await this.db.run('UPDATE journal SET finished_at_ms = ?, code = ?, reason = ?, result = ? WHERE counter = ? AND result IS NULL', [nowMs, code, reason, result, counter]);
  }

  /** The result is in the delivery queue. */
  async markQueued(counter: number): Promise<void> {
    await this.db.run('UPDATE journal SET queued = 1 WHERE counter = ?', [counter]);
  }

  /** Accepted commands whose result was decided but is not yet queued for delivery. */
  async unqueued(): Promise<JournalEntry[]> {
    return (await this.db.all<Row>(`SELECT ${COLS} FROM journal WHERE result IS NOT NULL AND queued = 0 ORDER BY counter`)).map(entry);
  }

  /** The nonce a journalled command was accepted with (journal rows from schema 1 have none). */
  async nonceOf(counter: number): Promise<Uint8Array | undefined> {
    const r = await this.db.get<{ nonce: Buffer | null }>('SELECT nonce FROM journal WHERE counter = ?', [counter]);
    return r?.nonce ? new Uint8Array(r.nonce) : undefined;
  }

  /** The journal entry of the command first accepted with this nonce, if still kept. */
  async byNonce(nonce: Uint8Array): Promise<JournalEntry | undefined> {
    const r = await this.db.get<Row>(`SELECT ${COLS} FROM journal WHERE nonce = ?`, [Buffer.from(nonce)]);
    return r ? entry(r) : undefined;
  }

  async journal(limit = 100): Promise<JournalEntry[]> {
    return (await this.db.all<Row>(`SELECT ${COLS} FROM journal ORDER BY counter DESC LIMIT ?`, [limit])).map(entry);
  }

  /** Every accepted command that has no result yet (interrupted, or running now). */
  async unfinished(): Promise<JournalEntry[]> {
    return (await this.db.all<Row>(`SELECT ${COLS} FROM journal WHERE result IS NULL AND finished_at_ms IS NULL ORDER BY counter`)).map(entry);
  }

  close(): Promise<void> {
    return this.db.close();
  }
}
