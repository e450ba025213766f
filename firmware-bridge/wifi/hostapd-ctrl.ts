/**
 * A client of hostapd's control interface for one interface
 * (`/var/run/hostapd/wlan0`, a Unix datagram socket): binds its own socket,
 * sends ATTACH, and turns AP-STA-CONNECTED / AP-STA-DISCONNECTED into typed
 * events. After every (re)attach it lists the associated stations
 * (STA-FIRST / STA-NEXT), so a restart of hostapd or of the agent loses no
 * one. PING is the heartbeat. Reconnecting is the supervisor's job
 * (src/roles/kit/supervisor.ts): `open()` is one complete bring-up, and
 * `onLost` reports a socket that vanished (hostapd restarted or stopped).
 */
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { TallyboxError } from '../../src/util/errors.js';
import { SerialQueue } from '../../src/util/serial-queue.js';
import type { PresenceEvent } from './events.js';
import { parseHostapdEvent, parseStaReply, parseStatusSsid, stationChange } from './hostapd-parse.js';
import { UnixDgramSocket } from './unix-dgram.js';

export interface HostapdControlOptions {
  /** hostapd's control socket, e.g. /var/run/hostapd/wlan0. */
  socketPath: string;
  /** Where this client binds its own socket (a 0700 directory of the agent's; created). */
  clientDir: string;
  /** Per-request timeout (default 2000 ms). */
  timeoutMs?: number;
}

export interface HostapdControlEvents {
  presence: [event: PresenceEvent];
  /** After each attach: who is associated now (the catch-up). */
  stations: [iface: string, macs: string[]];
}

let clientSeq = 0;

export class HostapdControl extends EventEmitter<HostapdControlEvents> {
  readonly iface: string;
  readonly socketPath: string;
  readonly #clientDir: string;
  readonly #timeoutMs: number;
  #sock: UnixDgramSocket | null = null;
  #pending: { resolve: (s: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | null = null;
  /** The protocol has no request ids: one request at a time. */
  readonly #queue = new SerialQueue();
  #ino = 0;
  #lostListeners = new Set<(err: Error) => void>();
  #dirWatch: FSWatcher | null = null;
  /** The SSID this interface serves, from STATUS after each attach (undefined: hostapd did not say). */
  ssid: string | undefined;
  readonly stats = { events: 0, joins: 0, leaves: 0, ignored: 0, attaches: 0 };

  constructor(opts: HostapdControlOptions) {
    super();
    this.socketPath = opts.socketPath;
    this.iface = basename(opts.socketPath);
    this.#clientDir = opts.clientDir;
    this.#timeoutMs = opts.timeoutMs ?? 2000;
  }

  get attached(): boolean {
    return this.#sock !== null;
  }

  /** Bring-up: bind, connect, ATTACH, catch-up. Rejects HOSTAPD_SOCKET_MISSING when hostapd is not there. */
  async open(): Promise<string[]> {
    this.close();
    let ino: number;
    try {
      const st = statSync(this.socketPath);
      if (!st.isSocket()) throw new TallyboxError('HOSTAPD_SOCKET_MISSING', `${this.socketPath} is not a socket`);
      ino = st.ino;
    } catch (err) {
      if (err instanceof TallyboxError) throw err;
      throw new TallyboxError('HOSTAPD_SOCKET_MISSING', `no hostapd control socket at ${this.socketPath} (is hostapd running with ctrl_interface?)`, {}, { cause: err });
    }
    mkdirSync(this.#clientDir, { recursive: true, mode: 0o700 });
    const sock = new UnixDgramSocket();
    try {
      sock.bind(join(this.#clientDir, `c${process.pid}-${++clientSeq}`), { replace: true });
      sock.connect(this.socketPath);
    } catch (err) {
      sock.close();
      throw new TallyboxError('HOSTAPD_CONNECT_FAILED', `cannot connect to ${this.socketPath}: ${(err as { code?: string }).code ?? err}`, {}, { cause: err });
    }
    sock.on('message', (data) => this.#onMessage(data.toString('utf8')));
    sock.on('error', (err) => this.#lost(err));
    sock.listen();
    this.#sock = sock;
    this.#ino = ino;
    try {
      const ok = await this.request('ATTACH');
      if (ok.trim() !== 'OK') throw new TallyboxError('HOSTAPD_ATTACH_REFUSED', `ATTACH answered ${JSON.stringify(ok.trim().slice(0, 40))}`);
      this.stats.attaches++;
      this.#watchDir();
      // Before the catch-up, so its stations are already known by SSID.
      this.ssid = parseStatusSsid(await this.request('STATUS'), this.iface);
      const macs = await this.stations();
      this.emit('stations', this.iface, macs);
      return macs;
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** Who is associated (and authorized) now: STA-FIRST, then STA-NEXT until the end of the list. */
  async stations(): Promise<string[]> {
    const out: string[] = [];
    let reply = await this.request('STA-FIRST');
    for (let i = 0; i < 4096; i++) {
      const sta = parseStaReply(reply);
      if (!sta) break;
      if (sta.authorized) out.push(sta.mac);
      reply = await this.request(`STA-NEXT ${sta.mac}`);
    }
    return out;
  }

  /** The heartbeat: PING → PONG. */
  async ping(): Promise<void> {
    const r = await this.request('PING');
    if (r.trim() !== 'PONG') throw new TallyboxError('HOSTAPD_BAD_REPLY', `PING answered ${JSON.stringify(r.trim().slice(0, 40))}`);
    // A socket re-created at the same path (hostapd restarted) answers nothing to our old connection, but check anyway.
    if (!this.#sameSocket()) throw new TallyboxError('HOSTAPD_RESTARTED', 'hostapd control socket was re-created');
  }

  /** One request, one reply (serialised: the protocol has no request ids). */
  request(cmd: string): Promise<string> {
    return this.#queue.run(() => this.#requestNow(cmd));
  }

  #requestNow(cmd: string): Promise<string> {
    const sock = this.#sock;
    if (!sock) return Promise.reject(new TallyboxError('HOSTAPD_NOT_ATTACHED', 'not attached to hostapd'));
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending = null;
        reject(new TallyboxError('HOSTAPD_TIMEOUT', `hostapd did not answer ${cmd.split(' ')[0]} within ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      this.#pending = { resolve, reject, timer };
      try {
        sock.send(cmd);
      } catch (err) {
        clearTimeout(timer);
        this.#pending = null;
        const code = (err as { code?: string }).code ?? 'ERROR';
        // ECONNREFUSED / ENOENT: hostapd's end is gone (it stopped or restarted).
        reject(new TallyboxError('HOSTAPD_GONE', `hostapd control socket ${this.socketPath}: ${code}`, {}, { cause: err }));
      }
    });
  }

  #onMessage(msg: string): void {
    if (msg.startsWith('<')) {
      const ev = parseHostapdEvent(msg);
      if (!ev) return;
      this.stats.events++;
      const ch = stationChange(ev);
      // Unknown and uninteresting events are counted, not logged: a busy AP sends many.
      if (!ch) {
        this.stats.ignored++;
        return;
      }
      if (ch.change === 'joined') this.stats.joins++;
      else this.stats.leaves++;
      this.emit('presence', { type: ch.change, source: 'hostapd', iface: this.iface, mac: ch.mac });
      return;
    }
    const p = this.#pending;
    if (!p) return; // a late reply after a timeout: dropped, never taken for the next request's
    this.#pending = null;
    clearTimeout(p.timer);
    p.resolve(msg);
  }

  #sameSocket(): boolean {
    try {
      return statSync(this.socketPath).ino === this.#ino;
    } catch {
      return false;
    }
  }

  /** The control directory is watched so a vanished or re-created socket is a loss at once, not at the next heartbeat. */
  #watchDir(): void {
    const dir = dirname(this.socketPath);
    if (!existsSync(dir)) return;
    try {
      this.#dirWatch = watch(dir, { persistent: false }, (_e, name) => {
        if (name !== null && name !== this.iface) return;
        if (!this.#sameSocket()) this.#lost(new TallyboxError('HOSTAPD_GONE', `hostapd control socket ${this.socketPath} vanished`));
      });
      this.#dirWatch.on('error', () => undefined); // the directory itself removed: the heartbeat finds out
    } catch {
      // inotify exhausted: the PING heartbeat still detects the loss
      this.#dirWatch = null;
    }
  }

  #lost(err: Error): void {
    if (!this.#sock) return;
    this.close();
    for (const fn of this.#lostListeners) fn(err);
  }

  /** Unsolicited loss (for the supervisor); returns the unsubscribe. */
  onLost(fn: (err: Error) => void): () => void {
    this.#lostListeners.add(fn);
    return () => this.#lostListeners.delete(fn);
  }

  close(): void {
    this.#dirWatch?.close();
    this.#dirWatch = null;
    const sock = this.#sock;
    this.#sock = null;
    if (sock) {
      // Best effort: a DETACH to a live hostapd frees its monitor slot at once.
      try {
        sock.send('DETACH');
      } catch {
        // hostapd already gone: nothing to detach from
      }
      sock.close();
    }
    const p = this.#pending;
    this.#pending = null;
    if (p) {
      clearTimeout(p.timer);
      p.reject(new TallyboxError('HOSTAPD_GONE', 'control connection closed'));
    }
  }
}
