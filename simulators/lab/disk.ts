/**
 * A device's own small disk, so "fill the disk" fills only that device: a
 * tmpfs mounted at the device's disk directory (root only; `mount -t tmpfs`),
 * holding its data directory. Filling writes one filler file until only a
 * little space is left; emptying deletes it. Without root (or where mounting
 * is not allowed) the device runs on the ordinary file system and the fault
 * is refused with LAB_DISK_FAULT_UNAVAILABLE, saying why.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { join } from 'node:path';
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
