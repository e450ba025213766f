/**
 * Closing the outbox (or compacting it) while a read is starting on its
 * read-only connection leaves nothing open. The leak this pins (CI at
 * 18427ab, the disk-full "fills" test): the drain's first read after a start
 * opened the reader and queued the prepare of its statement; `agent.stop()`
 * right after the last punch closed the reader at the same moment;
 * sqlite3_close found the statement unfinalized (SQLITE_BUSY), the error was
 * swallowed, and the connection — outbox.db, its -wal, the shared -shm, and
 * the writer's outbox.db descriptor that SQLite keeps while another
 * connection of the process holds a lock on the file — stayed open for the
 * life of the process. On a device that runs for years, every stop/start of
 * the outbox in one process (an erasure's compaction, a restart in the lab)
 * could leak another. Descriptors are read from /proc/self/fd: what the
 * process really holds, not what our own bookkeeping believes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Outbox } from '../../src/outbox/outbox.js';
import { PunchMethod } from '../../src/proto/index.js';
import { descriptorsUnder } from '../helpers/open-files.js';
import { captureLogger, type Line } from '../link/capture-logger.js';

const base = mkdtempSync(join(tmpdir(), 'tbx-readerclose-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const punch = (i: number) => ({ orgId: 'org-a', subjectId: `s-${i}`, method: PunchMethod.PUNCH_METHOD_CARD });
/** Lets `n` turns of the event loop pass (other callbacks, thread-pool completions), to vary where the close lands. */
const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

// 0..7 turns between the read and the close: the close meets the reader opening, the prepare queued,
// the statement running, and the read done. Each run is a fresh outbox (its first read opens the reader).
describe.each([0, 1, 2, 3, 4, 5, 6, 7])('a read on a fresh reader, then close() after %i turns', (n) => {
  it('leaves no descriptor open and logs no failed close; the read gets its rows or a clear error', async () => {
    const dir = join(base, `close-${n}`);
    const lines: Line[] = [];
    const o = await Outbox.open({ path: join(dir, 'outbox.db'), capacity: 1000, logger: captureLogger(lines) });
    for (let i = 0; i < 5; i++) await o.accept(punch(i));
    const read = o.peekRecords(0, 100).then(
      (r) => ({ count: r?.count }),
      (err: unknown) => ({ err }),
    );
    await turns(n);
    await o.close();
    const got = await read;
    expect('err' in got ? got.err : got.count).toBe(5);
    expect(lines.filter((l) => l.fields.event === 'outbox_reader_close_failed')).toEqual([]);
    expect(descriptorsUnder(dir)).toEqual([]);
  });
});

describe('compact() while reads are running (an erasure closes the reader first)', () => {
  it('closes the reader only after them, and close() afterwards leaves nothing open', async () => {
    const dir = join(base, 'compact');
    const lines: Line[] = [];
    const o = await Outbox.open({ path: join(dir, 'outbox.db'), capacity: 1000, logger: captureLogger(lines) });
    for (let i = 0; i < 5; i++) await o.accept(punch(i));
    for (let n = 0; n < 8; n++) {
      const records = o.peekRecords(0, 100);
      const rows = o.peek(0, 100);
      await turns(n);
      await o.compact();
      expect((await records)?.count).toBe(5);
      expect(await rows).toHaveLength(5);
    }
    await o.close();
    expect(lines.filter((l) => l.fields.event === 'outbox_reader_close_failed')).toEqual([]);
    expect(descriptorsUnder(dir)).toEqual([]);
  });
});
