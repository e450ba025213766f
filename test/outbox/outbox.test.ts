import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Outbox, deletePlan, statementSizes } from '../../src/outbox/outbox.js';
import { Sqlite } from '../../src/store/sqlite.js';
import { PunchMethod } from '../../src/proto/index.js';
import { UUIDV7_RE } from '../../src/util/uuidv7.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-outbox-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const punch = (i: number) => ({ orgId: 'org-a', subjectId: `s-${i}`, method: PunchMethod.PUNCH_METHOD_CARD });

describe('Outbox', () => {
  it('accepts concurrent punches in shared commits, with increasing sequence numbers and UUIDv7 ids', async () => {
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 10_000 });
    const rows = await Promise.all(Array.from({ length: 2500 }, (_, i) => o.accept(punch(i))));
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 2500 }, (_, i) => i + 1));
    expect(new Set(rows.map((r) => r.eventId)).size).toBe(2500);
    for (const r of rows.slice(0, 10)) expect(r.eventId).toMatch(UUIDV7_RE);
    expect(o.depth).toBe(2500);
    await o.close();
  });

  it('keeps sequence numbers and bd_seq across a reopen, and never reuses a sequence number after deletes', async () => {
    const path = join(tmp(), 'o.db');
    let o = await Outbox.open({ path, capacity: 100 });
    expect(await o.nextBdSeq()).toBe(1);
    const a = await o.accept(punch(1));
    const b = await o.accept(punch(2));
    o.ack(a.seq);
    o.ack(b.seq);
    await o.flushAcks();
    expect(o.depth).toBe(0);
    await o.close();
    o = await Outbox.open({ path, capacity: 100 });
    expect(await o.nextBdSeq()).toBe(2);
    expect((await o.accept(punch(3))).seq).toBe(3);
    expect(o.lastSeq).toBe(3);
    expect(o.depth).toBe(1);
    await o.close();
  });

  it('is idempotent on event id: a retried punch is stored once', async () => {
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 100 });
    const first = await o.accept({ ...punch(1), eventId: '0190c3c4-0000-7000-8000-000000000001' });
    const again = await o.accept({ ...punch(1), eventId: '0190c3c4-0000-7000-8000-000000000001' });
    expect(again.seq).toBe(first.seq);
    expect(o.depth).toBe(1);
    await o.close();
  });

  it('refuses punches at the cap with QUEUE_FULL and an alarm, and recovers when drained', async () => {
    const alarms: string[] = [];
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 5, onAlarm: (a, on) => alarms.push(`${a}:${on}`) });
    const accepted = await Promise.all(Array.from({ length: 5 }, (_, i) => o.accept(punch(i))));
    await expect(o.accept(punch(6))).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    expect(o.activeAlarms().has('QUEUE_FULL')).toBe(true);
    expect(o.depth).toBe(5);
    for (const r of await o.peek(0, 2)) o.ack(r.seq);
    await o.flushAcks();
    expect(o.activeAlarms().has('QUEUE_FULL')).toBe(false);
    await expect(o.accept(punch(7))).resolves.toMatchObject({ seq: 6 });
    expect(alarms).toEqual(['QUEUE_FULL:true', 'QUEUE_FULL:false']);
    expect(accepted).toHaveLength(5);
    await o.close();
  });

  it('counts punches of a commit in flight against the cap (no overshoot under concurrency)', async () => {
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 50 });
    const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => o.accept(punch(i))));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(50);
    expect(o.depth).toBe(50);
    await o.close();
  });

  it("peeks oldest first and deletes an organisation's queued punches on request", async () => {
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 100 });
    await o.accept(punch(1));
    await o.accept({ ...punch(2), orgId: 'org-b' });
    await o.accept(punch(3));
    expect((await o.peek(0, 10)).map((r) => r.seq)).toEqual([1, 2, 3]);
    expect((await o.peek(1, 1)).map((r) => r.orgId)).toEqual(['org-b']);
    expect(await o.deleteOrg('org-a')).toBe(2);
    expect(o.depth).toBe(1);
    await o.close();
  });

  it('re-stamps punches taken with an unsynchronised clock from the monotonic clock once it syncs', async () => {
    let wall = 86_400_000; // the device booted believing it is 2 January 1970
    let mono = 1_000;
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 100, now: () => wall, monotonic: () => mono });
    const a = await o.accept({ ...punch(1), clockSynced: false });
    mono += 5_000;
    wall += 5_000;
    const b = await o.accept({ ...punch(2), clockSynced: false, occurredAtMs: wall - 1_000 }); // captured 1 s before acceptance
    const c = await o.accept({ ...punch(3), clockSynced: true, occurredAtMs: 123 });
    // NTP: the real time is 2026-11-29T06:00:00Z, 2 s after the last punch.
    mono += 2_000;
    wall = Date.UTC(2026, 10, 29, 6, 0, 0);
    expect(await o.restampUnsynced()).toBe(2);
    const rows = await o.peek(0, 10);
    expect(rows.map((r) => [r.seq, r.occurredAtMs, r.clockSynced])).toEqual([
      [a.seq, wall - 7_000, true],
      [b.seq, wall - 3_000, true],
      [c.seq, 123, true],
    ]);
    expect(await o.restampUnsynced()).toBe(0);
    await o.close();
  });

  it('does not re-stamp punches from before a restart (their monotonic time means nothing now)', async () => {
    const path = join(tmp(), 'o.db');
    let o = await Outbox.open({ path, capacity: 100, now: () => 1000, monotonic: () => 50 });
    await o.accept({ ...punch(1), clockSynced: false });
    await o.close();
    o = await Outbox.open({ path, capacity: 100, now: () => Date.now(), monotonic: () => 10 });
    expect(await o.restampUnsynced()).toBe(0);
    expect((await o.peek(0, 1))[0]).toMatchObject({ occurredAtMs: 1000, clockSynced: false });
    await o.close();
  });

  it('a failed ack flush is re-tried on its own timer: no further ack is needed (issue 8 §1)', async () => {
    const path = join(tmp(), 'o.db');
    const o = await Outbox.open({ path, capacity: 100 });
    const rows = await Promise.all(Array.from({ length: 5 }, (_, i) => o.accept(punch(i))));
    // A real SQLite error on every delete while this trigger exists.
    const side = await Sqlite.open(path);
    await side.exec("CREATE TRIGGER block_deletes BEFORE DELETE ON punches BEGIN SELECT RAISE(ABORT, 'deletes blocked by the test'); END");
    for (const r of rows) o.ack(r.seq);
    await new Promise((r) => setTimeout(r, 300));
    expect(o.depth).toBe(5);
    await side.exec('DROP TRIGGER block_deletes');
    await side.close();
    // No ack arrives any more (the queue is idle): the retry timer alone must delete them.
    const end = Date.now() + 5000;
    while (o.depth > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    expect(o.depth).toBe(0);
    expect(await o.peek(0, 10)).toEqual([]);
    await o.close();
  });

  it('refuses a file that is not a SQLite database and leaves it untouched', async () => {
    const path = join(tmp(), 'o.db');
    const junk = 'this is not a database, it is a text file that someone put here by mistake'.repeat(20);
    writeFileSync(path, junk);
    await expect(Outbox.open({ path, capacity: 10 })).rejects.toMatchObject({ code: 'STORAGE_CORRUPT' });
    expect(readFileSync(path, 'utf8')).toBe(junk);
    expect(existsSync(`${path}-wal`)).toBe(false);
  });
});

describe('synchronous level of each write', () => {
  it('punch commits run at FULL; a delete flush runs at NORMAL and switches back before it ends; a lone punch commits alone, a group commit takes the pending deletes along', async () => {
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 100 });
    expect(await o.writerSynchronous()).toBe(2);
    const a = await o.accept(punch(1));
    o.ack(a.seq);
    await o.flushAcks();
    expect(o.lastFlushSynchronous).toBe(1); // deletes of delivered rows: no fsync of their own
    expect(await o.writerSynchronous()).toBe(2); // back at FULL before the flush ended: the next punch pays no switch
    expect(o.depth).toBe(0);
    const b = await o.accept(punch(2));
    expect(await o.writerSynchronous()).toBe(2); // the punch was committed at FULL
    // A lone punch commits by itself (one INSERT): the pending delete waits for its own flush.
    o.ack(b.seq);
    await o.accept(punch(3));
    expect(o.pendingAcks).toBe(1);
    expect(o.depth).toBe(2);
    // A group commit (several punches at once) takes the pending deletes along: it syncs anyway.
    const [c, d] = await Promise.all([o.accept(punch(4)), o.accept(punch(5)), o.accept(punch(6))]);
    expect(o.pendingAcks).toBe(0);
    expect(o.depth).toBe(4); // 3 and the three new ones; 2 went with the group's commit
    expect(await o.writerSynchronous()).toBe(2);
    expect(d!.seq).toBe(c!.seq + 1);
    await o.enqueueResult('org-a', '{}');
    expect(await o.writerSynchronous()).toBe(2);
    await o.close();
  });
});

describe('statement shapes of the hot path', () => {
  it('deletes: runs of consecutive seqs as ranges, the rest as IN lists, duplicates once', () => {
    const plan = deletePlan([12, 3, 4, 5, 6, 7, 8, 9, 10, 11, 40, 41, 3, 90]);
    expect(plan).toEqual([
      { sql: 'DELETE FROM punches WHERE seq BETWEEN ? AND ?', params: [3, 12] },
      { sql: 'DELETE FROM punches WHERE seq IN (?,?,?)', params: [40, 41, 90] },
    ]);
    expect(deletePlan([7])).toEqual([{ sql: 'DELETE FROM punches WHERE seq IN (?)', params: [7] }]);
    expect(deletePlan([])).toEqual([]);
  });

  it('inserts: one statement up to 1,000 rows (it commits by itself), more in chunks of 1,000', () => {
    expect(statementSizes(1)).toEqual([1]);
    expect(statementSizes(1000)).toEqual([1000]);
    expect(statementSizes(2500)).toEqual([1000, 1000, 500]);
  });
});
