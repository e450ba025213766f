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
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Sqlite } from '../store/sqlite.js';
import { TallyboxError, isTallyboxError } from '../util/errors.js';
import { uuidv7 } from '../util/uuidv7.js';
import type { PunchMethod, ScoreBucket } from '../proto/index.js';
import { SerialQueue } from './serial-queue.js';

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

export type OutboxAlarm = 'QUEUE_FULL' | 'DISK_FULL' | 'STORAGE_ERROR';

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
}

interface Pending {
  row: QueuedPunch;
  resolve: (p: QueuedPunch) => void;
  reject: (e: unknown) => void;
}

const COLS = 11; // columns bound per inserted row, see commit()
// SQLite allows 32766 bound variables per statement (3.32+); stay well below.
const ROWS_PER_STATEMENT = 1000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS punches (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL UNIQUE,
  org_id TEXT NOT NULL,
  subject_id TEXT NOT NULL,
  method INTEGER NOT NULL,
  occurred_at_ms INTEGER NOT NULL,
  clock_synced INTEGER NOT NULL,
  match_score INTEGER NOT NULL,
  liveness INTEGER NOT NULL,
  accepted_at_ms INTEGER NOT NULL,
  -- Only for punches stamped by an unsynchronised clock: the monotonic time of the
  -- punch in this process (session), so it can be re-stamped once the clock syncs.
  mono_ms REAL,
  session TEXT
);
CREATE INDEX IF NOT EXISTS punches_org ON punches(org_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('bd_seq', 0), ('schema', 1);
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
  private closed = false;
  private readonly committedListeners = new Set<() => void>();
  private readonly now: () => number;
  private readonly monotonic: () => number;
  /** This process's id for mono_ms: monotonic clocks mean nothing across restarts. */
  private readonly session = uuidv7();
  private readonly maxBatch: number;

  private constructor(
    private readonly db: Sqlite,
    private readonly opts: OutboxOptions,
    depth: number,
    lastSeq: number,
  ) {
    this.depthCount = depth;
    this.lastSeqValue = lastSeq;
    this.now = opts.now ?? Date.now;
    this.monotonic = opts.monotonic ?? (() => performance.now());
    this.maxBatch = Math.max(1, opts.maxBatch ?? 2000);
  }

  static async open(opts: OutboxOptions): Promise<Outbox> {
    if (!Number.isInteger(opts.capacity) || opts.capacity < 1) {
      throw new TallyboxError('CONFIG_INVALID', `outbox capacity must be a positive integer, got ${opts.capacity}`);
    }
    mkdirSync(dirname(opts.path), { recursive: true });
    const db = await Sqlite.open(opts.path);
    try {
      await db.exec(SCHEMA);
      const depth = (await db.get<{ n: number }>('SELECT count(*) AS n FROM punches'))?.n ?? 0;
      const seqRow = await db.get<{ seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'punches'");
      return new Outbox(db, opts, depth, seqRow?.seq ?? 0);
    } catch (err) {
      await db.close().catch(() => undefined);
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

  /**
   * Resolve once the punch is on disk; reject with QUEUE_FULL / DISK_FULL /
   * STORAGE_* when it was not accepted. Never silently drops.
   */
  accept(input: PunchInput): Promise<QueuedPunch> {
    if (this.closed) return Promise.reject(new TallyboxError('OUTBOX_CLOSED', 'outbox is closed; punch not accepted'));
    if (this.depthCount + this.committing + this.pending.length >= this.opts.capacity) {
      const detail = `outbox full (${this.depthCount}/${this.opts.capacity} queued): punch refused until the backlog drains`;
      this.raise('QUEUE_FULL', detail);
      return Promise.reject(new TallyboxError('QUEUE_FULL', detail, { depth: this.depthCount, capacity: this.opts.capacity }));
    }
    const now = this.now();
    const row: QueuedPunch = {
      seq: 0,
      eventId: input.eventId ?? uuidv7(now),
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
      this.pending.push({ row, resolve, reject });
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

  private async commit(batch: Pending[]): Promise<void> {
    let seqs: Map<string, number>;
    try {
      seqs = await this.db.transaction(async () => {
        const out = new Map<string, number>();
        for (let i = 0; i < batch.length; i += ROWS_PER_STATEMENT) {
          const chunk = batch.slice(i, i + ROWS_PER_STATEMENT);
          const params: (string | number | null)[] = [];
          for (const { row } of chunk) {
            // Monotonic time of the punch itself (it may have happened before it was accepted).
            const mono = row.clockSynced ? null : this.monotonic() - (row.acceptedAtMs - row.occurredAtMs);
            params.push(row.eventId, row.orgId, row.subjectId, row.method, row.occurredAtMs, row.clockSynced ? 1 : 0, row.matchScore, row.liveness, row.acceptedAtMs, mono, row.clockSynced ? null : this.session);
          }
          const values = chunk.map(() => `(${new Array(COLS).fill('?').join(',')})`).join(',');
          // ON CONFLICT DO NOTHING: a retried event id is accepted once (idempotency).
          const rows = await this.db.all<{ seq: number; event_id: string }>(
            `INSERT INTO punches (event_id, org_id, subject_id, method, occurred_at_ms, clock_synced, match_score, liveness, accepted_at_ms, mono_ms, session) VALUES ${values} ON CONFLICT(event_id) DO NOTHING RETURNING seq, event_id`,
            params,
          );
          for (const r of rows) out.set(r.event_id, r.seq);
        }
        return out;
      });
    } catch (err) {
      const code = isTallyboxError(err) ? err.code : 'STORAGE_ERROR';
      const alarm: OutboxAlarm = code === 'DISK_FULL' ? 'DISK_FULL' : 'STORAGE_ERROR';
      const detail = `${code}: punch not accepted (${batch.length} in this commit); will retry on the next punch`;
      this.raise(alarm, detail);
      const refusal = new TallyboxError(code === 'DISK_FULL' ? 'DISK_FULL' : code, detail, {}, { cause: err });
      for (const p of batch) p.reject(refusal);
      return;
    }
    this.clear('DISK_FULL');
    this.clear('STORAGE_ERROR');
    let inserted = 0;
    for (const p of batch) {
      const seq = seqs.get(p.row.eventId);
      if (seq !== undefined) {
        inserted++;
        p.row.seq = seq;
        if (seq > this.lastSeqValue) this.lastSeqValue = seq;
        p.resolve(p.row);
      } else {
        // Already queued under this event id (a retry): report the stored row.
        void this.findByEventId(p.row.eventId).then(
          (existing) => (existing ? p.resolve(existing) : p.reject(new TallyboxError('DUPLICATE_EVENT', `event ${p.row.eventId} was already delivered`))),
          p.reject,
        );
      }
    }
    this.depthCount += inserted;
    if (inserted > 0) for (const fn of this.committedListeners) fn();
  }

  /** Call `fn` after every commit that added rows (the drain wakes on it). */
  onCommitted(fn: () => void): () => void {
    this.committedListeners.add(fn);
    return () => this.committedListeners.delete(fn);
  }

  private findByEventId(eventId: string): Promise<QueuedPunch | undefined> {
    return this.q.run(async () => {
      const r = await this.db.get<DbRow>('SELECT * FROM punches WHERE event_id = ?', [eventId]);
      return r ? fromDb(r) : undefined;
    });
  }

  /** Oldest first, after `afterSeq`. */
  peek(afterSeq: number, limit: number): Promise<QueuedPunch[]> {
    return this.q.run(async () => {
      const rows = await this.db.all<DbRow>('SELECT * FROM punches WHERE seq > ? ORDER BY seq LIMIT ?', [afterSeq, limit]);
      return rows.map(fromDb);
    });
  }

  /**
   * The broker acknowledged these rows. Deletes are batched: a delete lost in a
   * crash only means the punch is sent again under the same event id, which the
   * cloud de-duplicates, so they need not cost an fsync each.
   */
  ack(seq: number): void {
    this.ackBuffer.push(seq);
    if (this.ackBuffer.length >= 2000) void this.flushAcks().catch(() => undefined);
    else this.ackTimer ??= setTimeout(() => void this.flushAcks().catch(() => undefined), 50);
  }

  flushAcks(): Promise<void> {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const seqs = this.ackBuffer;
    this.ackBuffer = [];
    if (seqs.length === 0) return Promise.resolve();
    return this.q
      .run(async () => {
        // synchronous=NORMAL for this transaction only: the deletes need no fsync of
        // their own (a lost delete means a re-send under the same event id), and the
        // next punch commit (FULL) syncs the WAL, deletes included.
        await this.db.exec('PRAGMA synchronous=NORMAL');
        let deleted = 0;
        try {
          deleted = await this.db.transaction(async () => {
            let n = 0;
            for (let i = 0; i < seqs.length; i += ROWS_PER_STATEMENT) {
              const chunk = seqs.slice(i, i + ROWS_PER_STATEMENT);
              n += (await this.db.run(`DELETE FROM punches WHERE seq IN (${chunk.map(() => '?').join(',')})`, chunk)).changes;
            }
            return n;
          });
        } finally {
          await this.db.exec('PRAGMA synchronous=FULL');
        }
        this.depthCount = Math.max(0, this.depthCount - deleted);
        if (this.depthCount < this.opts.capacity) this.clear('QUEUE_FULL');
      })
      .catch((err: unknown) => {
        // Not fatal: the rows stay and are re-sent (same event ids).
        this.ackBuffer.push(...seqs);
        throw err;
      });
  }

  /** Increment and persist the connection counter; returns the new value. */
  nextBdSeq(): Promise<number> {
    return this.q.run(async () => {
      const row = await this.db.get<{ value: number }>("UPDATE meta SET value = value + 1 WHERE key = 'bd_seq' RETURNING value");
      return row?.value ?? 0;
    });
  }

  /**
   * Queue a command result (JSON of its fields, signature included) durably:
   * it is published when the link is up and deleted on PUBACK, like a punch.
   */
  enqueueResult(orgId: string, body: string): Promise<number> {
    return this.q.run(async () => (await this.db.run('INSERT INTO results (org_id, body) VALUES (?, ?)', [orgId, body])).lastID);
  }

  pendingResults(limit = 100): Promise<{ id: number; orgId: string; body: string }[]> {
    return this.q.run(async () => {
      const rows = await this.db.all<{ id: number; org_id: string; body: string }>('SELECT id, org_id, body FROM results ORDER BY id LIMIT ?', [limit]);
      return rows.map((r) => ({ id: r.id, orgId: r.org_id, body: r.body }));
    });
  }

  deleteResult(id: number): Promise<void> {
    return this.q.run(async () => {
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
      const wall = this.now();
      const mono = this.monotonic();
      const r = await this.db.run('UPDATE punches SET occurred_at_ms = CAST(ROUND(? - (? - mono_ms)) AS INTEGER), clock_synced = 1, mono_ms = NULL WHERE clock_synced = 0 AND session = ? AND mono_ms IS NOT NULL', [wall, mono, this.session]);
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
      const r = await this.db.run('DELETE FROM punches WHERE org_id = ?', [orgId]);
      this.depthCount = Math.max(0, this.depthCount - r.changes);
      return r.changes;
    });
  }

  /** Shrink the files after an erasure so freed pages leave the WAL and the file. */
  compact(): Promise<void> {
    return this.q.run(async () => {
      await this.db.exec('PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);');
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.flushing || this.pending.length > 0) await new Promise((r) => setTimeout(r, 5));
    await this.flushAcks().catch(() => undefined);
    await this.q.run(() => this.db.close());
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

interface DbRow {
  seq: number;
  event_id: string;
  org_id: string;
  subject_id: string;
  method: number;
  occurred_at_ms: number;
  clock_synced: number;
  match_score: number;
  liveness: number;
  accepted_at_ms: number;
}

function fromDb(r: DbRow): QueuedPunch {
  return {
    seq: r.seq,
    eventId: r.event_id,
    orgId: r.org_id,
    subjectId: r.subject_id,
    method: r.method as PunchMethod,
    occurredAtMs: r.occurred_at_ms,
    clockSynced: r.clock_synced === 1,
    matchScore: r.match_score as ScoreBucket,
    liveness: r.liveness as ScoreBucket,
    acceptedAtMs: r.accepted_at_ms,
  };
}
