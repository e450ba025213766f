/**
 * Queued punches as the drain reads them: one buffer per batch, built by
 * SQLite (RECORDS_SQL), instead of one JavaScript object with ten properties
 * per row. node-sqlite3 builds every row object on the event loop, and for
 * the drain that cost more main-thread time per message (≈ 5-8 µs) than a
 * bare MQTT client spends publishing it (issue 10 §5). One blob per batch is
 * one allocation and one copy.
 *
 * Each record, big-endian, fixed header then the three strings' UTF-8 bytes:
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
 * seq, oldest first (group_concat … ORDER BY seq), cast back to a blob so the
 * bytes come out as they went in. `& 4294967295` keeps every i32 field eight
 * hex digits wide whatever the column holds (a negative value wraps, and is
 * read back signed).
 */
export const RECORDS_SQL =
  "SELECT count(*) AS n, max(seq) AS last, CAST(group_concat(rec, '' ORDER BY seq) AS BLOB) AS b FROM (" +
  "SELECT seq, unhex(printf('%016x%016x%08x%08x%08x%02x%08x%08x%08x', seq, occurred_at_ms, method & 4294967295, match_score & 4294967295, liveness & 4294967295, clock_synced != 0, " +
  'length(CAST(event_id AS BLOB)), length(CAST(org_id AS BLOB)), length(CAST(subject_id AS BLOB)))) || CAST(event_id AS BLOB) || CAST(org_id AS BLOB) || CAST(subject_id AS BLOB) AS rec ' +
  'FROM punches WHERE seq > ? ORDER BY seq LIMIT ?)';

export interface RecordsRow {
  n: number;
  last: number | null;
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
      seqs[i] = buf.readUInt32BE(off) * 2 ** 32 + buf.readUInt32BE(off + 4);
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
