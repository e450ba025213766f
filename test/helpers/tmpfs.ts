/**
 * A real tmpfs of a given size for disk-full tests (needs root: CI runs as
 * root; elsewhere `mounted` is false and the suite skips).
 *
 * A mount outlives the process that made it, so every way out unmounts it:
 * - the test's own `afterAll(() => fs.dispose())`;
 * - a file-level `afterAll` registered here, for the run where a name filter
 *   (`-t`) skips the describe that owns the mount (vitest runs no hooks of a
 *   skipped suite);
 * - the process's `exit` event and SIGINT/SIGTERM/SIGHUP (Ctrl-C, or vitest
 *   stopping its fork with SIGTERM and SIGKILL 500 ms later): a lazy unmount,
 *   synchronous, then the signal's default action;
 * - SIGKILL leaves no chance, so each mount records its owner (pid and start
 *   time) beside it, and the next `mountTmpfs` detaches every mount whose
 *   owner is gone.
 *
 * Unmounting waits until nothing holds the mount: a file closed moments
 * earlier (a SQLite connection's last close on the thread pool, under load)
 * can keep it busy for a while. If it stays busy, it is detached lazily and
 * a LEAK warning names every process and file still open on it — the next
 * engineer sees what leaked.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { holdersOf } from './open-files.js';

export interface Tmpfs {
  /** The mount point (an empty directory when not mounted). */
  readonly dir: string;
  readonly mounted: boolean;
  /** Unmount (waiting up to `timeoutMs` for it to be free) and remove the directories. Idempotent. */
  dispose(timeoutMs?: number): Promise<void>;
}

/** The marker beside a mount point: who mounted it. */
const OWNER_FILE = 'tallybox-test-owner';
/** Directory names the helper creates (prefix + mkdtemp's 6 characters). */
const OURS = /^tbx-[A-Za-z0-9-]*-[A-Za-z0-9]{6}$/;

/** Mounts of this process not yet unmounted: mount point → base directory. */
const live = new Map<string, string>();

export function mountTmpfs(prefix: string, size: string): Tmpfs {
  sweepOrphans();
  const base = mkdtempSync(join(tmpdir(), prefix));
  const dir = join(base, 'mnt');
  mkdirSync(dir);
  let mounted = false;
  if (process.getuid?.() === 0) {
    // The owner is on disk before the mount exists: a SIGKILL between the two leaves a marker, never an unowned mount.
    writeFileSync(join(base, OWNER_FILE), `${process.pid} ${startTime(process.pid)}\n`);
    mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]).status === 0;
  }
  if (mounted) {
    live.set(dir, base);
    installExitHandlers();
  }
  let disposed: Promise<void> | undefined;
  const tmpfs: Tmpfs = {
    dir,
    mounted,
    dispose(timeoutMs = 15_000) {
      disposed ??= unmount(dir, base, mounted, timeoutMs);
      return disposed;
    },
  };
  // Runs even when a name filter skips the describe that owns the mount (and its afterAll).
  afterAll(() => tmpfs.dispose());
  return tmpfs;
}

async function unmount(dir: string, base: string, mounted: boolean, timeoutMs: number): Promise<void> {
  if (mounted) {
    const t0 = performance.now();
    for (;;) {
      if (spawnSync('umount', [dir]).status === 0) break;
      if (!isMountPoint(dir)) break; // already gone (detached by someone else): nothing left to wait for
      if (performance.now() - t0 > timeoutMs) {
        // Detached lazily (the next test must not inherit it) and reported, not failed: the
        // tests on it have passed; what still holds it is a leak to chase, named here.
        const holders = holdersOf(dir);
        spawnSync('umount', ['-l', dir]);
        live.delete(dir);
        rmSync(base, { recursive: true, force: true });
        console.warn(`tallybox-test: LEAK: tmpfs ${dir} still busy after ${timeoutMs} ms, detached lazily; open on it: ${holders.join(', ') || 'nothing visible in /proc'}`);
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    live.delete(dir);
  }
  rmSync(base, { recursive: true, force: true });
}

/** Synchronous last resort: detach every mount still live (whatever holds it keeps its files until it closes them). */
function detachAll(): void {
  for (const [dir, base] of live) {
    spawnSync('umount', ['-l', dir]);
    rmSync(base, { recursive: true, force: true });
  }
  live.clear();
}

let handlersInstalled = false;
function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', detachAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      detachAll();
      process.off(sig, onSignal);
      // Nobody else handles it: take the signal's default action (die by it), as without us.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/** Detach and remove mounts (and markers) of ours whose owner process no longer exists. */
function sweepOrphans(): void {
  if (process.getuid?.() !== 0) return;
  const mounts = mountPoints();
  let names: string[];
  try {
    names = readdirSync(tmpdir()).filter((n) => OURS.test(n));
  } catch {
    return; // no readable tmpdir: nothing to sweep, and mkdtemp will say what is wrong
  }
  for (const name of names) {
    const base = join(tmpdir(), name);
    let owner: string;
    try {
      owner = readFileSync(join(base, OWNER_FILE), 'utf8');
    } catch {
      continue; // no marker: not a mount of this helper (or one made before markers existed); not ours to judge
    }
    const [pid, start] = owner.trim().split(' ');
    if (startTime(Number(pid)) === start) continue; // its owner is still running (another engineer's test)
    const dir = join(base, 'mnt');
    if (mounts.has(dir)) {
      spawnSync('umount', ['-l', dir]);
      console.warn(`tallybox-test: detached a tmpfs ${dir} left mounted by process ${pid}, which is gone`);
    }
    rmSync(base, { recursive: true, force: true });
  }
}

/**
 * A process's start time (clock ticks since boot, /proc/PID/stat field 22), or '' if it is gone:
 * no such process, or a zombie (dead, holding nothing, only not yet reaped by its parent).
 */
function startTime(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may contain spaces: state is field 3.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' || fields[0] === 'X' ? '' : (fields[19] ?? '');
  } catch {
    return ''; // no such process (it exited): no start time, so the mount's owner is gone
  }
}

/** Mount points of this mount namespace (octal escapes of /proc/self/mountinfo decoded). */
function mountPoints(): Set<string> {
  const out = new Set<string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const field = line.split(' ')[4];
    if (field) out.add(field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))));
  }
  return out;
}

function isMountPoint(dir: string): boolean {
  return mountPoints().has(dir);
}
