/**
 * Read a file that a SQLite connection in THIS process may have open, without
 * dropping that connection's locks.
 *
 * POSIX advisory locks belong to the process and the file: closing ANY
 * descriptor of a file releases every lock the process holds on it
 * (https://sqlite.org/howtocorrupt.html §2.2). The verification scan reads
 * vault.db, its -wal and -shm as raw bytes while the agent's connections are
 * open; a plain readFile() closes its descriptor afterwards, which silently
 * released SQLite's SHARED lock on the database and the -shm "dead man
 * switch". Another process opening the database next (doctor, the purge CLI,
 * a test's reader) then took itself for the only user, rebuilt the -shm under
 * the agent's memory map and the agent died of SIGBUS.
 *
 * So a descriptor opened for reading is kept open for as long as the path
 * names the same file (device + inode): the next read reuses it, and nothing
 * is ever closed while SQLite may hold locks on that inode. When the path
 * names another file (the old one was deleted: a WAL removed at its last
 * close), the stale descriptor is closed — locks on a deleted inode guard
 * nothing. Sqlite.close() releases the descriptors of its database's files
 * (its locks are gone then anyway), so a closed store leaves nothing open:
 * a deleted file's blocks are freed, a test's tmpfs can be unmounted.
 *
 * Only SQLite's files are pinned; anything else is read and closed at once.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';

interface Pinned {
  fd: number;
  dev: number;
  ino: number;
}

const pinned = new Map<string, Pinned>();

const SQLITE_FILE = /(\.db|-wal|-shm|-journal)$/;

/** The whole file's bytes (ENOENT and other errors are thrown, as readFile does). */
export function readPinned(path: string): Buffer {
  if (!SQLITE_FILE.test(path)) return readFileSync(path);
  const st = statSync(path);
  let p = pinned.get(path);
  if (p && (p.dev !== st.dev || p.ino !== st.ino)) {
    closeSync(p.fd); // another file now: the old inode is gone, its locks guard nothing
    pinned.delete(path);
    p = undefined;
  }
  if (!p) {
    const fd = openSync(path, 'r');
    const fst = fstatSync(fd);
    p = { fd, dev: fst.dev, ino: fst.ino };
    pinned.set(path, p);
  }
  const size = fstatSync(p.fd).size;
  const buf = Buffer.allocUnsafe(size);
  let off = 0;
  while (off < size) {
    const n = readSync(p.fd, buf, off, size - off, off);
    if (n === 0) break; // truncated while we read: what is there is what a disk image shows
    off += n;
  }
  return off === size ? buf : buf.subarray(0, off);
}

/** Close the pinned descriptors of a database's files (its connection has closed: no locks left to keep). */
export function releasePinned(dbPath: string): void {
  for (const f of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, `${dbPath}-journal`]) {
    const p = pinned.get(f);
    if (!p) continue;
    pinned.delete(f);
    try {
      closeSync(p.fd);
    } catch {
      // already closed: nothing held
    }
  }
}

/** Descriptors currently pinned (tests). */
export function pinnedCount(): number {
  return pinned.size;
}
