/**
 * What keeps files open, read from /proc (Linux): what processes really
 * hold, not what a store's own bookkeeping believes. For leak checks: a
 * connection that did not close, a tmpfs that cannot be unmounted.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

const isUnder = (dir: string, p: string) => p === dir || p.startsWith(`${dir}/`);

/** Paths under `dir` that process `pid` (default: this one) has open descriptors on, one entry per descriptor. */
export function descriptorsUnder(dir: string, pid: number | 'self' = 'self'): string[] {
  const out: string[] = [];
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out; // the process exited, or is not ours to inspect
  }
  for (const fd of fds) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (isUnder(dir, target)) out.push(target);
    } catch {
      // the descriptor closed while we looked (readdir's own, for one): nothing held
    }
  }
  return out;
}

/**
 * "pid:what path" for everything in /proc that keeps `dir` busy: open
 * descriptors, memory maps (SQLite's -shm stays mapped while a connection
 * uses it) and working directories.
 */
export function holdersOf(dir: string): string[] {
  const out = new Set<string>();
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    for (const path of descriptorsUnder(dir, Number(pid))) out.add(`${pid}:fd ${path}`);
    try {
      for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
        const path = line.split(/\s+/).slice(5).join(' ');
        if (isUnder(dir, path)) out.add(`${pid}:mmap ${path}`);
      }
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      if (isUnder(dir, cwd)) out.add(`${pid}:cwd ${cwd}`);
    } catch {
      // the process exited while we looked (or is not ours to inspect): it holds nothing we can name
    }
  }
  return [...out];
}
