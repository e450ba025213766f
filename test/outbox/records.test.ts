/**
 * The drain's read path (issue 10 §5): queued punches read back as one framed
 * buffer per batch and encoded by the gate straight from it. The bytes must be
 * exactly protobufjs's PunchEvent for the same row (fast path and fallback),
 * and a buffer that does not frame is refused as STORAGE_CORRUPT.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EgressGate } from '../../src/link/egress.js';
import { encodePunchRecords, recordFields } from '../../src/link/punch-encoder.js';
import { Outbox, type PunchInput } from '../../src/outbox/outbox.js';
import { PunchRecords } from '../../src/outbox/records.js';
import { pb, PunchMethod } from '../../src/proto/index.js';
import { Sqlite } from '../../src/store/sqlite.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-records-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const inputs: PunchInput[] = [
  { orgId: 'org-a', subjectId: 'subject-1', method: PunchMethod.PUNCH_METHOD_CARD },
  { orgId: 'org-ü\u0000x', subjectId: 's'.repeat(300), method: 3, matchScore: 2, liveness: 1 }, // multi-byte, NUL, long
  { orgId: 'org-a', subjectId: '', method: 0, occurredAtMs: 0, clockSynced: false }, // defaults left out
  { orgId: 'org-b', subjectId: '日本語', method: -1 as PunchMethod, occurredAtMs: -5 }, // the protobufjs fallback
  { orgId: 'org-b', subjectId: 'x', method: 1, occurredAtMs: 2 ** 50 + 3 },
];

describe('drain records', () => {
  it('encode to exactly the bytes protobufjs produces for the same rows, with the topic org of each', async () => {
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 100 });
    for (const p of inputs) await o.accept(p);
    const rows = await o.peek(0, 100);
    const gate = new EgressGate({ deviceId: 'dev-1', operatorOrgId: 'org-op' });
    for (const [from, limit] of [
      [0, 100],
      [1, 2],
      [4, 100],
    ] as const) {
      const recs = await o.peekRecords(from, limit);
      const want = rows.filter((r) => r.seq > from).slice(0, limit);
      expect(recs?.count).toBe(want.length);
      const enc = encodePunchRecords(recs!, 'dev-1', 7, 2);
      let start = 0;
      want.forEach((r, i) => {
        expect(recordFields(recs!, i)).toEqual({
          seq: r.seq,
          eventId: r.eventId,
          orgId: r.orgId,
          subjectId: r.subjectId,
          method: r.method,
          occurredAtMs: r.occurredAtMs,
          clockSynced: r.clockSynced,
          matchScore: r.matchScore,
          liveness: r.liveness,
        });
        const got = enc.buf.subarray(start, enc.ends[i]);
        start = enc.ends[i]!;
        expect(Buffer.from(got).equals(Buffer.from(gate.encodePunch(r, { bdSeq: 7, historical: r.seq <= 2 }))), `seq ${r.seq}`).toBe(true);
        expect(pb.PunchEvent.decode(got).historical).toBe(r.seq <= 2);
        expect(enc.orgs[i]).toBe(r.orgId);
      });
    }
    expect(await o.peekRecords(rows.at(-1)!.seq, 10)).toBeUndefined();
    await o.close();
  });

  it('a batch that does not frame exactly is STORAGE_CORRUPT, never half-read', async () => {
    const o = await Outbox.open({ path: join(tmp(), 'o.db'), capacity: 100 });
    for (const p of inputs.slice(0, 2)) await o.accept(p);
    const recs = (await o.peekRecords(0, 10))!;
    expect(() => new PunchRecords(recs.buf.subarray(0, recs.buf.length - 1), 2)).toThrow(expect.objectContaining({ code: 'STORAGE_CORRUPT' }));
    expect(() => new PunchRecords(recs.buf, 3)).toThrow(expect.objectContaining({ code: 'STORAGE_CORRUPT' }));
    expect(() => new PunchRecords(Buffer.concat([recs.buf, Buffer.alloc(3)]), 2)).toThrow(expect.objectContaining({ code: 'STORAGE_CORRUPT' }));
    await o.close();
  });

  it('a text column holding bytes that are not UTF-8 leaves as U+FFFD, as a JS string would carry it (never invalid UTF-8)', async () => {
    const path = join(tmp(), 'o.db');
    let o = await Outbox.open({ path, capacity: 100 });
    await o.accept(inputs[0]!);
    await o.close();
    const db = await Sqlite.open(path);
    // The header's subject length follows (bytes 38-41): only the text is not UTF-8.
    await db.run("UPDATE punches SET subject_id = x'00ff41', head = substr(head, 1, 37) || x'00000003'");
    await db.close();
    o = await Outbox.open({ path, capacity: 100 });
    const recs = (await o.peekRecords(0, 10))!;
    const enc = encodePunchRecords(recs, 'dev-1', 1, 0);
    const ev = pb.PunchEvent.decode(enc.buf.subarray(0, enc.ends[0]));
    expect(ev.subjectId).toBe('\u0000\ufffdA');
    expect(ev.orgId).toBe('org-a');
    await o.close();
  });
});
