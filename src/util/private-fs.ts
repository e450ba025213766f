/**
 * Files the agent writes cannot be redirected or read by others (DESIGN:
 * "0600 in a 0700 directory it checks, never through a symlink").
 *
 * - The data directory: created 0700; at every start its owner must be the
 *   agent's user (else DATA_DIR_INSECURE: refused, someone else controls what
 *   is in it) and group/other bits are removed (fixed and reported: the
 *   agent owns the directory, tightening it loses nothing).
 * - Files in it: a symlink, or a file owned by another user, is refused
 *   (FILE_INSECURE); a file of ours others may read is tightened to 0600.
 * - New files: written to a fresh temporary name with O_CREAT|O_EXCL|O_NOFOLLOW
 *   at mode 0600, synced, then renamed over the target. rename() replaces a
 *   planted symlink itself, never the file it points to.
 * - SQLite databases: the file (and any -wal/-shm/-journal already there) is
 *   checked the same way and a missing one is created 0600 before SQLite opens
 *   it; SQLite then gives the -wal and -shm it creates the main file's mode.
 * - Secrets (key files): owned by the agent's user, 0600, in a directory
 *   nobody else can write to, and not inside the data directory by real path
 *   (a symlink in either path does not hide it).
 *
 * Synchronous on purpose: these run at start and on rare writes (pid file,
 * tamper marker, settings), never on the punch path.
 */
import { chmodSync, closeSync, constants as fsc, fchmodSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeSync, type Stats } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { TallyboxError, errorMessage } from './errors.js';

const O_NOFOLLOW = fsc.O_NOFOLLOW ?? 0;
const O_DIRECTORY = fsc.O_DIRECTORY ?? 0;

/** The uid files must belong to: the agent's effective user. */
export function agentUid(): number {
  return process.geteuid?.() ?? process.getuid?.() ?? -1;
}

/**
 * Whose files to expect when inspecting a data directory from outside the
 * agent (doctor, purge): IT runs those as root while the agent may run as its
 * own user, so root takes the directory's owner as the agent's user.
 */
export function expectedOwner(dataDir: string): number {
  const me = agentUid();
  if (me !== 0) return me;
  try {
    return statSync(dataDir).uid;
  } catch {
    return me; // not there yet: nothing to compare
  }
}

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0');

/** What one check found; `doctor` prints these, the agent logs the fixed ones and throws on refused ones. */
export interface Finding {
  path: string;
  /** fixed: the agent corrected it (or will, at start); refused: the agent will not run with it. */
  verdict: 'ok' | 'fixed' | 'refused';
  detail: string;
}

export interface CheckOptions {
  /** Correct what can be corrected (the agent at start). false: only report (doctor). */
  fix: boolean;
  /** The uid files must belong to; default the agent's own (doctor run as root passes the data directory's owner). */
  uid?: number;
}

/**
 * Create (0700) or check the data directory: owner and mode, at every start.
 * The configured path may itself be a symlink placed by IT (/var/lib/tallybox
 * on another disk): the directory it resolves to is what is checked.
 */
export function checkPrivateDir(path: string, opts: CheckOptions): Finding {
  // A parent anyone may write to (and without the sticky bit, which stops others renaming our entry)
  // lets them swap the whole directory for theirs between two starts.
  const parent = dirname(realPathLoose(path));
  try {
    const p = statSync(parent);
    if ((p.mode & 0o002) !== 0 && (p.mode & 0o1000) === 0) {
      return { path, verdict: 'refused', detail: `the directory ${parent} holding the data directory has mode ${octal(p.mode)}: anyone can replace ${path} in it. Fix with: chmod o-w ${parent}` };
    }
  } catch {
    // No parent yet (it is created below with the directory, 0700): nothing to check.
  }
  let st: Stats;
  try {
    st = statSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw storageUnavailable(path, err);
    if (!opts.fix) return { path, verdict: 'ok', detail: `${path} does not exist yet (the agent creates it, mode 0700, on first start)` };
    try {
      mkdirSync(path, { recursive: true, mode: 0o700 });
      st = statSync(path);
    } catch (e) {
      throw storageUnavailable(path, e);
    }
  }
  if (!st.isDirectory()) throw new TallyboxError('STORAGE_UNAVAILABLE', `data directory ${path} is not a directory`, { path });
  const uid = opts.uid ?? agentUid();
  if (uid >= 0 && st.uid !== uid) {
    return {
      path,
      verdict: 'refused',
      detail: `data directory ${path} is owned by uid ${st.uid}, not by the agent's user (uid ${uid}): whoever owns it controls the files in it. Fix with: chown ${uid} ${path}`,
    };
  }
  if ((st.mode & 0o077) !== 0) {
    const was = octal(st.mode);
    if (opts.fix) {
      try {
        chmodSync(path, 0o700);
      } catch (err) {
        throw storageUnavailable(path, err);
      }
      return { path, verdict: 'fixed', detail: `data directory ${path} had mode ${was}; changed to 0700` };
    }
    return { path, verdict: 'fixed', detail: `data directory ${path} has mode ${was} (others can reach the punch queue); the agent changes it to 0700 at start, or: chmod 700 ${path}` };
  }
  return { path, verdict: 'ok', detail: `data directory ${path}: 0700, owned by uid ${st.uid}` };
}

/** checkPrivateDir that throws DATA_DIR_INSECURE when refused. */
export function ensurePrivateDir(path: string): Finding {
  const f = checkPrivateDir(path, { fix: true });
  if (f.verdict === 'refused') throw new TallyboxError('DATA_DIR_INSECURE', f.detail, { path });
  return f;
}

function storageUnavailable(path: string, err: unknown): TallyboxError {
  return new TallyboxError('STORAGE_UNAVAILABLE', `cannot use data directory ${path}: ${errorMessage(err)}`, { path, errno: (err as NodeJS.ErrnoException).code }, { cause: err });
}

/**
 * Check one existing entry (lstat: the entry itself, not what it points to).
 * Missing is ok. Directories are not files the agent writes: skipped.
 */
export function checkPrivateFile(path: string, opts: CheckOptions): Finding {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { path, verdict: 'ok', detail: `${path} does not exist` };
    throw new TallyboxError('STORAGE_UNAVAILABLE', `cannot inspect ${path}: ${errorMessage(err)}`, { path }, { cause: err });
  }
  if (st.isSymbolicLink()) {
    return { path, verdict: 'refused', detail: `${path} is a symbolic link: the agent never writes through one (it would overwrite whatever it points to). Remove it: rm ${path}` };
  }
  if (st.isDirectory()) return { path, verdict: 'ok', detail: `${path} is a directory` };
  const uid = opts.uid ?? agentUid();
  if (uid >= 0 && st.uid !== uid) {
    return { path, verdict: 'refused', detail: `${path} is owned by uid ${st.uid}, not by the agent's user (uid ${uid}). Fix with: chown ${uid} ${path}` };
  }
  // A Unix socket (a local API) is fine: its owner is checked above and connecting cannot redirect a write.
  if (st.isSocket()) return { path, verdict: 'ok', detail: `${path} is a socket` };
  if (!st.isFile()) return { path, verdict: 'refused', detail: `${path} is not a regular file` };
  if ((st.mode & 0o077) !== 0) {
    const was = octal(st.mode);
    if (!opts.fix) return { path, verdict: 'fixed', detail: `${path} has mode ${was} (readable by others); the agent changes it to 0600 at start, or: chmod 600 ${path}` };
    tightenWithoutFollowing(path);
    return { path, verdict: 'fixed', detail: `${path} had mode ${was}; changed to 0600` };
  }
  return { path, verdict: 'ok', detail: `${path}: 0600` };
}

/** chmod 600 on the file itself: opened O_NOFOLLOW, so a symlink swapped in after the lstat is not followed. */
function tightenWithoutFollowing(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (err) {
    throw insecure(path, err);
  }
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
}

function insecure(path: string, err: unknown): TallyboxError {
  const code = (err as NodeJS.ErrnoException).code;
  return new TallyboxError(
    'FILE_INSECURE',
    code === 'ELOOP' ? `${path} is a symbolic link: the agent never writes through one. Remove it: rm ${path}` : `cannot open ${path} safely: ${errorMessage(err)}`,
    { path, errno: code },
    { cause: err },
  );
}

/**
 * Every file directly in the data directory (what the agent wrote, and
 * anything planted next to it), checked and, with fix, tightened.
 */
export function checkPrivateFiles(dir: string, opts: CheckOptions): Finding[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw storageUnavailable(dir, err);
  }
  return names.sort().map((n) => checkPrivateFile(join(dir, n), opts));
}

/** At start: the directory and every file in it; throws on the first refusal, returns what was fixed. */
export function securePrivateDataDir(dir: string): Finding[] {
  const found = [ensurePrivateDir(dir), ...checkPrivateFiles(dir, { fix: true })];
  const refused = found.find((f) => f.verdict === 'refused');
  if (refused) throw new TallyboxError(refused.path === dir ? 'DATA_DIR_INSECURE' : 'FILE_INSECURE', refused.detail, { path: refused.path });
  return found.filter((f) => f.verdict === 'fixed');
}

/**
 * Replace `path` with `data`: 0600 from birth, never through a symlink, and
 * never half-written (readers see the old file or the new one). The
 * temporary name is created O_EXCL|O_NOFOLLOW, so nothing planted there is
 * followed either.
 */
export function writePrivateFileAtomic(path: string, data: string | Buffer): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  rmSync(tmp, { force: true }); // a leftover from a crash of this pid: it is ours, and rm does not follow links
  let fd: number;
  try {
    fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | O_NOFOLLOW, 0o600);
  } catch (err) {
    throw insecure(tmp, err);
  }
  try {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
  syncDir(dirname(path));
}

/** fsync a directory so a rename or unlink in it survives a power cut. */
export function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, fsc.O_RDONLY | O_DIRECTORY);
    fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on a directory (EINVAL): the rename itself has succeeded.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Read a file the agent wrote (opts.uid: its owner, default this process's
 * user; -1: any owner). Missing: undefined. A symlink, a file owned by
 * someone else, or an error reading it: thrown (FILE_INSECURE /
 * FILE_UNREADABLE) — never mistaken for "not there".
 */
export function readPrivateFile(path: string, opts: { uid?: number } = {}): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw insecure(path, err);
    throw new TallyboxError('FILE_UNREADABLE', `cannot read ${path}: ${errorMessage(err)}`, { path, errno: code }, { cause: err });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new TallyboxError('FILE_UNREADABLE', `${path} is not a regular file`, { path });
    const uid = opts.uid ?? agentUid();
    if (uid >= 0 && st.uid !== uid) throw new TallyboxError('FILE_INSECURE', `${path} is owned by uid ${st.uid}, not by the agent's user (uid ${uid})`, { path });
    return readFileSync(fd);
  } catch (err) {
    if (err instanceof TallyboxError) throw err;
    throw new TallyboxError('FILE_UNREADABLE', `cannot read ${path}: ${errorMessage(err)}`, { path, errno: (err as NodeJS.ErrnoException).code }, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/** The companion files SQLite may create next to a database. */
export const sqliteCompanions = (dbPath: string): string[] => [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, `${dbPath}-journal`];

/**
 * Before SQLite opens `dbPath` for writing: refuse a symlink or a foreign
 * file at the database or any companion path, tighten loose ones to 0600,
 * and create a missing database file 0600 (empty: SQLite treats a 0-byte
 * file as a new database), so that the -wal and -shm SQLite then creates get
 * 0600 too (SQLite copies the main file's mode; verified in
 * test/hardening/private-fs.test.ts).
 */
export function preparePrivateDbFile(dbPath: string, opts: { create: boolean }): void {
  for (const p of sqliteCompanions(dbPath)) {
    const f = checkPrivateFile(p, { fix: true });
    if (f.verdict === 'refused') throw new TallyboxError('FILE_INSECURE', f.detail, { path: p });
  }
  if (!opts.create) return;
  try {
    closeSync(openSync(dbPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | O_NOFOLLOW, 0o600));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // EEXIST: it is there and passed the checks above. Anything else (a directory
    // in the way, no permission) is left for SQLite to report with its own code.
    if (code === 'EEXIST' || code === 'EISDIR' || code === 'ENOENT' || code === 'EACCES' || code === 'EPERM') return;
    if (code === 'ELOOP') throw insecure(dbPath, err);
    throw err;
  }
}

/**
 * The real path of `p` even when its tail does not exist yet (a data
 * directory before the first start): the nearest existing ancestor is
 * resolved and the rest appended.
 */
export function realPathLoose(p: string): string {
  const abs = resolve(p);
  const tail: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return join(realpathSync(cur), ...tail.reverse());
    } catch {
      // not there (yet): resolve the parent and keep this component
      const parent = dirname(cur);
      if (parent === cur) return abs;
      tail.push(basename(cur));
      cur = parent;
    }
  }
}

/** Is `child` inside `parent` (or the same), by real path on both sides? */
export function isInsideReal(child: string, parent: string): boolean {
  const rel = relative(realPathLoose(parent), realPathLoose(child));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/**
 * A secret (key file) opened by the caller with O_NOFOLLOW: `st` is its
 * fstat. Returns why it must not be used, or undefined when it is safe:
 * owned by the agent's user (a file someone else owns, they can replace or
 * read), no group/other bits, and its directory (by real path) writable by
 * nobody else and owned by the agent's user or root (else the file can be
 * swapped between two starts).
 */
export function secretFileProblem(path: string, st: Stats, what = 'file'): string | undefined {
  const uid = agentUid();
  if (uid >= 0 && st.uid !== uid) return `${what} ${path} is owned by uid ${st.uid}, not by the agent's user (uid ${uid}); refusing to use it. Fix with: chown ${uid} ${path}`;
  if ((st.mode & 0o077) !== 0) return `${what} ${path} has mode ${octal(st.mode)} and is readable or writable by group/others; refusing to use it. Fix with: chmod 600 ${path}`;
  const dir = dirname(realPathLoose(path));
  let d: Stats;
  try {
    d = statSync(dir);
  } catch (err) {
    return `cannot inspect the directory ${dir} of ${what} ${path}: ${errorMessage(err)}`;
  }
  if ((d.mode & 0o022) !== 0) return `the directory ${dir} holding ${what} ${path} has mode ${octal(d.mode)}: others can replace the key in it. Fix with: chmod 700 ${dir}`;
  if (uid >= 0 && d.uid !== uid && d.uid !== 0) return `the directory ${dir} holding ${what} ${path} is owned by uid ${d.uid}: that user can replace the key in it. Fix with: chown ${uid} ${dir}`;
  return undefined;
}
