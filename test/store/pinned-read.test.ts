/**
 * The verification scan reads a database's raw files while this process has
 * it open. A plain readFile() closes its descriptor, and closing any
 * descriptor of a file drops every POSIX lock the process holds on it: another
 * process then closing its own connection took itself for the last user,
 * checkpointed and deleted the WAL under our open connection (and rebuilt the
 * -shm under its memory map: SIGBUS). With pinned reads the locks stay.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { scanForSamples, sqliteFiles } from '../../src/privacy/scan.js';
import { pinnedCount } from '../../src/store/pinned-read.js';
import { Sqlite } from '../../src/store/sqlite.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Another process opens the database, reads, and closes: as the last user it would checkpoint and delete the WAL. */
function otherProcessOpensAndCloses(path: string): void {
  const js = `const s = require('sqlite3'); const d = new s.Database(${JSON.stringify(path)}); d.get('SELECT count(*) AS n FROM t', (e) => { if (e) { console.error(e.message); process.exit(2); } d.close((e2) => process.exit(e2 ? 3 : 0)); });`;
  const r = spawnSync(process.execPath, ['-e', js], { encoding: 'utf8', cwd: process.cwd() });
  expect(r.status, r.stderr).toBe(0);
}

describe('scanning the files of an open database keeps its locks', () => {
  it("after a scan, another process's close does not take our WAL away", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-pinned-'));
    dirs.push(dir);
    const path = join(dir, 'vault.db');
    const db = await Sqlite.open(path);
    try {
      await db.exec('CREATE TABLE t (x BLOB)');
      await db.run('INSERT INTO t VALUES (?)', [Buffer.alloc(5000, 7)]);
      expect(existsSync(`${path}-wal`)).toBe(true);
      // The scan does find what is there (a check that cannot fail proves nothing)…
      const scan = await scanForSamples(
        sqliteFiles(path).map((p) => ({ path: p, scope: 'other' as const })),
        [{ bytes: Buffer.alloc(64, 7), label: 'ciphertext', scope: 'all' }],
      );
      expect(scan.hits).toBeGreaterThan(0);
      // …and reading the files dropped none of our locks: the other process is not the last user.
      otherProcessOpensAndCloses(path);
      expect(existsSync(`${path}-wal`), 'the WAL was checkpointed and deleted under our open connection').toBe(true);
      await db.run('INSERT INTO t VALUES (?)', [Buffer.alloc(10, 1)]);
      expect((await db.get<{ n: number }>('SELECT count(*) AS n FROM t'))?.n).toBe(2);
      expect(pinnedCount()).toBeGreaterThan(0);
    } finally {
      await db.close();
    }
    // Closed: nothing of this database stays open in the process.
    expect(readFileSync(path).length).toBeGreaterThan(0);
    expect(pinnedCount()).toBe(0);
  });
});
