/**
 * A small promise layer over `sqlite3` (the driver named by the product brief).
 * One connection per database file; sqlite3 runs statements on libuv's thread
 * pool, so the event loop never blocks on disk.
 *
 * Durability settings are applied on open and are the same for every store:
 * WAL journal, synchronous=FULL (a commit is on disk when it resolves),
 * secure_delete=ON (freed pages are zeroed: privacy rule 4), foreign keys on.
 *
 * The WAL is bounded for the partition it lives on (see `walBudgetBytes`):
 * SQLite's default (checkpoint at 1,000 pages, never shrink the file) lets a
 * WAL reach 4 MiB and more, which fills a 2 MiB data partition by itself.
 */
import sqlite3 from 'sqlite3';
import { statfsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { TallyboxError } from '../util/errors.js';
import { preparePrivateDbFile } from '../util/private-fs.js';
import { releasePinned } from './pinned-read.js';

export type SqlParam = string | number | bigint | Buffer | Uint8Array | null;
export type SqlParams = readonly SqlParam[] | Record<string, SqlParam>;

export interface RunResult {
  lastID: number;
  changes: number;
}

export interface OpenOptions {
  /** Create the file if missing (default true). */
  create?: boolean;
  /** Milliseconds to wait on a locked database (default 5000). */
  busyTimeoutMs?: number;
  readonly?: boolean;
  /**
   * Read-only and immutable: SQLite creates no -wal or -shm file and takes no
   * lock. Only for a file with no -wal beside it (there is nothing else to read).
   */
  immutable?: boolean;
  /** WAL size to aim for (checkpoint interval and journal_size_limit); default: from the partition, see walBudgetBytes(). */
  walBudgetBytes?: number;
}

const PAGE = 4096;
const MIN_WAL = 64 * 1024;
const MAX_WAL = 4 * 1024 * 1024;

/**
 * WAL budget for a database in `dir`: 1/16 of the partition, between 64 KiB
 * and 4 MiB (SQLite's default). A 2 MiB partition gets 128 KiB: checkpoints
 * every 32 pages, and the WAL file is cut back to 128 KiB after each; an
 * ordinary disk keeps SQLite's defaults, so nothing changes there.
 */
export function walBudgetBytes(dir: string): number {
  try {
    const s = statfsSync(dir);
    const total = Number(s.blocks) * Number(s.bsize);
    return Math.max(MIN_WAL, Math.min(MAX_WAL, Math.floor(total / 16 / PAGE) * PAGE));
  } catch {
    // statfs unsupported here (or the directory is not there yet): SQLite's default size.
    return MAX_WAL;
  }
}

/** SQLITE_OPEN_NOFOLLOW (sqlite3.h; node-sqlite3 does not export it): SQLite refuses a database path that is a symlink. */
const SQLITE_OPEN_NOFOLLOW = 0x01000000;

const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');

/** Map sqlite3's errors to our codes so callers can branch on them. */
export function sqliteErrorCode(err: unknown): string {
  const code = (err as { code?: string } | null)?.code ?? '';
  if (code === 'SQLITE_FULL') return 'DISK_FULL';
  if (code === 'SQLITE_IOERR' || code.startsWith('SQLITE_IOERR')) return 'STORAGE_IO';
  if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') return 'STORAGE_CORRUPT';
  if (code === 'SQLITE_CANTOPEN' || code === 'SQLITE_PERM' || code === 'SQLITE_READONLY') return 'STORAGE_UNAVAILABLE';
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') return 'STORAGE_BUSY';
  if (code === 'SQLITE_CONSTRAINT') return 'STORAGE_CONSTRAINT';
  return 'STORAGE_ERROR';
}

function wrap(err: Error, sql: string, path: string): TallyboxError {
  const code = sqliteErrorCode(err);
  return new TallyboxError(code, `${code}: ${err.message} (database ${path})`, { sqliteCode: (err as { code?: string }).code, sql: sql.slice(0, 80) }, { cause: err });
}

/**
 * A statement prepared once and kept for the life of the connection
 * (`Sqlite.prepared`). node-sqlite3's `Database#run/get/all` prepare, step and
 * finalize a new statement on every call: for a statement run once per punch
 * that parsing is most of its cost. Every call runs the statement to its end
 * (`all`), so no cached statement is ever left mid-way holding a read
 * snapshot open (which would keep checkpoints from emptying the WAL).
 */
export class Prepared {
  private readonly writes: boolean;
  /** @internal */
  constructor(
    private readonly stmt: sqlite3.Statement,
    private readonly sql: string,
    private readonly path: string,
    /** The file's key for write listeners (its resolved path). */
    private readonly file: string,
  ) {
    this.writes = mayWrite(sql);
  }

  run(params: SqlParams = []): Promise<RunResult> {
    const { sql, path } = this;
    wrote(this.file);
    return new Promise<RunResult>((resolve, reject) => {
      this.stmt.run(params as unknown[], function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(wrap(err, sql, path));
        else resolve({ lastID: this.lastID, changes: this.changes });
      });
    });
  }

  all<T = Record<string, unknown>>(params: SqlParams = []): Promise<T[]> {
    if (this.writes) wrote(this.file);
    return new Promise((resolve, reject) => {
      this.stmt.all(params as unknown[], (err: Error | null, rows: T[]) => (err ? reject(wrap(err, this.sql, this.path)) : resolve(rows)));
    });
  }

  /** The first row (the statement still runs to its end: see the class comment). */
  async get<T = Record<string, unknown>>(params: SqlParams = []): Promise<T | undefined> {
    return (await this.all<T>(params))[0];
  }

  /** @internal */
  finalize(): Promise<void> {
    return new Promise((resolve) => this.stmt.finalize(() => resolve()));
  }
}

/**
 * Who wants to hear that a database file is about to change (Sqlite.onWrite), per path: a cache
 * of rows (the vault's credentials) is dropped before any statement that may write runs, on any
 * connection of this process to the file.
 */
const writeListeners = new Map<string, Set<() => void>>();

/** Anything but a SELECT may write (a PRAGMA, a CTE ahead of an UPDATE): counted as a write, to be safe. */
function mayWrite(sql: string): boolean {
  return !/^\s*SELECT\b/i.test(sql);
}

/** `file`: the resolved path. */
function wrote(file: string): void {
  const fns = writeListeners.get(file);
  if (fns) for (const fn of fns) fn();
}

/** Connections this process has open per database path (see close()). */
const openConnections = new Map<string, number>();

/** Cached statements per connection; the least recently used is finalized beyond this. */
const STATEMENT_CACHE = 64;

export class Sqlite {
  /** prepared() calls still preparing (close() waits for them). */
  private readonly preparing = new Set<Promise<void>>();
  /** Insertion order is use order (a hit moves its entry to the end): the first entry is the least recently used. */
  private readonly statements = new Map<string, Prepared>();

  /** The file's key for write listeners: its resolved path, computed once (a write runs on every punch). */
  private readonly file: string;

  private constructor(
    readonly path: string,
    private readonly db: sqlite3.Database,
  ) {
    this.file = resolve(path);
  }

  /**
   * The cached prepared statement for `sql` (prepared on first use). Values
   * are bound, never spliced into the text. At most STATEMENT_CACHE texts are
   * kept; the least recently used one is finalized to make room (node-sqlite3
   * runs a finalize after the calls already queued on that statement), so use
   * the statement right away, as in `(await db.prepared(sql)).run(params)`.
   */
  async prepared(sql: string): Promise<Prepared> {
    const hit = this.statements.get(sql);
    if (hit) {
      this.statements.delete(sql);
      this.statements.set(sql, hit);
      return hit;
    }
    // Counted until it is in the cache: close() waits for it, or the statement would land in the
    // cache after close() emptied it and sqlite3_close would fail (SQLITE_BUSY), leaving the
    // connection and its descriptors open for the life of the process.
    const p = this.prepareUncached(sql);
    const settled = p.then(
      () => undefined,
      () => undefined, // the error went to the caller
    );
    this.preparing.add(settled);
    void settled.then(() => this.preparing.delete(settled));
    return p;
  }

  private async prepareUncached(sql: string): Promise<Prepared> {
    const stmt = await new Promise<sqlite3.Statement>((resolve, reject) => {
      const st: sqlite3.Statement = this.db.prepare(sql, (err: Error | null) => (err ? reject(wrap(err, sql, this.path)) : resolve(st)));
    });
    // Two callers may have prepared the same text at once: keep the first, drop the other.
    const raced = this.statements.get(sql);
    if (raced) {
      stmt.finalize();
      return raced;
    }
    const p = new Prepared(stmt, sql, this.path, this.file);
    this.statements.set(sql, p);
    if (this.statements.size > STATEMENT_CACHE) {
      const [oldest, old] = this.statements.entries().next().value as [string, Prepared];
      this.statements.delete(oldest);
      void old.finalize();
    }
    return p;
  }

  /**
   * Open (and by default create) a database with Tallybox's durability pragmas.
   * An existing file that is not a SQLite database, or cannot be read, is a
   * STORAGE_CORRUPT / STORAGE_UNAVAILABLE error and the file is left untouched.
   */
  static async open(path: string, opts: OpenOptions = {}): Promise<Sqlite> {
    // Never through a symlink, and 0600 before SQLite creates anything (its -wal/-shm copy the file's mode).
    if (!opts.readonly && !opts.immutable) preparePrivateDbFile(path, { create: opts.create !== false });
    const mode = SQLITE_OPEN_NOFOLLOW | (opts.immutable ? sqlite3.OPEN_READONLY | sqlite3.OPEN_URI : opts.readonly ? sqlite3.OPEN_READONLY : sqlite3.OPEN_READWRITE | (opts.create === false ? 0 : sqlite3.OPEN_CREATE));
    const name = opts.immutable ? `file:${encodeURI(path).replace(/[?#]/g, encodeURIComponent)}?immutable=1` : path;
    const db = await new Promise<sqlite3.Database>((resolve, reject) => {
      const d: sqlite3.Database = new sqlite3.Database(name, mode, (err) => (err ? reject(wrap(err, 'open', path)) : resolve(d)));
    });
    const s = new Sqlite(path, db);
    openConnections.set(path, (openConnections.get(path) ?? 0) + 1);
    db.configure('busyTimeout', opts.busyTimeoutMs ?? 5000);
    try {
      // Reading the schema forces SQLite to read the header: a non-database file fails here.
      await s.get('PRAGMA schema_version');
      if (!opts.readonly && !opts.immutable) {
        await s.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON; PRAGMA foreign_keys=ON;');
        const wal = opts.walBudgetBytes ?? walBudgetBytes(dirname(path));
        await s.exec(`PRAGMA journal_size_limit=${wal}; PRAGMA wal_autocheckpoint=${Math.max(16, Math.floor(wal / PAGE))};`);
      }
    } catch (err) {
      await s.close().catch(() => undefined);
      throw err;
    }
    return s;
  }

  /**
   * PRAGMA quick_check: 'ok', or what SQLite found (first lines). Reads every
   * page of the file (and the WAL), writes nothing.
   */
  async quickCheck(maxErrors = 10): Promise<string> {
    const rows = await this.all<{ quick_check: string }>(`PRAGMA quick_check(${maxErrors})`);
    return rows.map((r) => r.quick_check).join('; ');
  }

  /** True when the first 16 bytes are SQLite's magic (or the buffer is empty: a new file). */
  static looksLikeSqlite(head: Buffer): boolean {
    return head.length === 0 || head.subarray(0, 16).equals(SQLITE_HEADER);
  }

  /**
   * Call `fn` before any statement that may write this file runs, on any connection of this
   * process (reads do not call it). Returns the function that stops it.
   */
  onWrite(fn: () => void): () => void {
    const key = this.file;
    let fns = writeListeners.get(key);
    if (!fns) writeListeners.set(key, (fns = new Set()));
    fns.add(fn);
    return () => {
      fns.delete(fn);
      if (fns.size === 0 && writeListeners.get(key) === fns) writeListeners.delete(key);
    };
  }

  run(sql: string, params: SqlParams = []): Promise<RunResult> {
    const path = this.path;
    wrote(this.file);
    return new Promise<RunResult>((resolve, reject) => {
      this.db.run(sql, params as unknown[], function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(wrap(err, sql, path));
        else resolve({ lastID: this.lastID, changes: this.changes });
      });
    });
  }

  get<T = Record<string, unknown>>(sql: string, params: SqlParams = []): Promise<T | undefined> {
    if (mayWrite(sql)) wrote(this.file);
    return new Promise((resolve, reject) => {
      this.db.get(sql, params as unknown[], (err: Error | null, row: T | undefined) => (err ? reject(wrap(err, sql, this.path)) : resolve(row)));
    });
  }

  all<T = Record<string, unknown>>(sql: string, params: SqlParams = []): Promise<T[]> {
    if (mayWrite(sql)) wrote(this.file);
    return new Promise((resolve, reject) => {
      this.db.all(sql, params as unknown[], (err: Error | null, rows: T[]) => (err ? reject(wrap(err, sql, this.path)) : resolve(rows)));
    });
  }

  exec(sql: string): Promise<void> {
    wrote(this.file);
    return new Promise((resolve, reject) => {
      this.db.exec(sql, (err: Error | null) => (err ? reject(wrap(err, sql, this.path)) : resolve()));
    });
  }

  /**
   * Run `fn` inside BEGIN IMMEDIATE … COMMIT; roll back on any error.
   * sqlite3 queues statements per connection in order, so callers must not
   * interleave other writes on this connection while a transaction is open
   * (each store owns its connection and serialises its own writes).
   */
  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    // Through exec, not cached statements: node-sqlite3 runs an exec only once every statement
    // already handed to it has finished (stores that fire a write without awaiting it rely on that).
    // The outbox's hot path avoids transactions instead (a single statement commits by itself).
    await this.exec('BEGIN IMMEDIATE');
    try {
      const out = await fn();
      await this.exec('COMMIT');
      return out;
    } catch (err) {
      await this.exec('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  async close(): Promise<void> {
    // sqlite3_close refuses a connection with statements still prepared: those being prepared too.
    await Promise.all([...this.preparing]);
    const stmts = [...this.statements.values()];
    this.statements.clear();
    await Promise.all(stmts.map((p) => p.finalize()));
    await new Promise<void>((resolve, reject) => this.db.close((err) => (err ? reject(wrap(err, 'close', this.path)) : resolve())));
    // With the last connection of this process on the file its locks are gone: the scan's
    // descriptors on its files may close now (pinned-read.ts). Not before: closing them
    // would drop the locks of the connections still open.
    const left = (openConnections.get(this.path) ?? 1) - 1;
    if (left > 0) openConnections.set(this.path, left);
    else {
      openConnections.delete(this.path);
      releasePinned(this.path);
    }
  }
}
