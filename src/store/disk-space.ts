/**
 * Free space on a data partition, looked up no more often than a decision
 * needs. The outbox refuses a punch that would eat into the space it keeps
 * for its WAL and deletes (DISK_FULL); a statfs per commit made that check a
 * syscall per punch on the event loop, which a fleet of agents on two cores
 * pays a thousand times over (issue 13).
 *
 * The rule: while the last lookup is younger than `intervalMs` (monotonic
 * clock) and, after what this process has written since (`consumes`, counted
 * by the caller), more than `marginBytes` would still be left above what the
 * caller needs, the remembered figure is used. Otherwise statfs is called
 * again — so near a full disk every decision looks (as before), and with
 * plenty of room there is one lookup per interval.
 *
 * What the remembered figure cannot know is another process filling the disk
 * meanwhile. That is seen at the next lookup (at most `intervalMs` later);
 * until then SQLite's own SQLITE_FULL still refuses a write that does not fit,
 * which the outbox reports as DISK_FULL too — nothing accepted is lost either way.
 */
import { statfsSync } from 'node:fs';

export interface DiskSpaceOptions {
  /** Longest time a lookup is reused (default 1,000 ms). */
  intervalMs?: number;
  /** Headroom above the caller's need below which every decision looks again (default 8 MiB). */
  marginBytes?: number;
  /** Monotonic milliseconds (default performance.now()). */
  monotonic?: () => number;
  /** Free bytes for an unprivileged writer on `dir` (default statfs's bavail × bsize). */
  statfs?: (dir: string) => number;
}

function freeBytes(dir: string): number {
  const st = statfsSync(dir);
  return Number(st.bavail) * Number(st.bsize);
}

export class DiskSpaceCheck {
  private readonly intervalMs: number;
  private readonly marginBytes: number;
  private readonly monotonic: () => number;
  private readonly statfs: (dir: string) => number;
  /** Free bytes at the last lookup; undefined before the first one or when statfs failed. */
  private known: number | undefined;
  private knownAt = 0;
  /** Bytes the caller said it wrote since that lookup. */
  private spent = 0;
  /** statfs calls so far. */
  lookups = 0;

  constructor(
    readonly dir: string,
    opts: DiskSpaceOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 1000;
    this.marginBytes = opts.marginBytes ?? 8 * 1024 * 1024;
    this.monotonic = opts.monotonic ?? (() => performance.now());
    this.statfs = opts.statfs ?? freeBytes;
  }

  /**
   * Free bytes (an estimate between lookups, see above) for a write that needs
   * `need` bytes to be left and will itself take about `consumes`. Undefined
   * when the filesystem cannot say (statfs unsupported).
   */
  free(need: number, consumes = 0): number | undefined {
    const now = this.monotonic();
    let free: number | undefined;
    if (this.known !== undefined && now - this.knownAt < this.intervalMs && this.known - this.spent >= need + this.marginBytes) {
      free = this.known - this.spent;
    } else {
      this.lookups++;
      try {
        free = this.statfs(this.dir);
      } catch {
        free = undefined; // statfs unsupported here: the caller falls back on SQLite's own SQLITE_FULL
      }
      this.known = free;
      this.knownAt = now;
      this.spent = 0;
    }
    if (free !== undefined && free >= need) this.spent += consumes;
    return free;
  }

  /** Forget the last lookup: the next decision looks again (after a refusal, or when space may have returned). */
  invalidate(): void {
    this.known = undefined;
  }
}
