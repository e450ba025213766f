/**
 * A device's own small disk, so "fill the disk" fills only that device: a
 * tmpfs mounted at the device's disk directory (root only; `mount -t tmpfs`),
 * holding its data directory. Filling writes one filler file until only a
 * little space is left; emptying deletes it. Without root (or where mounting
 * is not allowed) the device runs on the ordinary file system and the fault
 * is refused with LAB_DISK_FAULT_UNAVAILABLE, saying why.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TallyboxError } from '../../src/util/errors.js';

const mounted = new Set<string>();
let hook = false;

/** Unmount whatever is still mounted when the process exits (a failed test, an uncaught error). */
function installExitHook(): void {
  if (hook) return;
  hook = true;
  process.once('exit', () => {
    for (const dir of mounted) spawnSync('umount', ['-l', dir], { stdio: 'ignore' });
  });
}

export class DeviceDisk {
  readonly dir: string;
  readonly tmpfs: boolean;
  /** Why there is no tmpfs (when there is none). */
  readonly reason: string | undefined;
  readonly #filler: string;
  #full = false;

  private constructor(dir: string, tmpfs: boolean, reason?: string) {
    this.dir = dir;
    this.tmpfs = tmpfs;
    this.reason = reason;
    this.#filler = join(dir, 'lab-disk-filler');
  }

  static create(dir: string, sizeMiB: number): DeviceDisk {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (process.getuid?.() !== 0) return new DeviceDisk(dir, false, 'the lab is not running as root, so it cannot mount a tmpfs per device');
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
    if (r.status !== 0) return new DeviceDisk(dir, false, `mount -t tmpfs failed: ${(r.stderr || r.error?.message || '').trim()}`);
    installExitHook();
    mounted.add(dir);
    return new DeviceDisk(dir, true);
  }

  get full(): boolean {
    return this.#full;
  }

  freeBytes(): number {
    const st = statfsSync(this.dir);
    return Number(st.bavail) * Number(st.bsize);
  }

  /** Fill the disk up to `leaveBytes` free (true) or delete the filler (false). */
  setFull(full: boolean, leaveBytes = 16 * 1024): void {
    if (!this.tmpfs) throw new TallyboxError('LAB_DISK_FAULT_UNAVAILABLE', `cannot fill this device's disk: ${this.reason} (run the lab as root for a tmpfs per device)`);
    if (!full) {
      rmSync(this.#filler, { force: true });
      this.#full = false;
      return;
    }
    const fd = openSync(this.#filler, 'a', 0o600);
    try {
      const chunk = Buffer.alloc(256 * 1024);
      for (let free = this.freeBytes(); free > leaveBytes; free = this.freeBytes()) {
        try {
          writeSync(fd, chunk, 0, Math.min(chunk.length, free - leaveBytes));
        } catch {
          break; // ENOSPC: as full as it gets
        }
      }
    } finally {
      closeSync(fd);
    }
    this.#full = true;
  }

  unmount(): void {
    if (!this.tmpfs || !mounted.has(this.dir)) return;
    const r = spawnSync('umount', [this.dir], { stdio: 'ignore' });
    if (r.status !== 0) spawnSync('umount', ['-l', this.dir], { stdio: 'ignore' });
    mounted.delete(this.dir);
  }
}

/**
 * A lab that was SIGKILLed could not unmount its disks. At start, unmount
 * (and remove) those of labs under `tmpRoot` whose lab.pid names a process
 * that is gone; a running lab's are left alone. Returns what was swept.
 */
export function sweepStaleLabDisks(tmpRoot: string): string[] {
  let mounts: string;
  try {
    mounts = readFileSync('/proc/mounts', 'utf8');
  } catch {
    return []; // no /proc: nothing to sweep
  }
  const swept: string[] = [];
  const prefix = `${tmpRoot.replace(/\/$/, '')}/tallybox-lab-`;
  for (const line of mounts.split('\n')) {
    const at = line.split(' ')[1];
    if (!at || !at.startsWith(prefix) || !/\/devices\/[^/]+\/disk$/.test(at)) continue;
    const labDir = dirname(dirname(dirname(at)));
    let alive = true;
    try {
      const pid = Number(readFileSync(join(labDir, 'lab.pid'), 'utf8').trim());
      process.kill(pid, 0);
    } catch (err) {
      // ESRCH (gone) or no readable pid file: a dead lab's leftover. EPERM: alive, someone else's.
      alive = (err as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (alive) continue;
    if (spawnSync('umount', [at], { stdio: 'ignore' }).status !== 0) spawnSync('umount', ['-l', at], { stdio: 'ignore' });
    swept.push(at);
  }
  for (const labDir of new Set(swept.map((m) => dirname(dirname(dirname(m)))))) rmSync(labDir, { recursive: true, force: true });
  return swept;
}
