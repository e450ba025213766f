/**
 * PunchEvent encoding for the drain, straight from the outbox's records
 * (src/outbox/records.ts) into one buffer per batch: no object per message,
 * no protobufjs Writer per message. The bytes are exactly what
 * `pb.PunchEvent.encode` produces for the same fields (same field order, same
 * defaults left out; test/link/punch-encoder.test.ts compares them), and a
 * record outside the fast path (a negative or unsafe integer, non-ASCII
 * text) is encoded by protobufjs itself.
 *
 * Used only by the egress gate (src/link/egress.ts): what comes out is a
 * PunchEvent built field by field, whatever bytes the record holds.
 */
import { pb, type PunchMethod, type ScoreBucket } from '../proto/index.js';
import { REC, RECORD_HEADER_BYTES, type PunchRecords } from '../outbox/records.js';
import type { OutgoingPunch } from './egress.js';

export interface EncodedBatch {
  buf: Buffer;
  /** Payload i is buf[ends[i-1] (0 for i = 0) .. ends[i]). */
  ends: Int32Array;
  /** Record i's org id (the punch topic's organisation), one string per distinct org run. */
  orgs: string[];
}

const TWO32 = 2 ** 32;

function readI64(b: Buffer, off: number): number {
  return b.readInt32BE(off) * TWO32 + b.readUInt32BE(off + 4);
}

/** The fields of record i, as an object (the slow path, and tests). */
export function recordFields(recs: PunchRecords, i: number): OutgoingPunch {
  const b = recs.buf;
  const s = recs.starts[i]!;
  const ev = b.readUInt32BE(s + REC.eventIdLen);
  const org = b.readUInt32BE(s + REC.orgIdLen);
  const subj = b.readUInt32BE(s + REC.subjectIdLen);
  const p = s + RECORD_HEADER_BYTES;
  return {
    seq: recs.seqs[i]!,
    occurredAtMs: readI64(b, s + REC.occurredAtMs),
    method: b.readInt32BE(s + REC.method) as PunchMethod,
    matchScore: b.readInt32BE(s + REC.matchScore) as ScoreBucket,
    liveness: b.readInt32BE(s + REC.liveness) as ScoreBucket,
    clockSynced: b[s + REC.clockSynced] === 1,
    eventId: b.toString('utf8', p, p + ev),
    orgId: b.toString('utf8', p + ev, p + ev + org),
    subjectId: b.toString('utf8', p + ev + org, p + ev + org + subj),
  };
}

/** Varint of a non-negative safe integer; returns the new position. */
function varint(out: Buffer, pos: number, v: number): number {
  while (v >= 128) {
    out[pos++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  out[pos++] = v;
  return pos;
}

function bytes(out: Buffer, pos: number, src: Buffer, from: number, n: number): number {
  if (n > 48) return pos + src.copy(out, pos, from, from + n);
  for (let k = 0; k < n; k++) out[pos + k] = src[from + k]!;
  return pos + n;
}

/** All bytes below 0x80: the string's bytes are its UTF-8 as they stand, nothing to check. */
function ascii(src: Buffer, from: number, n: number): boolean {
  let bits = 0;
  for (let k = from; k < from + n; k++) bits |= src[k]!;
  return bits < 0x80;
}

function fast(v: number): boolean {
  return v >= 0 && v <= Number.MAX_SAFE_INTEGER;
}

/**
 * Encode every record of the batch; record i is historical when its seq is at
 * or below `historicalUpTo` (the connection's watermark).
 */
export function encodePunchRecords(recs: PunchRecords, deviceId: string, bdSeq: number, historicalUpTo: number): EncodedBatch {
  const b = recs.buf;
  const dev = Buffer.from(deviceId, 'utf8');
  // Per record at most: the strings, the device id, 12 tags and their lengths/varints (≤ 10 bytes each).
  const out = Buffer.allocUnsafe(b.length + recs.count * (dev.length + 140));
  const ends = new Int32Array(recs.count);
  const orgs: string[] = new Array(recs.count);
  let pos = 0;
  let orgFrom = -1;
  let orgLen = -1;
  let org = '';
  for (let i = 0; i < recs.count; i++) {
    const s = recs.starts[i]!;
    const seq = recs.seqs[i]!;
    const ev = b.readUInt32BE(s + REC.eventIdLen);
    const on = b.readUInt32BE(s + REC.orgIdLen);
    const sn = b.readUInt32BE(s + REC.subjectIdLen);
    const p = s + RECORD_HEADER_BYTES;
    // The topic's org: decoded once per run of records of the same org.
    if (on !== orgLen || b.compare(b, orgFrom, orgFrom + orgLen, p + ev, p + ev + on) !== 0) org = b.toString('utf8', p + ev, p + ev + on);
    orgFrom = p + ev;
    orgLen = on;
    orgs[i] = org;
    const occurred = readI64(b, s + REC.occurredAtMs);
    const method = b.readInt32BE(s + REC.method);
    const match = b.readInt32BE(s + REC.matchScore);
    const live = b.readInt32BE(s + REC.liveness);
    const historical = seq <= historicalUpTo;
    if (!fast(occurred) || !fast(seq) || !fast(bdSeq) || method < 0 || match < 0 || live < 0 || !ascii(b, p, ev + on + sn)) {
      // Outside the fast path: protobufjs writes it (negative int32s as ten bytes, and so on), and
      // non-ASCII text goes through a JS string as before, so bytes that are not valid UTF-8 leave
      // as U+FFFD (a strict decoder refuses a PunchEvent whose string is not UTF-8).
      const enc = pb.PunchEvent.encode({ ...recordFields(recs, i), deviceId, bdSeq, historical }).finish();
      out.set(enc, pos);
      pos += enc.length;
      ends[i] = pos;
      continue;
    }
    if (ev > 0) {
      out[pos++] = 10;
      pos = bytes(out, varint(out, pos, ev), b, p, ev);
    }
    if (on > 0) {
      out[pos++] = 18;
      pos = bytes(out, varint(out, pos, on), b, p + ev, on);
    }
    if (dev.length > 0) {
      out[pos++] = 26;
      pos = bytes(out, varint(out, pos, dev.length), dev, 0, dev.length);
    }
    if (sn > 0) {
      out[pos++] = 34;
      pos = bytes(out, varint(out, pos, sn), b, p + ev + on, sn);
    }
    if (method !== 0) {
      out[pos++] = 40;
      pos = varint(out, pos, method);
    }
    if (occurred !== 0) {
      out[pos++] = 48;
      pos = varint(out, pos, occurred);
    }
    if (b[s + REC.clockSynced] === 1) {
      out[pos++] = 56;
      out[pos++] = 1;
    }
    if (seq !== 0) {
      out[pos++] = 64;
      pos = varint(out, pos, seq);
    }
    if (bdSeq !== 0) {
      out[pos++] = 72;
      pos = varint(out, pos, bdSeq);
    }
    if (historical) {
      out[pos++] = 80;
      out[pos++] = 1;
    }
    if (match !== 0) {
      out[pos++] = 88;
      pos = varint(out, pos, match);
    }
    if (live !== 0) {
      out[pos++] = 96;
      pos = varint(out, pos, live);
    }
    ends[i] = pos;
  }
  return { buf: out, ends, orgs };
}
