/**
 * One agent per data directory. Two agents on the same files would hand out
 * the same sequence numbers, fight over the MQTT client id and interleave
 * erasures with writes.
 *
 * The lock is a POSIX record lock held by SQLite on `tallybox.lock` (an
 * empty database opened in exclusive locking mode with an exclusive
 * transaction). Why SQLite: Node has no flock/fcntl, and this lock belongs to
 * the kernel — it is released when the process dies, SIGKILL and power cut
 * included, so there is no stale lock to clean up (a pid file can only guess
 * whether its pid is still the same program). Another connection, in this
 * process or any other, gets SQLITE_BUSY.
 */
import sqlite3 from 'sqlite3';
import { join } from 'node:path';
import { TallyboxError } from '../util/errors.js';
import { preparePrivateDbFile } from '../util/private-fs.js';

export const LOCK_FILE = 'tallybox.lock';

export class DataDirLock {
  private constructor(
    readonly dir: string,
    private db: sqlite3.Database | undefined,
  ) {}

  /** Take the lock or throw DATA_DIR_LOCKED (nothing else is changed). */
  static async acquire(dir: string): Promise<DataDirLock> {
    const path = join(dir, LOCK_FILE);
    // 0600 and never through a symlink, like every file the agent keeps (the start-up check refuses others).
    preparePrivateDbFile(path, { create: true });
    const db = await new Promise<sqlite3.Database>((resolve, reject) => {
      const d: sqlite3.Database = new sqlite3.Database(path, sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE, (err) =>
        err ? reject(new TallyboxError('STORAGE_UNAVAILABLE', `cannot open the lock file ${path}: ${err.message}`, {}, { cause: err })) : resolve(d),
      );
    });
    db.configure('busyTimeout', 0);
    try {
      // journal_mode=OFF: the lock file never gets content, so it needs no journal either.
      await new Promise<void>((resolve, reject) => db.exec('PRAGMA journal_mode=OFF; PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;', (err) => (err ? reject(err) : resolve())));
    } catch (err) {
      await new Promise<void>((r) => db.close(() => r()));
      const busy = (err as { code?: string }).code === 'SQLITE_BUSY';
      throw busy
        ? new TallyboxError('DATA_DIR_LOCKED', `data directory ${dir} is in use by another tallybox process (it holds ${LOCK_FILE}); one agent per data directory`, { dir })
        : new TallyboxError('STORAGE_UNAVAILABLE', `cannot lock ${path}: ${(err as Error).message}`, {}, { cause: err });
    }
    return new DataDirLock(dir, db);
  }

  get held(): boolean {
    return this.db !== undefined;
  }

  async release(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    if (db) await new Promise<void>((r) => db.close(() => r()));
  }
}
