/**
 * Queued punches as the drain reads them: one buffer per batch, built by
 * SQLite (RECORDS_SQL), instead of one JavaScript object with ten properties
 * per row. node-sqlite3 builds every row object on the event loop, and for
 * the drain that cost more main-thread time per message (≈ 5-8 µs) than a
 * bare MQTT client spends publishing it (issue 10 §5). One blob per batch is
 * one allocation and one copy.
 *
 * Each record, big-endian, fixed header (stored as it is in the row's `head`
 * column) then the three strings' UTF-8 bytes:
 *   seq u64 | occurred_at_ms i64 | method i32 | match_score i32 | liveness i32
 *   | clock_synced u8 | len(event_id) u32 | len(org_id) u32 | len(subject_id) u32
 *   | event_id | org_id | subject_id
 * Only the fields a PunchEvent carries; the egress gate encodes them
 * (src/link/punch-encoder.ts). The layout is checked as it is parsed: a
 * buffer that does not frame exactly is refused, never half-read.
 */
import { TallyboxError } from '../util/errors.js';

export const RECORD_HEADER_BYTES = 41;
/** Offsets inside a record's header. */
export const REC = { seq: 0, occurredAtMs: 8, method: 16, matchScore: 20, liveness: 24, clockSynced: 28, eventIdLen: 29, orgIdLen: 33, subjectIdLen: 37 } as const;

/**
 * One aggregate row per batch: the records of the next `limit` rows after a
 * seq, oldest first. Each row keeps its record header ready-made (the `head`
 * column, written at accept time by writeRecordHeader), so a record is four
 * columns' bytes concatenated: no per-row printf/unhex of nine integers (that
 * was ≈ 1 µs of SQLite's CPU per row, more than half of the read). The
 * aggregate takes the rows in the subquery's order (seq); PunchRecords checks
 * that order as it frames, so a change in SQLite's behaviour would be refused,
 * not sent out of order.
 */
export const RECORDS_SQL = "SELECT count(*) AS n, CAST(group_concat(head || event_id || org_id || subject_id, '') AS BLOB) AS b FROM (" + 'SELECT head, event_id, org_id, subject_id FROM punches WHERE seq > ? ORDER BY seq LIMIT ?)';

/** The fields a record header holds (the strings' lengths are their UTF-8 byte counts). */
export interface RecordHeader {
  seq: number;
  occurredAtMs: number;
  method: number;
  matchScore: number;
  liveness: number;
  clockSynced: boolean;
  eventIdLen: number;
  orgIdLen: number;
  subjectIdLen: number;
}

const TWO32 = 2 ** 32;

function writeI64(out: Buffer, off: number, v: number): void {
  const hi = Math.floor(v / TWO32);
  out.writeInt32BE(hi | 0, off);
  out.writeUInt32BE((v - hi * TWO32) >>> 0, off + 4);
}

function readI64(b: Buffer, off: number): number {
  return b.readInt32BE(off) * TWO32 + b.readUInt32BE(off + 4);
}

/** Write a record header at `off` (RECORD_HEADER_BYTES bytes). Integers wrap as the layout's widths do. */
export function writeRecordHeader(out: Buffer, off: number, h: RecordHeader): void {
  writeI64(out, off + REC.seq, h.seq);
  writeI64(out, off + REC.occurredAtMs, Math.trunc(h.occurredAtMs));
  out.writeInt32BE(h.method | 0, off + REC.method);
  out.writeInt32BE(h.matchScore | 0, off + REC.matchScore);
  out.writeInt32BE(h.liveness | 0, off + REC.liveness);
  out[off + REC.clockSynced] = h.clockSynced ? 1 : 0;
  out.writeUInt32BE(h.eventIdLen, off + REC.eventIdLen);
  out.writeUInt32BE(h.orgIdLen, off + REC.orgIdLen);
  out.writeUInt32BE(h.subjectIdLen, off + REC.subjectIdLen);
}

/** Read a record header at `off`; a buffer too short for one is STORAGE_CORRUPT. */
export function readRecordHeader(b: Buffer, off = 0): RecordHeader {
  if (b.length < off + RECORD_HEADER_BYTES) throw new TallyboxError('STORAGE_CORRUPT', `STORAGE_CORRUPT: a queued punch's record header is ${b.length - off} bytes, not ${RECORD_HEADER_BYTES}`);
  return {
    seq: readI64(b, off + REC.seq),
    occurredAtMs: readI64(b, off + REC.occurredAtMs),
    method: b.readInt32BE(off + REC.method),
    matchScore: b.readInt32BE(off + REC.matchScore),
    liveness: b.readInt32BE(off + REC.liveness),
    clockSynced: b[off + REC.clockSynced] === 1,
    eventIdLen: b.readUInt32BE(off + REC.eventIdLen),
    orgIdLen: b.readUInt32BE(off + REC.orgIdLen),
    subjectIdLen: b.readUInt32BE(off + REC.subjectIdLen),
  };
}

/**
 * The record header of every row in a version-1 outbox (integer columns, no
 * `head`), built by SQLite when the table is converted at open (Outbox).
 * `& 4294967295` keeps every i32 field eight hex digits wide whatever the
 * column holds (a negative value wraps, and is read back signed).
 */
export const V1_HEAD_SQL =
  "CAST(unhex(printf('%016x%016x%08x%08x%08x%02x%08x%08x%08x', seq, occurred_at_ms, method & 4294967295, match_score & 4294967295, liveness & 4294967295, clock_synced != 0, " +
  'length(CAST(event_id AS BLOB)), length(CAST(org_id AS BLOB)), length(CAST(subject_id AS BLOB)))) AS BLOB)';

export interface RecordsRow {
  n: number;
  b: Buffer | null;
}

/** A batch of queued punches, framed. Record i starts at `starts[i]`; `seqs[i]` is its seq. */
export class PunchRecords {
  readonly count: number;
  readonly starts: Int32Array;
  readonly seqs: Float64Array;

  constructor(
    readonly buf: Buffer,
    expected: number,
  ) {
    const starts = new Int32Array(expected);
    const seqs = new Float64Array(expected);
    let off = 0;
    let i = 0;
    while (off < buf.length) {
      if (i >= expected || off + RECORD_HEADER_BYTES > buf.length) break;
      starts[i] = off;
      const seq = buf.readUInt32BE(off) * TWO32 + buf.readUInt32BE(off + 4);
      if (i > 0 && seq <= seqs[i - 1]!) throw new TallyboxError('STORAGE_CORRUPT', `STORAGE_CORRUPT: queued punches read back out of order (seq ${seq} after ${seqs[i - 1]})`);
      seqs[i] = seq;
      off += RECORD_HEADER_BYTES + buf.readUInt32BE(off + REC.eventIdLen) + buf.readUInt32BE(off + REC.orgIdLen) + buf.readUInt32BE(off + REC.subjectIdLen);
      i++;
    }
    if (i !== expected || off !== buf.length) {
      throw new TallyboxError('STORAGE_CORRUPT', `STORAGE_CORRUPT: queued punches read back malformed (${i} of ${expected} records framed, ${off} of ${buf.length} bytes)`);
    }
    this.count = expected;
    this.starts = starts;
    this.seqs = seqs;
  }

  /** From the aggregate row; undefined when no row was after the seq. */
  static fromRow(row: RecordsRow | undefined): PunchRecords | undefined {
    if (!row || row.n === 0 || !row.b) return undefined;
    return new PunchRecords(row.b, row.n);
  }

  get lastSeq(): number {
    return this.seqs[this.count - 1]!;
  }
}
