/**
 * Watches dnsmasq's lease file and reports the difference between two
 * rewrites as joins (a new MAC) and leaves (a MAC gone). inotify on the
 * directory (dnsmasq may replace the file, which breaks a watch on the file
 * itself) plus a slow stat poll as the fallback; rewrites closer together
 * than `settleMs` are read once. An expired lease still in the file is not
 * present. A missing file is an empty one (dnsmasq has not written it yet);
 * an unreadable one is an error for the supervisor.
 */
import { EventEmitter } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { TallyboxError } from '../../src/util/errors.js';
import type { PresenceEvent } from './events.js';
import { parseLeaseFile, type Lease, type LeaseLineCache } from './leases.js';

export interface LeaseWatcherOptions {
  path: string;
  /** Reported as the interface of its events (default 'dhcp'). */
  iface?: string;
  /** Coalesce rewrites within this many ms (default 5). */
  settleMs?: number;
  /** Stat poll, in case inotify misses a change (default 1000 ms; 0: off). */
  pollMs?: number;
  /** Wall clock in seconds for lease expiry (default Date.now()/1000). */
  nowSec?: () => number;
}

export interface LeaseWatcherEvents {
  presence: [event: PresenceEvent];
  /** Lines skipped in one read (counted; never their content: it holds MACs and hostnames). */
  skipped: [counts: { malformed: number; torn: number }];
  error: [err: Error];
}

/** What identifies one version of the file: a rewrite changes the inode (rename) or size/mtime/ctime (in place). */
function signature(st: { ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint }): string {
  return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

export class LeaseWatcher extends EventEmitter<LeaseWatcherEvents> {
  readonly path: string;
  readonly #iface: string;
  readonly #settleMs: number;
  readonly #pollMs: number;
  readonly #nowSec: () => number;
  #current = new Map<string, Lease>();
  #fsw: FSWatcher | null = null;
  #poll: NodeJS.Timeout | null = null;
  #settle: NodeJS.Timeout | null = null;
  #reading: Promise<void> | null = null;
  #again = false;
  #sig = '';
  /** No lease file read yet: the leases of the first one found were there before this watcher (catch-up, not arrivals). */
  #catchUp = true;
  #lines: LeaseLineCache = new Map();
  #running = false;
  /** reads: files parsed; unchanged: wake-ups (inotify, poll) for a file identical in inode, size, mtime and ctime. */
  readonly stats = { reads: 0, unchanged: 0, malformed: 0, torn: 0, joins: 0, leaves: 0 };

  constructor(opts: LeaseWatcherOptions) {
    super();
    this.path = opts.path;
    this.#iface = opts.iface ?? 'dhcp';
    this.#settleMs = opts.settleMs ?? 5;
    this.#pollMs = opts.pollMs ?? 1000;
    this.#nowSec = opts.nowSec ?? (() => Date.now() / 1000);
  }

  /** The leases present after the last read (copies). */
  get leases(): Lease[] {
    return [...this.#current.values()].map((l) => ({ ...l }));
  }

  /** First read (rejects when the file exists but cannot be read), then watch. */
  async start(): Promise<void> {
    this.#running = true;
    await this.#readNow();
    try {
      this.#fsw = watch(dirname(this.path), { persistent: false }, (_e, name) => {
        if (name === null || name === basename(this.path)) this.kick();
      });
      this.#fsw.on('error', () => undefined); // directory gone: the poll keeps trying
    } catch {
      // no inotify watches left: the poll alone notices changes
      this.#fsw = null;
    }
    if (this.#pollMs > 0) {
      this.#poll = setInterval(() => void this.#pollOnce(), this.#pollMs);
      this.#poll.unref?.();
    }
  }

  stop(): void {
    this.#running = false;
    this.#fsw?.close();
    this.#fsw = null;
    if (this.#poll) clearInterval(this.#poll);
    if (this.#settle) clearTimeout(this.#settle);
    this.#poll = this.#settle = null;
  }

  /** Read soon (after settleMs): the file changed. */
  kick(): void {
    if (!this.#running || this.#settle) return;
    this.#settle = setTimeout(() => {
      this.#settle = null;
      void this.read().catch((err: unknown) => this.emit('error', err as Error));
    }, this.#settleMs);
  }

  /** Read now; concurrent calls run one read plus one more after it. */
  async read(): Promise<void> {
    if (this.#reading) {
      this.#again = true;
      return this.#reading;
    }
    this.#reading = (async () => {
      try {
        do {
          this.#again = false;
          await this.#readNow();
        } while (this.#again);
      } finally {
        this.#reading = null;
      }
    })();
    return this.#reading;
  }

  async #pollOnce(): Promise<void> {
    try {
      const sig = signature(await stat(this.path, { bigint: true }));
      if (sig !== this.#sig) this.kick();
    } catch {
      if (this.#sig !== 'missing') this.kick();
    }
  }

  async #readNow(): Promise<void> {
    let text: string;
    try {
      const sig = signature(await stat(this.path, { bigint: true }));
      // One rewrite wakes inotify more than once; an unchanged file (nanosecond mtime and ctime) is not parsed twice.
      if (sig === this.#sig) {
        this.stats.unchanged++;
        return;
      }
      this.#sig = sig;
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'ENOENT') throw new TallyboxError('LEASE_FILE_UNREADABLE', `cannot read the lease file ${this.path}: ${code ?? err}`, {}, { cause: err });
      this.#sig = 'missing';
      text = '';
    }
    this.stats.reads++;
    const catchUp = this.#catchUp;
    if (this.#sig !== 'missing') this.#catchUp = false;
    const cache = { prev: this.#lines, next: new Map() as LeaseLineCache };
    const parsed = parseLeaseFile(text, cache);
    this.#lines = cache.next;
    if (parsed.malformed || parsed.torn) {
      this.stats.malformed += parsed.malformed;
      this.stats.torn += parsed.torn;
      this.emit('skipped', { malformed: parsed.malformed, torn: parsed.torn });
      // A torn tail is a rewrite in progress: read again once it has settled (only if the file changed by then).
      if (parsed.torn) this.kick();
    }
    const now = this.#nowSec();
    const next = new Map<string, Lease>();
    for (const l of parsed.leases) if (l.expiry === 0 || l.expiry > now) next.set(l.mac, l);
    // A torn read may have lost the last lease: keep what was there rather than report a false leave.
    if (parsed.torn) for (const [mac, l] of this.#current) if (!next.has(mac)) next.set(mac, l);
    const prev = this.#current;
    this.#current = next;
    for (const [mac, l] of next) {
      const old = prev.get(mac);
      if (old && old.hostname === l.hostname && old.clientId === l.clientId) continue;
      if (!old) this.stats.joins++;
      const fp = { ...(l.clientId ? { clientId: l.clientId } : {}), ...(l.hostname ? { hostname: l.hostname } : {}) };
      this.emit('presence', { type: 'joined', source: 'dnsmasq-lease', iface: this.#iface, mac, ...(Object.keys(fp).length ? { fingerprint: fp } : {}), ...(catchUp ? { catchUp: true } : {}) });
    }
    for (const mac of prev.keys()) {
      if (next.has(mac)) continue;
      this.stats.leaves++;
      this.emit('presence', { type: 'left', source: 'dnsmasq-lease', iface: this.#iface, mac });
    }
  }
}
