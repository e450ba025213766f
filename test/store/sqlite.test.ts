/**
 * Cached prepared statements (src/store/sqlite.ts): reused, closed with the
 * connection, and never left half-stepped holding a read snapshot (which
 * would keep a checkpoint from emptying the WAL).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Sqlite } from '../../src/store/sqlite.js';
import { descriptorsUnder } from '../helpers/open-files.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-sqlite-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('Sqlite.prepared', () => {
  it('a statement still being prepared when the connection closes does not keep it open (no descriptor left, no failed close)', async () => {
    const dir = tmp();
    for (let turns = 0; turns < 4; turns++) {
      const db = await Sqlite.open(join(dir, `p${turns}.db`));
      await db.exec('CREATE TABLE t (v)');
      const pending = db.prepared('SELECT v FROM t WHERE v > ?');
      for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
      await db.close();
      await pending;
      expect(descriptorsUnder(dir)).toEqual([]);
    }
  });

  it('prepares a statement once and reuses it; run/all/get work with bound parameters', async () => {
    const db = await Sqlite.open(join(tmp(), 'a.db'));
    await db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
    const ins = await db.prepared('INSERT INTO t (v) VALUES (?)');
    expect(await db.prepared('INSERT INTO t (v) VALUES (?)')).toBe(ins);
    for (let i = 0; i < 5; i++) expect((await ins.run([`v${i}`])).changes).toBe(1);
    const sel = await db.prepared('SELECT id, v FROM t WHERE id > ? ORDER BY id');
    expect((await sel.all([3])).map((r) => r.v)).toEqual(['v3', 'v4']);
    expect(await sel.get([0])).toEqual({ id: 1, v: 'v0' });
    expect(await sel.get([99])).toBeUndefined();
    await db.close(); // refused by SQLite if a statement were left unfinalized
  });

  it('keeps at most 64 statements: the least recently used is finalized, and prepared again when needed', async () => {
    const db = await Sqlite.open(join(tmp(), 'e.db'));
    const first = await db.prepared('SELECT 0 AS n');
    for (let i = 1; i <= 64; i++) expect(await (await db.prepared(`SELECT ${i} AS n`)).get()).toEqual({ n: i });
    // 'SELECT 0' was the least recently used: evicted, so a new statement (which works) comes back.
    const again = await db.prepared('SELECT 0 AS n');
    expect(again).not.toBe(first);
    expect(await again.get()).toEqual({ n: 0 });
    // A recently used one is still the same statement.
    expect(await db.prepared('SELECT 64 AS n')).toBe(await db.prepared('SELECT 64 AS n'));
    await db.close();
  });

  it('a bad statement is a STORAGE_ERROR carrying the SQL, and is not cached', async () => {
    const db = await Sqlite.open(join(tmp(), 'b.db'));
    await expect(db.prepared('SELECT nope FROM nowhere')).rejects.toMatchObject({ code: 'STORAGE_ERROR' });
    await db.exec('CREATE TABLE nowhere (nope INTEGER)');
    expect(await (await db.prepared('SELECT nope FROM nowhere')).all()).toEqual([]);
    await db.close();
  });

  it('get() on a cached statement holds no read snapshot: a truncating checkpoint still empties the WAL', async () => {
    const path = join(tmp(), 'c.db');
    const w = await Sqlite.open(path);
    await w.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
    for (let i = 0; i < 50; i++) await w.run('INSERT INTO t (v) VALUES (?)', [`row-${i}`]);
    const r = await Sqlite.open(path, { readonly: true });
    // First of many rows: a statement stepped once and left would keep its snapshot.
    expect(await (await r.prepared('SELECT v FROM t ORDER BY id')).get()).toEqual({ v: 'row-0' });
    await w.run('INSERT INTO t (v) VALUES (?)', ['after']);
    const ck = await w.get<{ busy: number; log: number; checkpointed: number }>('PRAGMA wal_checkpoint(TRUNCATE)');
    expect(ck?.busy).toBe(0);
    await r.close();
    await w.close();
  });
});
