/**
 * The durable punch queue. A punch is *accepted* only when its row is committed
 * (WAL + synchronous=FULL: on disk), and a row is deleted only after the
 * broker's PUBACK for it. The MQTT client's own store is never trusted.
 *
 * Group commit: `accept()` calls that arrive while a commit is in flight wait
 * and share the next commit, so N concurrent punches cost one fsync, not N.
 *
 * The row id is the per-device sequence number (AUTOINCREMENT: never reused,
 * even after deletes or a restart). `bd_seq` (the connection counter) lives in
 * the meta table and survives restarts too.
 *
 * Storage that never silently loses or reuses (issue 8 §4):
 *  - the file is checked (quick_check, read-only) before anything is written;
 *    a damaged file is refused with STORAGE_CORRUPT and left as it is;
 *  - the data directory is locked (src/store/lock.ts): one agent per directory;
 *  - the sequence mark (src/store/seq-mark.ts), outside this file, says which
 *    numbers were handed out, accepted and delivered. When the file holds less
 *    than the mark says was accepted (its tail or the whole file was lost),
 *    STORAGE_LOST is raised with the range, and numbering continues above
 *    every number ever handed out;
 *  - corruption met at run time fails the outbox: STORAGE_ERROR, the drain
 *    stops, punches are refused (they could not be stored);
 *  - a full disk: punches are refused with DISK_FULL, and the WAL is
 *    checkpointed and truncated (now and on a timer until a commit succeeds),
 *    so the space the queue's own WAL held comes back.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { DataDirLock } from '../store/lock.js';
import { SeqMark, type SeqMarkState } from '../store/seq-mark.js';
import { Sqlite, walBudgetBytes } from '../store/sqlite.js';
import { DiskSpaceCheck } from '../store/disk-space.js';
import { TallyboxError, errorMessage, isTallyboxError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { uuidv7 } from '../util/uuidv7.js';
import { MAX_ID_SEQ, eventIdFor, newIdSalt, seqOfEventId } from './event-ids.js';
import type { PunchMethod, ScoreBucket } from '../proto/index.js';
import { PunchRecords, RECORD_HEADER_BYTES, RECORDS_SQL, V1_HEAD_SQL, readRecordHeader, writeRecordHeader, type RecordsRow } from './records.js';
import { SerialQueue } from '../util/serial-queue.js';

/** What a device role hands in. */
export interface PunchInput {
  orgId: string;
  subjectId: string;
  method: PunchMethod;
  occurredAtMs?: number;
  clockSynced?: boolean;
  matchScore?: ScoreBucket;
  liveness?: ScoreBucket;
  /** Supplied by a caller that retries (idempotency); generated otherwise. */
  eventId?: string;
}

/** A committed punch, as stored. */
export interface QueuedPunch {
  seq: number;
  eventId: string;
  orgId: string;
  subjectId: string;
  method: PunchMethod;
  occurredAtMs: number;
  clockSynced: boolean;
  matchScore: ScoreBucket;
  liveness: ScoreBucket;
  /** When the row was committed (device clock), used to tell backlog from live traffic. */
  acceptedAtMs: number;
}

export type OutboxAlarm = 'QUEUE_FULL' | 'DISK_FULL' | 'STORAGE_ERROR' | 'STORAGE_LOST';

/** Sequence numbers the outbox lost (its tail or the whole file), found at open. */
export interface SeqLoss {
  /** First and last sequence number accepted and lost (inclusive). */
  from: number;
  to: number;
  /** Numbering continues after this (every number up to it may have been handed out). */
  skippedTo: number;
}

export interface OutboxOptions {
  path: string;
  /** Refuse new punches when this many are queued. */
  capacity: number;
  /** Largest group commit (rows per transaction). */
  maxBatch?: number;
  now?: () => number;
  /** Monotonic milliseconds (default performance.now()): re-stamping unsynced punches. */
  monotonic?: () => number;
  /** Called when an alarm is raised or cleared (for DeviceState and the log). */
  onAlarm?: (alarm: OutboxAlarm, active: boolean, detail: string) => void;
  /** Start-up findings (a rebuilt mark, a loss) and run-time storage failures. */
  logger?: Logger;
  /** Sequence numbers reserved per fsync of the sequence mark (default 16,384). */
  reserveBlock?: number;
  /** How often the free space is looked up (see src/store/disk-space.ts); the defaults suit a device. */
  diskCheck?: { intervalMs?: number; marginBytes?: number };
}

/** Error codes that mean the file cannot be trusted any more (not: full, busy, a constraint). */
const FATAL_CODES = new Set(['STORAGE_CORRUPT', 'STORAGE_IO']);

interface Pending {
  row: QueuedPunch;
  /** The caller supplied the event id (a retry may repeat it); generated ids are unique by construction. */
  supplied: boolean;
  resolve: (p: QueuedPunch) => void;
  reject: (e: unknown) => void;
}

const COLS = 9; // columns bound per inserted row, see commit()
// SQLite allows 32766 bound variables per statement (3.32+); stay well below.
const ROWS_PER_STATEMENT = 1000;

/**
 * Rows are inserted with their sequence number (the outbox numbers them: its
 * commits are serialised, and lastSeq starts above every number the file or the
 * mark ever used) because the record header the drain reads carries it. No
 * ON CONFLICT: repeated event ids are found before the insert (Outbox.splitRepeats),
 * so no number is skipped; the partial UNIQUE index over supplied ids is only
 * the safety net, and a conflict refuses the commit (STORAGE_CONSTRAINT)
 * rather than dropping a row.
 */
const INSERT_HEAD = 'INSERT INTO punches (seq, event_id, org_id, subject_id, head, accepted_at_ms, supplied, mono_ms, session) VALUES ';
const ROW_PLACEHOLDERS = `(${new Array(COLS).fill('?').join(',')})`;
const insertSql = (rows: number): string => INSERT_HEAD + new Array(rows).fill(ROW_PLACEHOLDERS).join(',');
const ROW_COLUMNS = 'seq, event_id, org_id, subject_id, head, accepted_at_ms';
const deleteInSql = (n: number): string => `DELETE FROM punches WHERE seq IN (${new Array(n).fill('?').join(',')})`;
const DELETE_RANGE_SQL = 'DELETE FROM punches WHERE seq BETWEEN ? AND ?';
/** The smallest delete transaction tried on a full disk (see Outbox.deleteRows). */
const MIN_DELETE_ROWS = 8;
/**
 * Statements of up to this many rows are kept prepared; larger ones are
 * prepared for one call. A prepared 1,000-row INSERT holds ≈ 1 MiB (measured),
 * and group commits come in every size: caching them would cost megabytes per
 * agent, while their preparation is shared by hundreds of rows anyway.
 */
const CACHED_ROWS = 16;
const cacheable = (rows: number): boolean => rows <= CACHED_ROWS;
const MIN_SEQ_SQL = 'SELECT min(seq) AS m FROM punches';

/**
 * Split `n` rows into statements of at most ROWS_PER_STATEMENT rows. Small
 * sizes are cached prepared statements (see CACHED_ROWS; node-sqlite3 would
 * parse the statement on every call otherwise); one punch, or a group commit
 * of up to 1,000, is one statement, which commits by itself (no BEGIN/COMMIT
 * round trips).
 */
export function statementSizes(n: number): number[] {
  const out: number[] = [];
  for (let left = n; left > 0; left -= ROWS_PER_STATEMENT) out.push(Math.min(left, ROWS_PER_STATEMENT));
  return out;
}

const PEEK_SQL = `SELECT ${ROW_COLUMNS} FROM punches WHERE seq > ? ORDER BY seq LIMIT ?`;

/**
 * Schema 2. The integer fields of a punch live in `head`, the record header the
 * drain reads (src/outbox/records.ts: seq, time, method, scores, clock flag and
 * the strings' byte lengths), written at accept time; the strings stay columns
 * of their own: org_id for an org withdrawal (DELETE … WHERE org_id), event_id
 * for idempotency, and neither is stored twice. No index over every event id:
 * ids made here carry their seq (src/outbox/event-ids.ts), so only ids a
 * caller supplied are indexed (`supplied` = 1, SUPPLIED_INDEX), and every
 * accept and every delete of the drain maintains one b-tree, not two. An older
 * file (schema 1: one integer column per field; or the interim layout with
 * `head` and a UNIQUE event_id) is converted when it is opened (migrate).
 */
const PUNCHES_TABLE = (name: string): string => `
CREATE TABLE IF NOT EXISTS ${name} (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL,
  org_id TEXT NOT NULL,
  subject_id TEXT NOT NULL,
  head BLOB NOT NULL,
  accepted_at_ms INTEGER NOT NULL,
  -- 1: the caller supplied event_id (a retry may repeat it; indexed). 0: made here from seq (unique by construction).
  supplied INTEGER NOT NULL DEFAULT 0,
  -- Only for punches stamped by an unsynchronised clock: the monotonic time of the
  -- punch in this process (session), so it can be re-stamped once the clock syncs.
  mono_ms REAL,
  session TEXT
);`;

/** Created once the table has its schema-2 columns (after migrate). */
const SUPPLIED_INDEX = 'CREATE UNIQUE INDEX IF NOT EXISTS punches_supplied_event ON punches(event_id) WHERE supplied = 1';

const SCHEMA = `${PUNCHES_TABLE('punches')}
-- No index on org_id: every insert and every delete would maintain it, for the sake of an
-- org withdrawal, which is rare and scans the queue in well under a second without it.
DROP INDEX IF EXISTS punches_org;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('bd_seq', 0), ('schema', 2);
-- Command results and erasure receipts waiting for delivery (a purge run while offline).
CREATE TABLE IF NOT EXISTS results (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  org_id TEXT NOT NULL,
  body TEXT NOT NULL
);
`;

export class Outbox {
  private readonly q = new SerialQueue();
  private pending: Pending[] = [];
  private flushing = false;
  /** Rows in the commit now running: not yet counted in depth, not in pending. */
  private committing = 0;
  private depthCount: number;
  private lastSeqValue: number;
  private readonly alarms = new Map<OutboxAlarm, string>();
  private ackBuffer: number[] = [];
  private ackTimer: NodeJS.Timeout | undefined;
  /** Back-off for re-trying a failed ack flush (0: the last one worked). */
  private ackRetryMs = 0;
  private closed = false;
  /** Set once the file failed at run time: everything is refused from then on. */
  private failure: TallyboxError | undefined;
  /** Highest reservation known to be on disk (fdatasync'd). */
  private durableReserved: number;
  private markTimer: NodeJS.Timeout | undefined;
  private diskFullTimer: NodeJS.Timeout | undefined;
  private reader: Promise<Sqlite> | undefined;
  private readerPaused = false;
  /** Reads running on the reader connection (closeReader waits for them). */
  private readonly readsInFlight = new Set<Promise<void>>();
  private readonly committedListeners = new Set<() => void>();
  private readonly now: () => number;
  private readonly monotonic: () => number;
  /** This process's id for mono_ms: monotonic clocks mean nothing across restarts. */
  private readonly session = uuidv7();
  private readonly maxBatch: number;

  private readonly block: number;
  /**
   * Free space kept on the data partition: the WAL's budget plus 64 KiB. A
   * punch that would eat into it is refused (DISK_FULL) while there is still
   * room for the WAL, the deletes that drain the queue, checkpoints and the
   * agent's small files — a queue must never fill the disk so far that it
   * cannot drain, or that the agent cannot start again.
   */
  private readonly reserveBytes: number;
  private readonly space: DiskSpaceCheck;
  /**
   * Most delivered rows deleted in one transaction. A delete's WAL frames must
   * fit in the space kept free (reserveBytes): one transaction deleting the
   * 6,000 rows a reconnect acknowledges at once needs ~800 KiB of WAL, which a
   * full 2 MiB partition does not have, and the queue could never drain. About
   * 8 rows per WAL-budget page keeps a transaction within half the budget
   * (≈30 rows share a table page, ≈60 an index page); an ordinary disk (4 MiB
   * budget) allows 8,192, more than a flush ever holds. On SQLITE_FULL it
   * halves (down to MIN_DELETE_ROWS) and the WAL is checkpointed before the
   * retry; each successful flush doubles it back.
   */
  private readonly deleteRowsMax: number;
  private deleteRows: number;
  /** A delete hit SQLITE_FULL: checkpoint after every delete transaction until deleteRows is back at its maximum. */
  private lowSpaceDeletes = false;
  /** DISK_FULL was raised because delivered rows could not be deleted (cleared by the next delete that commits). */
  private deletesBlocked = false;
  /**
   * The writer connection's synchronous mode as last set. Delete-only
   * transactions (delivered punches) run at NORMAL: a lost delete only means a
   * re-send under the same event id, and the next FULL commit syncs the WAL,
   * deletes included. Every other write runs at FULL. A flush switches back
   * to FULL before it ends, so a punch arriving later does not pay the switch.
   */
  private syncMode: 'FULL' | 'NORMAL' = 'FULL';
  private flushSyncLevel = 0;

  private constructor(
    private readonly db: Sqlite,
    private readonly opts: OutboxOptions,
    private readonly lock: DataDirLock,
    private readonly mark: SeqMark,
    depth: number,
    lastSeq: number,
    /** What start-up found lost, if anything (also raised as STORAGE_LOST). */
    readonly loss: SeqLoss | undefined,
    /** This file's salt for the event ids it makes (src/outbox/event-ids.ts). */
    private readonly idSalt: number,
  ) {
    this.depthCount = depth;
    this.lastSeqValue = lastSeq;
    this.now = opts.now ?? Date.now;
    this.monotonic = opts.monotonic ?? (() => performance.now());
    this.maxBatch = Math.max(1, opts.maxBatch ?? 2000);
    this.block = Math.max(1, opts.reserveBlock ?? 16_384);
    this.durableReserved = mark.state.reserved;
    const walBudget = walBudgetBytes(dirname(opts.path));
    this.reserveBytes = walBudget + 64 * 1024;
    this.deleteRowsMax = Math.max(64, Math.floor(walBudget / 4096) * 8);
    this.deleteRows = this.deleteRowsMax;
    this.space = new DiskSpaceCheck(dirname(opts.path), { monotonic: this.monotonic, ...opts.diskCheck });
    // "accepted" is pwritten after every commit; this puts it on disk within a second
    // (power cuts; a SIGKILL cannot lose it), without an fsync per commit.
    this.markTimer = setInterval(() => {
      if (this.mark.needsSync) void this.syncMark().catch((err: unknown) => this.fail(err, 'sequence mark sync'));
    }, 1000);
    this.markTimer.unref();
  }

  static async open(opts: OutboxOptions): Promise<Outbox> {
    if (!Number.isInteger(opts.capacity) || opts.capacity < 1) {
      throw new TallyboxError('CONFIG_INVALID', `outbox capacity must be a positive integer, got ${opts.capacity}`);
    }
    const dir = dirname(opts.path);
    mkdirSync(dir, { recursive: true });
    // 1. Integrity, read-only, before anything (lock file included) is created: a damaged
    //    outbox or sequence mark stays exactly as it is.
    const markPath = seqMarkPath(opts.path);
    SeqMark.read(markPath);
    const existing = await inspect(opts.path);
    // 2. One agent per data directory.
    const lock = await DataDirLock.acquire(dir);
    try {
      // Read again under the lock: this is the state from now on.
      const found = SeqMark.read(markPath);
      const db = await Sqlite.open(opts.path);
      try {
        await db.exec(SCHEMA);
        await migrate(db, opts.logger);
        await db.exec(SUPPLIED_INDEX);
        const idSalt = await readIdSalt(db);
        const depth = (await db.get<{ n: number }>('SELECT count(*) AS n FROM punches'))?.n ?? 0;
        const inFile = (await db.get<{ seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'punches'"))?.seq ?? 0;
        const bdSeq = (await db.get<{ value: number }>("SELECT value FROM meta WHERE key = 'bd_seq'"))?.value ?? 0;
        const minSeq = (await db.get<{ m: number | null }>('SELECT min(seq) AS m FROM punches'))?.m ?? null;
        const r = reconcile({ inFile, minSeq, bdSeq, found: found?.state, existing, file: basename(opts.path) });
        for (const w of r.warnings) opts.logger?.error({ event: 'outbox_seq_mark', detail: w }, w);
        for (const n of r.notes) opts.logger?.warn({ event: 'outbox_commit_unfinished', detail: n }, n);
        if (r.lastSeq > inFile) {
          // Numbering continues above every number the mark says may have been handed out.
          const u = await db.run("UPDATE sqlite_sequence SET seq = ? WHERE name = 'punches'", [r.lastSeq]);
          if (u.changes === 0) await db.run("INSERT INTO sqlite_sequence (name, seq) VALUES ('punches', ?)", [r.lastSeq]);
        }
        if (r.state.bdSeq > bdSeq) await db.run("UPDATE meta SET value = ? WHERE key = 'bd_seq'", [r.state.bdSeq]);
        const mark = await SeqMark.open(markPath, found, r.state);
        const o = new Outbox(db, opts, lock, mark, depth, r.lastSeq, r.loss, idSalt);
        if (r.state.lostTo > 0 && !r.state.lostReported) {
          const detail = lossDetail(r.state.lostFrom, r.state.lostTo, r.loss?.skippedTo);
          opts.logger?.error({ event: 'storage_lost', from: r.state.lostFrom, to: r.state.lostTo }, `ALARM STORAGE_LOST: ${detail}`);
          o.raise('STORAGE_LOST', detail);
        }
        return o;
      } catch (err) {
        await db.close().catch(() => undefined);
        throw err;
      }
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  get path(): string {
    return this.opts.path;
  }

  /** Punches committed and not yet acknowledged by the broker. */
  get depth(): number {
    return this.depthCount;
  }

  get capacity(): number {
    return this.opts.capacity;
  }

  /** The sequence number of the last accepted punch. */
  get lastSeq(): number {
    return this.lastSeqValue;
  }

  activeAlarms(): ReadonlyMap<OutboxAlarm, string> {
    return this.alarms;
  }

  /** Acknowledged rows not deleted yet. */
  get pendingAcks(): number {
    return this.ackBuffer.length;
  }

  /** The synchronous level the last delete flush ran its deletes at (2 FULL, 1 NORMAL; 0: none yet): for tests. */
  get lastFlushSynchronous(): number {
    return this.flushSyncLevel;
  }

  /** Set when the file failed at run time (corruption, I/O error): nothing more is stored or read. */
  get failed(): TallyboxError | undefined {
    return this.failure;
  }

  /** The sequence mark as it stands (for tests and doctor). */
  get seqMark(): Readonly<SeqMarkState> {
    return this.mark.state;
  }

  /**
   * Resolve once the punch is on disk; reject with QUEUE_FULL / DISK_FULL /
   * STORAGE_* when it was not accepted. Never silently drops.
   */
  accept(input: PunchInput): Promise<QueuedPunch> {
    if (this.closed) return Promise.reject(new TallyboxError('OUTBOX_CLOSED', 'outbox is closed; punch not accepted'));
    if (this.failure) return Promise.reject(this.failure);
    if (this.depthCount + this.committing + this.pending.length >= this.opts.capacity) {
      const detail = `outbox full (${this.depthCount}/${this.opts.capacity} queued): punch refused until the backlog drains`;
      this.raise('QUEUE_FULL', detail);
      return Promise.reject(new TallyboxError('QUEUE_FULL', detail, { depth: this.depthCount, capacity: this.opts.capacity }));
    }
    const now = this.now();
    const row: QueuedPunch = {
      seq: 0,
      // Made at commit time, from the row's seq (eventIdFor), unless the caller supplied one.
      eventId: input.eventId ?? '',
      orgId: input.orgId,
      subjectId: input.subjectId,
      method: input.method,
      occurredAtMs: input.occurredAtMs ?? now,
      clockSynced: input.clockSynced ?? true,
      matchScore: input.matchScore ?? 0,
      liveness: input.liveness ?? 0,
      acceptedAtMs: now,
    };
    return new Promise<QueuedPunch>((resolve, reject) => {
      this.pending.push({ row, supplied: input.eventId !== undefined, resolve, reject });
      if (!this.flushing) void this.flushLoop();
    });
  }

  private async flushLoop(): Promise<void> {
    this.flushing = true;
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, this.maxBatch);
        this.committing = batch.length;
        try {
          await this.q.run(() => this.commit(batch));
        } finally {
          this.committing = 0;
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /**
   * Make sure every number up to `need` is covered by a reservation on disk
   * before a commit can use it; raise the mark a block ahead, in the
   * background while half a block is left, so a commit rarely waits.
   */
  private async reserve(need: number): Promise<void> {
    const st = this.mark.state;
    if (need > st.reserved - this.block / 2) {
      void this.mark.update({ reserved: Math.max(st.reserved, need) + this.block, accepted: this.lastSeqValue }).catch(() => undefined); // its error reaches syncMark() below
      const p = this.syncMark();
      if (need > this.durableReserved) await p;
      else p.catch((err: unknown) => this.fail(err, 'sequence mark sync'));
    } else if (need > this.durableReserved) {
      await this.syncMark();
    }
  }

  /**
   * Undefined when this batch fits above the reserve; otherwise why not.
   * The free space comes from DiskSpaceCheck: a statfs at most once per
   * interval while there is plenty of room, every commit once it runs low.
   * Only when the partition is nearly full do the outbox's own free pages
   * (reused before the file grows) count.
   */
  private async spaceShortfall(rows: number): Promise<string | undefined> {
    const need = this.reserveBytes + rows * 256;
    const free = this.space.free(need, rows * 256);
    if (free === undefined || free >= need) return undefined; // undefined: statfs unsupported, SQLite's own SQLITE_FULL is the only signal left
    const pages = (await this.db.get<{ freelist_count: number }>('PRAGMA freelist_count').catch(() => undefined))?.freelist_count ?? 0;
    if (free + pages * 4096 >= need) return undefined;
    return `DISK_FULL: ${Math.floor(free / 1024)} KiB free on the data partition (plus ${pages * 4} KiB reusable in the outbox), ${Math.ceil(this.reserveBytes / 1024)} KiB are kept for the queue's WAL and deletes: punch not accepted until space returns or the queue drains`;
  }

  /** statfs calls so far (tests and the bench: the accept path must not make one per punch). */
  get spaceLookups(): number {
    return this.space.lookups;
  }

  /** SQLite's synchronous level on the writer connection right now (2 = FULL, 1 = NORMAL): for tests. */
  writerSynchronous(): Promise<number> {
    return this.q.run(async () => (await this.db.get<{ synchronous: number }>('PRAGMA synchronous'))?.synchronous ?? -1);
  }

  /** Switch the writer connection to `mode` if it is not there already (see syncMode). */
  private async setSync(mode: 'FULL' | 'NORMAL'): Promise<void> {
    if (this.syncMode === mode) return;
    await (await this.db.prepared(`PRAGMA synchronous=${mode}`)).run();
    this.syncMode = mode;
  }

  private async syncMark(): Promise<void> {
    const reserved = this.mark.state.reserved;
    await this.mark.sync();
    if (reserved > this.durableReserved) this.durableReserved = reserved;
  }

  private async commit(batch: Pending[]): Promise<void> {
    if (this.failure) {
      for (const p of batch) p.reject(this.failure);
      return;
    }
    const short = await this.spaceShortfall(batch.length);
    if (short) {
      this.raise('DISK_FULL', short);
      this.reclaimWal();
      const refusal = new TallyboxError('DISK_FULL', short, { reserveBytes: this.reserveBytes });
      for (const p of batch) p.reject(refusal);
      return;
    }
    try {
      await this.reserve(this.lastSeqValue + batch.length);
    } catch (err) {
      this.fail(err, 'sequence mark');
      for (const p of batch) p.reject(this.failure);
      return;
    }
    // Delivered punches waiting for their delete ride along in a group commit: it syncs anyway
    // (unless there are more than one delete transaction may hold: flushAcks splits those).
    // Not with a lone punch: that is someone at the door, and one INSERT is one thread-pool round
    // trip where BEGIN, INSERT, DELETE, COMMIT are four, each able to wait behind another fsync.
    // Its acks keep their timer (flushAcks, within 50 ms).
    const acks = batch.length > 1 && this.ackBuffer.length <= this.deleteRows ? this.takeAcks() : [];
    let deleted = 0;
    /** The rows this commit inserts, numbered from base + 1 in this order. */
    let fresh: Pending[] = batch;
    let repeats: Repeat[] = [];
    const base = this.lastSeqValue;
    /** The mark's record of this commit, written while the commit runs (SeqMark: accepted, committing). */
    let marked: Promise<void> | undefined;
    try {
      await this.setSync('FULL');
      if (batch.some((p) => p.supplied)) ({ fresh, repeats } = await this.splitRepeats(batch));
      // Alongside the commit, not after it: the commit's fsync hides the pwrite, and the punches
      // are reported only once both are done. Until its second write says the commit finished, a
      // start counts these numbers as possibly never committed (skipped, not lost).
      if (fresh.length > 0) {
        marked = this.mark.update({ accepted: base + fresh.length, committing: fresh.length });
        marked.catch(() => undefined); // awaited below once the commit is done (the failure path writes over it)
      }
      const sizes = statementSizes(fresh.length);
      // One statement is a transaction by itself: BEGIN and COMMIT would be two more thread-pool round trips.
      const atomic = sizes.length <= 1 && acks.length === 0 ? (fn: () => Promise<void>) => fn() : (fn: () => Promise<void>) => this.db.transaction(fn);
      await atomic(async () => {
        let i = 0;
        for (const size of sizes) {
          const params: (string | number | Buffer | null)[] = [];
          const heads = Buffer.allocUnsafe(size * RECORD_HEADER_BYTES);
          for (let k = i; k < i + size; k++) {
            const p = fresh[k]!;
            const row = p.row;
            const seq = base + 1 + k;
            // Beyond 48 bits an id cannot carry its seq: a random one, indexed like a supplied id.
            const indexed = p.supplied || seq > MAX_ID_SEQ;
            if (!p.supplied) row.eventId = seq > MAX_ID_SEQ ? uuidv7(row.acceptedAtMs) : eventIdFor(seq, row.acceptedAtMs, this.idSalt);
            // Monotonic time of the punch itself (it may have happened before it was accepted).
            const mono = row.clockSynced ? null : this.monotonic() - (row.acceptedAtMs - row.occurredAtMs);
            const at = (k - i) * RECORD_HEADER_BYTES;
            writeRecordHeader(heads, at, {
              seq,
              occurredAtMs: row.occurredAtMs,
              method: row.method,
              matchScore: row.matchScore,
              liveness: row.liveness,
              clockSynced: row.clockSynced,
              eventIdLen: Buffer.byteLength(row.eventId, 'utf8'),
              orgIdLen: Buffer.byteLength(row.orgId, 'utf8'),
              subjectIdLen: Buffer.byteLength(row.subjectId, 'utf8'),
            });
            params.push(seq, row.eventId, row.orgId, row.subjectId, heads.subarray(at, at + RECORD_HEADER_BYTES), row.acceptedAtMs, indexed ? 1 : 0, mono, row.clockSynced ? null : this.session);
          }
          i += size;
          const sql = insertSql(size);
          if (cacheable(size)) await (await this.db.prepared(sql)).run(params);
          else await this.db.run(sql, params);
        }
        if (acks.length > 0) deleted = await this.runDeletes(deletePlan(acks));
      });
    } catch (err) {
      // Not committed: the mark says so again (a start would skip these numbers anyway, never count them lost).
      if (marked) await this.mark.update({ accepted: base, committing: 0 }).catch((e: unknown) => this.fail(e, 'sequence mark write'));
      if (acks.length > 0) {
        // Not deleted: back into the buffer, for the next flush.
        this.ackBuffer.push(...acks);
        this.ackTimer ??= setTimeout(() => void this.flushAcks().catch(() => undefined), 50); // a failed flush keeps its rows and re-arms its own retry
      }
      const code = isTallyboxError(err) ? err.code : 'STORAGE_ERROR';
      if (FATAL_CODES.has(code)) {
        this.fail(err, 'punch commit');
        for (const p of batch) p.reject(this.failure);
        return;
      }
      const alarm: OutboxAlarm = code === 'DISK_FULL' ? 'DISK_FULL' : 'STORAGE_ERROR';
      const detail = `${code}: punch not accepted (${batch.length} in this commit); will retry on the next punch`;
      this.raise(alarm, detail);
      if (code === 'DISK_FULL') this.reclaimWal();
      const refusal = new TallyboxError(code === 'DISK_FULL' ? 'DISK_FULL' : code, detail, {}, { cause: err });
      for (const p of batch) p.reject(refusal);
      return;
    }
    this.clear('DISK_FULL');
    this.clear('STORAGE_ERROR');
    if (fresh.length > 0) {
      this.lastSeqValue = base + fresh.length;
      // Before anyone hears of these rows (producers, the drain): a SIGKILL from here on cannot hide them.
      try {
        await marked;
      } catch (err) {
        // The rows are committed; only the record outside the file is behind. Say so, keep them.
        this.fail(err, 'sequence mark write');
      }
      // The commit finished: not waited for. Until this write lands, a start finding exactly these
      // rows missing takes them for an unfinished commit; any loss reaching further back is still a loss.
      if (!this.failure) this.mark.update({ committing: 0 }).catch((err: unknown) => this.fail(err, 'sequence mark write'));
    }
    fresh.forEach((p, k) => {
      p.row.seq = base + 1 + k;
      p.resolve(p.row);
    });
    // Already queued under this event id (a retry): the stored row.
    for (const r of repeats) r.p.resolve(r.stored ?? { ...r.first!.row });
    this.depthCount += fresh.length;
    if (fresh.length > 0) for (const fn of this.committedListeners) fn();
    // After the producers heard: the deletes' bookkeeping (depth, the mark's "delivered") is not part of accepting.
    if (acks.length > 0) {
      try {
        await this.settleDeleted(deleted);
      } catch (err) {
        // The punches are committed and reported as accepted; the mark's "delivered" is merely behind.
        this.failIfFatal(err, 'reading the oldest queued punch');
      }
    }
  }

  /**
   * Idempotency: which punches of a batch repeat an event id already queued
   * (or one earlier in the same batch). Only caller-supplied ids are looked
   * up, twice: among supplied ids (their partial index), and as an id this
   * outbox made (the seq it would carry, by primary key). Ids made here are
   * unique by construction. Runs inside the commit's queue turn, so nothing
   * is inserted or deleted between this look-up and the insert.
   */
  private async splitRepeats(batch: Pending[]): Promise<{ fresh: Pending[]; repeats: Repeat[] }> {
    const ids = [...new Set(batch.filter((p) => p.supplied).map((p) => p.row.eventId))];
    const stored = new Map<string, QueuedPunch>();
    for (let i = 0; i < ids.length; i += ROWS_PER_STATEMENT) {
      const chunk = ids.slice(i, i + ROWS_PER_STATEMENT);
      const marks = chunk.map(() => '?').join(',');
      for (const r of await this.db.all<DbRow>(`SELECT ${ROW_COLUMNS} FROM punches WHERE supplied = 1 AND event_id IN (${marks})`, chunk)) stored.set(r.event_id, fromDb(r));
      const seqs = chunk.map((id) => seqOfEventId(id, this.idSalt)).filter((q): q is number => q !== undefined && q <= this.lastSeqValue);
      if (seqs.length === 0) continue;
      const wanted = new Set(chunk);
      for (const r of await this.db.all<DbRow>(`SELECT ${ROW_COLUMNS} FROM punches WHERE seq IN (${seqs.map(() => '?').join(',')})`, seqs)) if (wanted.has(r.event_id)) stored.set(r.event_id, fromDb(r));
    }
    const fresh: Pending[] = [];
    const repeats: Repeat[] = [];
    const firsts = new Map<string, Pending>();
    for (const p of batch) {
      const id = p.row.eventId;
      const s = p.supplied ? stored.get(id) : undefined;
      const first = p.supplied ? firsts.get(id) : undefined;
      if (s) repeats.push({ p, stored: s });
      else if (first) repeats.push({ p, first });
      else {
        if (p.supplied) firsts.set(id, p);
        fresh.push(p);
      }
    }
    return { fresh, repeats };
  }

  /** Call `fn` after every commit that added rows (the drain wakes on it). */
  onCommitted(fn: () => void): () => void {
    this.committedListeners.add(fn);
    return () => this.committedListeners.delete(fn);
  }

  /**
   * Oldest first, after `afterSeq`. Reads use their own read-only connection
   * (WAL: readers never wait for the writer), so the drain does not queue
   * behind group commits' fsyncs or delete transactions. Only committed rows
   * are seen, which is all the drain may send.
   */
  peek(afterSeq: number, limit: number): Promise<QueuedPunch[]> {
    if (this.failure) return Promise.reject(this.failure);
    const read = async (db: Sqlite): Promise<QueuedPunch[]> => {
      try {
        return (await db.all<DbRow>(PEEK_SQL, [afterSeq, limit])).map(fromDb);
      } catch (err) {
        throw this.failIfFatal(err, 'reading queued punches');
      }
    };
    if (this.readerPaused || this.closed) return this.q.run(() => read(this.db));
    return this.onReader(read);
  }

  /**
   * Like peek, as one framed buffer per batch (src/outbox/records.ts): what the
   * drain reads. Undefined when nothing is queued after `afterSeq`.
   */
  peekRecords(afterSeq: number, limit: number): Promise<PunchRecords | undefined> {
    if (this.failure) return Promise.reject(this.failure);
    const read = async (db: Sqlite): Promise<PunchRecords | undefined> => {
      try {
        return PunchRecords.fromRow(await (await db.prepared(RECORDS_SQL)).get<RecordsRow>([afterSeq, limit]));
      } catch (err) {
        throw this.failIfFatal(err, 'reading queued punches');
      }
    };
    if (this.readerPaused || this.closed) return this.q.run(() => read(this.db));
    return this.onReader(read);
  }

  private readerDb(): Promise<Sqlite> {
    this.reader ??= Sqlite.open(this.opts.path, { readonly: true }).then(async (r) => {
      try {
        await r.exec('PRAGMA cache_size=-512'); // sequential reads: a small cache is enough (resident memory)
      } catch (err) {
        await r.close().catch(() => undefined); // not handed out: nobody else would close it; the error below says what failed
        throw err;
      }
      return r;
    });
    this.reader.catch(() => {
      this.reader = undefined; // opened again on the next read; the error went to that read's caller
    });
    return this.reader;
  }

  /** Run a read on the reader connection, counted so that closing it waits for the read (see closeReader). */
  private onReader<T>(read: (db: Sqlite) => Promise<T>): Promise<T> {
    const p = this.readerDb().then(read);
    const settled = p.then(
      () => undefined,
      () => undefined, // the error went to the read's caller
    );
    this.readsInFlight.add(settled);
    void settled.then(() => this.readsInFlight.delete(settled));
    return p;
  }

  private async closeReader(): Promise<void> {
    const r = this.reader;
    this.reader = undefined;
    if (!r) return;
    // A statement still running makes sqlite3_close fail (SQLITE_BUSY), and the connection,
    // its descriptors and its locks would stay open for the life of the process: wait for it.
    await Promise.all([...this.readsInFlight]);
    const db = await r.catch(() => undefined); // it never opened: nothing to close (its error went to the read that asked for it)
    await db?.close().catch((err: unknown) => this.opts.logger?.warn({ event: 'outbox_reader_close_failed', err: errorMessage(err) }, `the outbox's read connection did not close: ${errorMessage(err)}`));
  }

  /**
   * The broker acknowledged these rows. Deletes are batched: a delete lost in a
   * crash only means the punch is sent again under the same event id, which the
   * cloud de-duplicates, so they need not cost an fsync each.
   */
  ack(seq: number): void {
    this.ackBuffer.push(seq);
    // flushAcks never rejects to here: a failed flush keeps its rows and re-arms its own timer.
    if (this.ackBuffer.length >= 2000 && this.ackRetryMs === 0) void this.flushAcks().catch(() => undefined);
    else this.ackTimer ??= setTimeout(() => void this.flushAcks().catch(() => undefined), 50);
  }

  /**
   * Delete the acknowledged rows. On failure the rows stay (they are re-sent
   * under the same event ids), the seqs go back into the buffer and the flush
   * is re-tried on a timer with back-off (50 ms … 5 s): it must not wait for
   * an ack that may never come (an idle queue). Rejects with the error.
   */
  flushAcks(): Promise<void> {
    const seqs = this.takeAcks();
    if (seqs.length === 0) return Promise.resolve();
    if (this.failure) {
      this.ackBuffer.push(...seqs);
      return Promise.reject(this.failure);
    }
    let left = seqs;
    return this.q
      .run(async () => {
        // synchronous=NORMAL: the deletes need no fsync of their own (see syncMode).
        await this.setSync('NORMAL');
        this.flushSyncLevel = 1;
        const sorted = seqs.length > this.deleteRows ? Float64Array.from(seqs).sort() : undefined;
        for (let i = 0; i < seqs.length; ) {
          const chunk = sorted ? Array.from(sorted.subarray(i, i + this.deleteRows)) : seqs;
          const plan = deletePlan(chunk);
          try {
            // A single statement commits by itself; more run in one transaction (one WAL commit).
            await this.settleDeleted(plan.length === 1 ? await this.runDeletes(plan) : await this.db.transaction(() => this.runDeletes(plan)));
          } catch (err) {
            if (!isTallyboxError(err, 'DISK_FULL') || this.deleteRows <= MIN_DELETE_ROWS) throw err;
            // No room for this transaction's WAL: smaller transactions, from the start of the WAL.
            this.deleteRows = Math.max(MIN_DELETE_ROWS, Math.floor(this.deleteRows / 2));
            this.lowSpaceDeletes = true;
            await this.db.get('PRAGMA wal_checkpoint(TRUNCATE)');
            continue;
          }
          i += chunk.length;
          left = sorted ? Array.from(sorted.subarray(i)) : [];
          // Short of space, the WAL must not grow across chunks up to the auto-checkpoint size:
          // a checkpoint after each lets the next chunk write from the start of the file again.
          if (this.lowSpaceDeletes) await this.db.get('PRAGMA wal_checkpoint(RESTART)');
        }
        // Back to FULL within this turn, not at the next punch: a punch that finds the writer
        // idle then commits in one round trip (its INSERT), not two.
        await this.setSync('FULL');
      })
      .then(
        () => {
          this.ackRetryMs = 0;
          this.deleteRows = Math.min(this.deleteRowsMax, this.deleteRows * 2);
          if (this.deleteRows === this.deleteRowsMax) this.lowSpaceDeletes = false;
          if (this.deletesBlocked) {
            this.deletesBlocked = false;
            this.clear('DISK_FULL');
          }
        },
        (err: unknown) => {
          // Not fatal by itself: the rows stay and are re-sent (same event ids).
          this.ackBuffer.push(...left);
          const e = this.failIfFatal(err, 'deleting delivered punches');
          if (!this.failure && !this.closed) {
            if (isTallyboxError(err, 'DISK_FULL')) {
              // Not even the smallest delete fits: say so (the queue cannot drain until space returns).
              this.deletesBlocked = true;
              this.raise('DISK_FULL', `DISK_FULL: ${left.length} delivered punches cannot be deleted (no room for the WAL on the data partition); the queue drains once space returns`);
            }
            this.ackRetryMs = Math.min(5000, Math.max(50, this.ackRetryMs * 2));
            this.opts.logger?.warn({ event: 'ack_flush_failed', err: errorMessage(err), retryMs: this.ackRetryMs, rows: this.ackBuffer.length }, `delivered punches not deleted yet (${errorMessage(err)}); retrying in ${this.ackRetryMs} ms`);
            this.ackTimer ??= setTimeout(() => void this.flushAcks().catch(() => undefined), this.ackRetryMs); // the retry re-arms itself; the error was logged above
          }
          throw e;
        },
      );
  }

  /** The acknowledged seqs not deleted yet, taken out of the buffer (the caller puts them back if its delete fails). */
  private takeAcks(): number[] {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const seqs = this.ackBuffer;
    this.ackBuffer = [];
    return seqs;
  }

  /** After a delete of delivered rows committed (inside the queue): depth, the QUEUE_FULL alarm, the mark's "delivered". */
  private async settleDeleted(deleted: number): Promise<void> {
    this.depthCount = Math.max(0, this.depthCount - deleted);
    if (this.depthCount < this.opts.capacity) this.clear('QUEUE_FULL');
    await this.markDelivered();
  }

  /** Run the statements of a deletePlan; returns how many rows went. */
  private async runDeletes(plan: DeleteStatement[]): Promise<number> {
    let n = 0;
    for (const d of plan) n += (d.params.length <= CACHED_ROWS ? await (await this.db.prepared(d.sql)).run(d.params) : await this.db.run(d.sql, d.params)).changes;
    return n;
  }

  /** After deletes: every number below the oldest row still queued is settled (delivered or erased). */
  private async markDelivered(): Promise<void> {
    // An empty queue (the usual case for a device punching now and then) needs no query: every number is settled.
    const m = this.depthCount === 0 ? null : ((await (await this.db.prepared(MIN_SEQ_SQL)).get<{ m: number | null }>())?.m ?? null);
    const delivered = m === null ? this.lastSeqValue : m - 1;
    const st = this.mark.state;
    // A delivery in this run means a birth carrying STORAGE_LOST went out first: the loss is reported.
    const reported = st.lostTo > 0 && !st.lostReported;
    // Not awaited: commits need not wait for this pwrite; a write error fails the outbox like any other.
    if (delivered > st.delivered || reported) this.mark.update({ delivered: Math.max(st.delivered, delivered), ...(reported ? { lostReported: true } : {}) }).catch((err: unknown) => this.fail(err, 'sequence mark write'));
  }

  /** Increment and persist the connection counter; returns the new value. */
  async nextBdSeq(): Promise<number> {
    const v = await this.q.run(async () => {
      await this.setSync('FULL');
      const row = await this.db.get<{ value: number }>("UPDATE meta SET value = max(value, ?) + 1 WHERE key = 'bd_seq' RETURNING value", [this.mark.state.bdSeq]);
      return row?.value ?? 0;
    });
    // Kept outside the file too: a lost outbox must not make the cloud see an old bd_seq again.
    // Synced outside the queue: punches arriving as the link connects do not wait for this fsync.
    if (v > this.mark.state.bdSeq) void this.mark.update({ bdSeq: v }).catch(() => undefined); // its error reaches syncMark()
    await this.syncMark();
    return v;
  }

  /**
   * Queue a command result (JSON of its fields, signature included) durably:
   * it is published when the link is up and deleted on PUBACK, like a punch.
   */
  enqueueResult(orgId: string, body: string): Promise<number> {
    return this.q.run(async () => {
      await this.setSync('FULL');
      return (await this.db.run('INSERT INTO results (org_id, body) VALUES (?, ?)', [orgId, body])).lastID;
    });
  }

  pendingResults(limit = 100): Promise<{ id: number; orgId: string; body: string }[]> {
    return this.q.run(async () => {
      const rows = await this.db.all<{ id: number; org_id: string; body: string }>('SELECT id, org_id, body FROM results ORDER BY id LIMIT ?', [limit]);
      return rows.map((r) => ({ id: r.id, orgId: r.org_id, body: r.body }));
    });
  }

  deleteResult(id: number): Promise<void> {
    return this.q.run(async () => {
      await this.setSync('FULL');
      await this.db.run('DELETE FROM results WHERE id = ?', [id]);
    });
  }

  /**
   * The clock has just synchronised: punches of this process that were stamped
   * by the unsynchronised clock get their time from the monotonic clock
   * (synced now − time elapsed since the punch) and count as synced.
   * Punches from before a restart keep clock_synced = false: their monotonic
   * time meant nothing after it. Returns how many were re-stamped.
   */
  restampUnsynced(): Promise<number> {
    return this.q.run(async () => {
      await this.setSync('FULL');
      const wall = this.now();
      const mono = this.monotonic();
      // The time and the clock flag live in the record header (records.ts: bytes 9-16 and 29).
      const r = await this.db.run(
        "UPDATE punches SET head = CAST(substr(head, 1, 8) || unhex(printf('%016x', CAST(ROUND(? - (? - mono_ms)) AS INTEGER))) || substr(head, 17, 12) || x'01' || substr(head, 30) AS BLOB), mono_ms = NULL " +
          'WHERE session = ? AND mono_ms IS NOT NULL',
        [wall, mono, this.session],
      );
      return r.changes;
    });
  }

  /** Queued punches of an organisation (verification after an erasure). */
  countOrg(orgId: string): Promise<number> {
    return this.q.run(async () => (await this.db.get<{ n: number }>('SELECT count(*) AS n FROM punches WHERE org_id = ?', [orgId]))?.n ?? 0);
  }

  /** Erase every queued punch of an organisation (org withdrawal). */
  deleteOrg(orgId: string): Promise<number> {
    return this.q.run(async () => {
      await this.setSync('FULL');
      const r = await this.db.run('DELETE FROM punches WHERE org_id = ?', [orgId]);
      this.depthCount = Math.max(0, this.depthCount - r.changes);
      return r.changes;
    });
  }

  /**
   * Shrink the files after an erasure so freed pages leave the WAL and the file.
   * The read connection is closed first (and reads go through the writer
   * meanwhile): a reader's snapshot would keep the truncating checkpoint from
   * emptying the WAL.
   */
  async compact(): Promise<void> {
    this.readerPaused = true;
    try {
      await this.closeReader();
      await this.q.run(async () => {
        await this.setSync('FULL');
        await this.db.exec('PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);');
      });
    } finally {
      this.readerPaused = false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.flushing || this.pending.length > 0) await new Promise((r) => setTimeout(r, 5));
    // Best effort: rows whose delete fails stay queued and are re-sent after the restart.
    await this.flushAcks().catch(() => undefined);
    if (this.markTimer) clearInterval(this.markTimer);
    if (this.diskFullTimer) clearTimeout(this.diskFullTimer);
    if (this.ackTimer) clearTimeout(this.ackTimer);
    try {
      await this.closeReader();
      await this.q.run(() => this.db.close());
      // Nothing is in flight any more: the reservation shrinks to what was used, so after a
      // clean stop numbering continues exactly where it was, even if the file is then lost.
      if (!this.failure) await this.mark.update({ reserved: this.lastSeqValue, accepted: this.lastSeqValue, committing: 0 });
      await this.mark.close();
    } finally {
      await this.lock.release();
    }
  }

  /**
   * The disk is full: give back the space the WAL holds (a checkpoint, then
   * truncate it to zero), and keep trying while DISK_FULL stands — a queue
   * that drains meanwhile must not stay stuck behind its own WAL.
   */
  private reclaimWal(): void {
    if (this.diskFullTimer || this.closed) return;
    const attempt = (delayMs: number): void => {
      this.diskFullTimer = setTimeout(() => {
        void this.q
          .run(() => this.db.get('PRAGMA wal_checkpoint(TRUNCATE)'))
          .catch((err: unknown) => this.opts.logger?.debug({ event: 'wal_checkpoint_failed', err: errorMessage(err) }, 'checkpoint on a full disk failed; retrying'))
          .finally(() => {
            this.diskFullTimer = undefined;
            if (this.alarms.has('DISK_FULL') && !this.closed && !this.failure) attempt(Math.min(5000, delayMs * 2));
          });
      }, delayMs);
      this.diskFullTimer.unref();
    };
    attempt(0);
  }

  /** An error from the file: if it means the file cannot be trusted, fail the outbox. Returns what callers should throw. */
  private failIfFatal(err: unknown, during: string): unknown {
    const code = isTallyboxError(err) ? err.code : '';
    if (FATAL_CODES.has(code)) {
      this.fail(err, during);
      return this.failure;
    }
    return err;
  }

  /**
   * The file failed (corrupt, I/O error) or the sequence mark could not be
   * written: stop storing and reading, refuse every punch (it could not be
   * stored safely), raise STORAGE_ERROR. A restart runs the integrity check.
   */
  private fail(err: unknown, during: string): void {
    if (this.failure) return;
    const cause = errorMessage(err);
    const detail = `${during} failed: ${cause}. Outbox stopped: queued punches are kept on disk but not sent, new punches are refused; check the storage and restart (the start-up integrity check then says what is wrong)`;
    this.failure = new TallyboxError('STORAGE_ERROR', detail, { during }, { cause: err });
    this.opts.logger?.error({ event: 'outbox_failed', during, err: cause }, `ALARM STORAGE_ERROR: ${detail}`);
    this.raise('STORAGE_ERROR', detail);
    for (const p of this.pending.splice(0)) p.reject(this.failure);
  }

  private raise(alarm: OutboxAlarm, detail: string): void {
    const was = this.alarms.has(alarm);
    this.alarms.set(alarm, detail);
    if (!was) this.opts.onAlarm?.(alarm, true, detail);
  }

  private clear(alarm: OutboxAlarm): void {
    if (this.alarms.delete(alarm)) this.opts.onAlarm?.(alarm, false, `${alarm} cleared`);
  }
}

/** A row as ROW_COLUMNS reads it. */
interface DbRow {
  seq: number;
  event_id: string;
  org_id: string;
  subject_id: string;
  head: Buffer;
  accepted_at_ms: number;
}

/** A punch of a commit whose event id is already queued: `stored` in the file, or `first` earlier in the same batch. */
interface Repeat {
  p: Pending;
  stored?: QueuedPunch;
  first?: Pending;
}

interface DeleteStatement {
  sql: string;
  params: number[];
}

/**
 * Delete by seq: consecutive runs (the usual case: PUBACKs come in order) as
 * one range each, the rest by IN lists. A range is cheaper for SQLite than
 * a thousand bound values.
 */
export function deletePlan(seqs: readonly number[]): DeleteStatement[] {
  const sorted = Float64Array.from(seqs).sort();
  const plan: DeleteStatement[] = [];
  const singles: number[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1]! <= sorted[j]! + 1) j++;
    const lo = sorted[i]!;
    const hi = sorted[j]!;
    if (hi - lo >= 8) plan.push({ sql: DELETE_RANGE_SQL, params: [lo, hi] });
    else for (let k = i; k <= j; k++) if (singles.at(-1) !== sorted[k]) singles.push(sorted[k]!);
    i = j + 1;
  }
  for (let i = 0; i < singles.length; i += ROWS_PER_STATEMENT) {
    const chunk = singles.slice(i, i + ROWS_PER_STATEMENT);
    plan.push({ sql: deleteInSql(chunk.length), params: chunk });
  }
  return plan;
}

function fromDb(r: DbRow): QueuedPunch {
  const h = readRecordHeader(r.head);
  return {
    seq: r.seq,
    eventId: r.event_id,
    orgId: r.org_id,
    subjectId: r.subject_id,
    method: h.method as PunchMethod,
    occurredAtMs: h.occurredAtMs,
    clockSynced: h.clockSynced,
    matchScore: h.matchScore as ScoreBucket,
    liveness: h.liveness as ScoreBucket,
    acceptedAtMs: r.accepted_at_ms,
  };
}

/**
 * An older outbox is converted in place, in one transaction: schema 1 (one
 * integer column per field, no `head`: the record headers are built by SQLite)
 * or the interim schema-2 layout (`head`, UNIQUE event_id, no `supplied`). The
 * rows are copied into a table of the current layout, every one marked
 * `supplied` (their ids were random, not made from their seq: they stay
 * findable through the partial index); the old table is dropped (its pages
 * are zeroed: secure_delete) and the new one takes its name. The
 * AUTOINCREMENT high-water mark is carried over explicitly: it can be above
 * the last row (delivered rows at the tail), and numbers below it must never
 * come back.
 */
async function migrate(db: Sqlite, logger: Logger | undefined): Promise<void> {
  const cols = new Set((await db.all<{ name: string }>('PRAGMA table_info(punches)')).map((c) => c.name));
  if (cols.has('supplied')) return;
  const from = cols.has('head') ? 'interim 2' : '1';
  let rows = 0;
  await db.transaction(async () => {
    const high = (await db.get<{ seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'punches'"))?.seq ?? 0;
    await db.exec(`DROP TABLE IF EXISTS punches_v2; ${PUNCHES_TABLE('punches_v2')}`);
    rows = (
      await db.run(
        `INSERT INTO punches_v2 (seq, event_id, org_id, subject_id, head, accepted_at_ms, supplied, mono_ms, session) SELECT seq, event_id, org_id, subject_id, ${cols.has('head') ? 'head' : V1_HEAD_SQL}, accepted_at_ms, 1, mono_ms, session FROM punches ORDER BY seq`,
      )
    ).changes;
    await db.exec('DROP TABLE punches; ALTER TABLE punches_v2 RENAME TO punches;');
    const u = await db.run("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'punches'", [high]);
    if (u.changes === 0 && high > 0) await db.run("INSERT INTO sqlite_sequence (name, seq) VALUES ('punches', ?)", [high]);
    await db.run("UPDATE meta SET value = 2 WHERE key = 'schema'");
  });
  logger?.info({ event: 'outbox_schema', from, to: 2, rows }, `outbox converted from schema ${from} to schema 2 (${rows} queued punches kept)`);
}

/** The salt of the event ids this file's punches carry: made once, with the file (or its first start on this version). */
async function readIdSalt(db: Sqlite): Promise<number> {
  await db.run("INSERT OR IGNORE INTO meta(key, value) VALUES ('id_salt', ?)", [newIdSalt()]);
  const v = (await db.get<{ value: number }>("SELECT value FROM meta WHERE key = 'id_salt'"))?.value;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > MAX_ID_SEQ)
    throw new TallyboxError('STORAGE_CORRUPT', `STORAGE_CORRUPT: the outbox's event id salt (meta id_salt) is ${String(v)}, not a 48-bit number; the file is left as it is`);
  return v;
}

/** outbox.db → outbox.seq, beside it. */
export function seqMarkPath(dbPath: string): string {
  return join(dirname(dbPath), `${basename(dbPath).replace(/\.db$/, '')}.seq`);
}

interface Existing {
  /** Size of the file; -1: absent (or not a regular file: opening it reports why). */
  bytes: number;
}

/**
 * Check an existing outbox file read-only (quick_check reads every page and
 * the WAL, writes nothing; a read-only connection never checkpoints): a
 * damaged file is refused with STORAGE_CORRUPT and left exactly as it is.
 */
async function inspect(path: string): Promise<Existing> {
  let bytes: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) return { bytes: -1 };
    bytes = st.size;
  } catch {
    // Absent (or unreadable: the read-write open below says why).
    return { bytes: -1 };
  }
  const hasWal = existsSync(`${path}-wal`);
  if (bytes === 0 && !hasWal) return { bytes };
  // No -wal: the file is all there is, and an immutable open creates nothing beside it.
  const ro = await Sqlite.open(path, hasWal ? { readonly: true } : { immutable: true });
  try {
    const verdict = await ro.quickCheck();
    if (verdict !== 'ok') {
      throw new TallyboxError(
        'STORAGE_CORRUPT',
        `${path} failed its integrity check (quick_check: ${verdict.slice(0, 300)}); the file is left as it is. ` +
          'Copy it for inspection, then move it aside to start a new outbox: the sequence mark keeps numbers from being reused and reports what was lost',
        { file: basename(path) },
      );
    }
  } finally {
    await ro.close().catch(() => undefined);
  }
  return { bytes };
}

interface Reconciled {
  state: SeqMarkState;
  /** The outbox's last sequence number from now on. */
  lastSeq: number;
  loss?: SeqLoss;
  /** Something went wrong in the files: said as an error. */
  warnings: string[];
  /** What a crash leaves in the normal way (a commit that never finished): said as a warning. */
  notes: string[];
}

/**
 * Compare the file with the mark. `inFile`: the highest number the file has
 * ever used (sqlite_sequence); `minSeq`: its oldest row.
 */
export function reconcile(o: { inFile: number; minSeq: number | null; bdSeq: number; found: SeqMarkState | undefined; existing: Existing; file: string }): Reconciled {
  const { inFile, minSeq, file } = o;
  const settledInFile = minSeq === null ? inFile : minSeq - 1;
  const warnings: string[] = [];
  const notes: string[] = [];
  const m = o.found;
  if (!m) {
    if (inFile > 0) warnings.push(`no sequence mark beside ${file} (first start of this version, or the mark was removed): rebuilt from the outbox (last seq ${inFile})`);
    return {
      state: { reserved: inFile, accepted: inFile, delivered: settledInFile, bdSeq: o.bdSeq, lostFrom: 0, lostTo: 0, lostReported: false, committing: 0 },
      lastSeq: inFile,
      warnings,
      notes,
    };
  }
  const bdSeq = Math.max(m.bdSeq, o.bdSeq);
  // The numbers of a commit that was in flight when the agent stopped: written into the mark
  // alongside the commit, so they may be missing from the file without having been accepted.
  const firm = m.accepted - m.committing;
  if (inFile < m.accepted && inFile >= firm) {
    // Only that commit is missing: it never finished, so nobody was told its punches were accepted
    // and the drain never saw them. Their numbers were never used: numbering goes on from the file,
    // as it would have without the mark (skipping them would be a gap the cloud takes for a loss).
    const delivered = Math.min(inFile, Math.max(m.delivered, settledInFile));
    notes.push(`the last commit before the agent stopped (seq ${inFile + 1}..${m.accepted}) did not finish: its punches were never reported accepted, nothing is lost; numbering continues at ${inFile + 1}`);
    return { state: { ...m, accepted: inFile, committing: 0, delivered, bdSeq }, lastSeq: inFile, warnings, notes };
  }
  if (inFile < m.accepted) {
    // The file lost its tail, or is not the file that accepted those punches.
    const skippedTo = Math.max(m.reserved, m.accepted);
    const from = Math.max(inFile, m.delivered) + 1;
    // A commit in flight at the stop is not counted: its punches may never have been accepted.
    const to = firm;
    const delivered = Math.min(inFile, Math.max(m.delivered, settledInFile));
    const what = o.existing.bytes <= 0 ? `${file} is ${o.existing.bytes === 0 ? 'empty (0 bytes)' : 'missing'}` : `${file} holds seqs up to ${inFile}`;
    if (from > to) {
      warnings.push(`${what} but the sequence mark says ${firm} were accepted; every missing one had been delivered, so nothing is lost. Numbering continues at ${skippedTo + 1}`);
      return { state: { ...m, reserved: skippedTo, accepted: skippedTo, committing: 0, delivered, bdSeq }, lastSeq: skippedTo, warnings, notes };
    }
    const prior = m.lostTo > 0 && !m.lostReported;
    const lostFrom = prior ? Math.min(m.lostFrom, from) : from;
    warnings.push(`${what} but the sequence mark says ${firm} were accepted (${m.delivered} delivered)`);
    return {
      state: { reserved: skippedTo, accepted: skippedTo, delivered, bdSeq, lostFrom, lostTo: Math.max(to, prior ? m.lostTo : 0), lostReported: false, committing: 0 },
      lastSeq: skippedTo,
      loss: { from, to, skippedTo },
      warnings,
      notes,
    };
  }
  if (inFile > m.reserved) warnings.push(`the sequence mark is behind ${file} (mark ${m.reserved}, outbox ${inFile}): restored from an older copy? Taken from the outbox`);
  return {
    state: { ...m, reserved: Math.max(m.reserved, inFile), accepted: inFile, committing: 0, delivered: Math.min(inFile, Math.max(m.delivered, settledInFile)), bdSeq },
    lastSeq: inFile,
    warnings,
    notes,
  };
}

function lossDetail(from: number, to: number, skippedTo: number | undefined): string {
  return `${to - from + 1} accepted punches lost from the outbox (seq ${from}..${to}): the file or its tail was lost or damaged` + (skippedTo !== undefined ? `; numbering continues at ${skippedTo + 1}, no number is reused` : '');
}
