/**
 * A real pseudo-terminal pair made by socat, shared by the serial simulators
 * (fingerprint, face): the host opens `link` with
 * serialport exactly as it would /dev/ttyS1; the simulator opens `simPath`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { lstat, unlink } from 'node:fs/promises';
import { TallyboxError } from '../../src/util/errors.js';

export interface PtyPairOptions {
  /** Stable symlink for the host side, e.g. /tmp/tallybox-r30x. */
  link: string;
  /** Symlink for the simulator side; default `${link}.sim`. */
  simPath?: string;
  /** Default 'socat' on PATH. */
  socat?: string;
  /** Give up waiting for socat after this long; default 5000 ms. */
  timeoutMs?: number;
}

export interface PtyPair {
  link: string;
  simPath: string;
  pid: number;
  /** Resolves once socat has exited (it removes both symlinks on the way out). */
  readonly exited: Promise<number | null>;
  /** Stop socat (SIGTERM, then SIGKILL after 1 s). Idempotent. */
  close(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Last line of defence: never leave a socat behind, even when the caller forgot close(). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

async function removeStaleSymlink(path: string): Promise<void> {
  try {
    if ((await lstat(path)).isSymbolicLink()) await unlink(path);
  } catch {
    // Not there: fine.
  }
}

/** socat would silently replace (and on exit delete) whatever is at a link path: refuse anything but a symlink. */
async function assertLinkPathFree(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (st && !st.isSymbolicLink()) {
    throw new TallyboxError('PTY_PATH_EXISTS', `cannot create a pseudo-terminal link at ${path}: a file or device is already there`, { path });
  }
}

export async function createPtyPair(opts: PtyPairOptions): Promise<PtyPair> {
  const link = opts.link;
  const simPath = opts.simPath ?? `${link}.sim`;
  const timeoutMs = opts.timeoutMs ?? 5000;
  await assertLinkPathFree(link);
  await assertLinkPathFree(simPath);
  // A symlink left by a killed run is stale: replace it.
  await removeStaleSymlink(link);
  await removeStaleSymlink(simPath);
  installExitHook();
  const child = spawn(opts.socat ?? 'socat', ['-d', '-d', `PTY,link=${link},raw,echo=0`, `PTY,link=${simPath},raw,echo=0`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  live.add(child);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      live.delete(child);
      resolve(code);
    });
    child.once('error', () => {
      live.delete(child);
      resolve(null);
    });
  });
  let log = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`socat did not start within ${timeoutMs} ms: ${log.trim()}`)), timeoutMs);
      child.stderr?.on('data', (d: Buffer) => {
        log += d.toString();
        if (log.includes('starting data transfer loop')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`socat exited with ${code}: ${log.trim()}`));
      });
    });
  } catch (err) {
    child.kill('SIGKILL');
    throw new TallyboxError('PTY_START_FAILED', `cannot create a pseudo-terminal at ${link}: ${(err as Error).message}`, { link }, { cause: err });
  }
  // Keep draining stderr so socat never blocks on a full pipe.
  child.stderr?.resume();
  let closing: Promise<void> | null = null;
  return {
    link,
    simPath,
    pid: child.pid ?? -1,
    exited,
    close() {
      closing ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 1000);
        await exited;
        clearTimeout(timer);
        await removeStaleSymlink(link);
        await removeStaleSymlink(simPath);
      })();
      return closing;
    },
  };
}
