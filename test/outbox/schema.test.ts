/**
 * The outbox's row layout (schema 2: the record header the drain reads is
 * stored at accept time, issue 10 §5). A schema-1 file from an older agent is
 * converted at open without losing a punch or a number; the outbox numbers
 * rows itself, so a repeated event id must never leave a gap or reuse a seq.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodePunchRecords } from '../../src/link/punch-encoder.js';
import { Outbox } from '../../src/outbox/outbox.js';
import { pb, PunchMethod } from '../../src/proto/index.js';
import { Sqlite } from '../../src/store/sqlite.js';
import { UUIDV7_RE } from '../../src/util/uuidv7.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-schema-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** The schema-1 table, as agents before this change created it. */
const V1 = `
CREATE TABLE punches (
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
  mono_ms REAL,
  session TEXT
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta(key, value) VALUES ('bd_seq', 4), ('schema', 1);
CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, org_id TEXT NOT NULL, body TEXT NOT NULL);
`;

const id = (n: number) => `0190c3c4-0000-7000-8000-${String(n).padStart(12, '0')}`;

describe('outbox schema', () => {
  it('converts a schema-1 file at open: every queued punch kept field for field, numbering continues above the old high-water mark', async () => {
    const path = join(tmp(), 'outbox.db');
    const db = await Sqlite.open(path);
    await db.exec(V1);
    const ins = 'INSERT INTO punches (seq, event_id, org_id, subject_id, method, occurred_at_ms, clock_synced, match_score, liveness, accepted_at_ms) VALUES (?,?,?,?,?,?,?,?,?,?)';
    await db.run(ins, [1, id(1), 'org-a', 'subject-1', 3, 1_700_000_000_123, 1, 2, 1, 1_700_000_000_200]);
    await db.run(ins, [2, id(2), 'org-ü', '日本語', 1, 5, 0, 0, 0, 6]);
    await db.run(ins, [3, id(3), 'org-a', 'subject-3', 2, 2 ** 45, 1, 0, 3, 7]);
    // Rows 4 and 5 were handed out and delivered: the sequence is above the last row.
    await db.run(ins, [5, id(5), 'org-a', 'gone', 3, 1, 1, 0, 0, 1]);
    await db.run('DELETE FROM punches WHERE seq = 5');
    await db.close();

    const logged: string[] = [];
    const logger = { info: (_o: unknown, m: string) => logged.push(m), warn: () => {}, error: () => {}, debug: () => {} } as never;
    let o = await Outbox.open({ path, capacity: 100, logger });
    expect(logged.some((m) => m.includes('converted from schema 1 to schema 2 (3 queued punches kept)'))).toBe(true);
    expect(o.depth).toBe(3);
    const rows = await o.peek(0, 10);
    expect(
      rows.map(({ seq, eventId, orgId, subjectId, method, occurredAtMs, clockSynced, matchScore, liveness, acceptedAtMs }) => [seq, eventId, orgId, subjectId, method, occurredAtMs, clockSynced, matchScore, liveness, acceptedAtMs]),
    ).toEqual([
      [1, id(1), 'org-a', 'subject-1', 3, 1_700_000_000_123, true, 2, 1, 1_700_000_000_200],
      [2, id(2), 'org-ü', '日本語', 1, 5, false, 0, 0, 6],
      [3, id(3), 'org-a', 'subject-3', 2, 2 ** 45, true, 0, 3, 7],
    ]);
    // The drain's read of converted rows encodes the same punches.
    const recs = (await o.peekRecords(0, 10))!;
    const enc = encodePunchRecords(recs, 'dev-1', 1, 0);
    expect(pb.PunchEvent.decode(enc.buf.subarray(enc.ends[0], enc.ends[1])).subjectId).toBe('日本語');
    expect((await o.accept({ orgId: 'org-a', subjectId: 's', method: PunchMethod.PUNCH_METHOD_CARD })).seq).toBe(6);
    // Idempotency still finds converted rows.
    expect((await o.accept({ orgId: 'org-a', subjectId: 'subject-1', method: 3, eventId: id(1) })).seq).toBe(1);
    expect(await o.nextBdSeq()).toBe(5);
    await o.close();

    // Converted once: a second open finds schema 2 and changes nothing.
    logged.length = 0;
    o = await Outbox.open({ path, capacity: 100, logger });
    expect(logged).toEqual([]);
    expect((await o.peek(0, 10)).map((r) => r.seq)).toEqual([1, 2, 3, 6]);
    await o.close();
    const check = await Sqlite.open(path, { readonly: true });
    expect(await check.get("SELECT value FROM meta WHERE key = 'schema'")).toEqual({ value: 2 });
    // Converted rows keep their random ids findable: all are marked supplied (indexed).
    expect(await check.all('SELECT seq, supplied FROM punches ORDER BY seq')).toEqual([
      { seq: 1, supplied: 1 },
      { seq: 2, supplied: 1 },
      { seq: 3, supplied: 1 },
      { seq: 6, supplied: 0 },
    ]);
    expect((await check.all<{ name: string }>('PRAGMA table_info(punches)')).map((c) => c.name)).toEqual(['seq', 'event_id', 'org_id', 'subject_id', 'head', 'accepted_at_ms', 'supplied', 'mono_ms', 'session']);
    await check.close();
  });

  it('a repeated event id, queued or in the same group commit, is stored once and leaves no gap in the numbering', async () => {
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 100 });
    const p = (i: number, eventId?: string) => ({ orgId: 'org-a', subjectId: `s-${i}`, method: PunchMethod.PUNCH_METHOD_CARD, ...(eventId ? { eventId } : {}) });
    const first = await o.accept(p(1, id(1)));
    // One group commit: a retry of a queued punch, two copies of a new id, and punches without ids.
    const rows = await Promise.all([o.accept(p(2)), o.accept(p(1, id(1))), o.accept(p(3, id(3))), o.accept(p(4)), o.accept(p(3, id(3))), o.accept(p(5))]);
    expect(rows.map((r) => r.seq)).toEqual([2, first.seq, 3, 4, 3, 5]);
    expect(rows[1]).toMatchObject({ eventId: id(1), subjectId: 's-1' });
    expect(o.depth).toBe(5);
    expect((await o.accept(p(6))).seq).toBe(6);
    expect((await o.peek(0, 10)).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(o.lastSeq).toBe(6);
    await o.close();
  });

  it('ids made here carry their seq, so idempotency needs no index over every row: a retry with such an id is still found', async () => {
    const path = join(tmp(), 'o.db');
    const o = await Outbox.open({ path, capacity: 100 });
    const made = await Promise.all(Array.from({ length: 20 }, (_, i) => o.accept({ orgId: 'org-a', subjectId: `s-${i}`, method: 3 })));
    for (const r of made) expect(r.eventId).toMatch(UUIDV7_RE);
    expect(new Set(made.map((r) => r.eventId)).size).toBe(20);
    // A caller that learnt an id from a response and sends it again: the queued punch, no new row.
    const again = await o.accept({ orgId: 'org-a', subjectId: 's-7', method: 3, eventId: made[7]!.eventId });
    expect(again).toMatchObject({ seq: made[7]!.seq, subjectId: 's-7' });
    expect(o.depth).toBe(20);
    // Delivered and deleted: the id is new again (as before: only queued punches are de-duplicated), numbered next.
    o.ack(made[0]!.seq);
    await o.flushAcks();
    expect((await o.accept({ orgId: 'org-a', subjectId: 's-0', method: 3, eventId: made[0]!.eventId })).seq).toBe(21);
    await o.close();
    const db = await Sqlite.open(path, { readonly: true });
    // One partial index (supplied ids), none over every event id.
    const idx = await db.all<{ name: string; partial: number }>('PRAGMA index_list(punches)');
    expect(idx.map((i) => [i.name, i.partial])).toEqual([['punches_supplied_event', 1]]);
    expect(await db.all('SELECT seq FROM punches WHERE supplied = 1')).toEqual([{ seq: 21 }]);
    await db.close();
    // Another outbox (another salt) makes other ids for the same numbers.
    const other = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 100 });
    const first = await other.accept({ orgId: 'org-a', subjectId: 's', method: 3 });
    expect(first.seq).toBe(1);
    expect(first.eventId).not.toBe(made[0]!.eventId);
    await other.close();
  });
});
