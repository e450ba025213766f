/**
 * The agent's end of the hook scripts: a Unix STREAM socket (0600, in a 0700
 * directory, so only the agent's user — and root — can send presence) that
 * hostapd-action.sh and dnsmasq-script.sh reach through forward.mjs. One
 * short connection per event, one JSON line each (forwarded.ts). A message
 * over 4 KiB, or a connection that says nothing for 2 s, is dropped: the
 * socket is local, but its input is still input.
 */
import { EventEmitter } from 'node:events';
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname } from 'node:path';
import { TallyboxError } from '../../src/util/errors.js';
import type { PresenceEvent } from './events.js';
import { parseForwarded } from './forwarded.js';

export const MAX_MESSAGE_BYTES = 4096;

export interface EventSocketEvents {
  presence: [event: PresenceEvent];
}

export class EventSocketServer extends EventEmitter<EventSocketEvents> {
  readonly path: string;
  #server: Server | null = null;
  readonly stats = { messages: 0, ignored: 0, malformed: 0, oversized: 0 };

  constructor(opts: { path: string }) {
    super();
    this.path = opts.path;
  }

  async start(): Promise<void> {
    const dir = dirname(this.path);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    try {
      // A socket left by a previous run (crash) is ours to replace; any other file is not.
      if (lstatSync(this.path).isSocket()) unlinkSync(this.path);
      else throw new TallyboxError('WIFI_SOCKET_PATH_TAKEN', `${this.path} exists and is not a socket`);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
    }
    const server = createServer((conn) => {
      let buf = '';
      conn.setEncoding('utf8');
      conn.setTimeout(2000, () => conn.destroy());
      conn.on('data', (chunk: string) => {
        buf += chunk;
        if (buf.length > MAX_MESSAGE_BYTES) {
          this.stats.oversized++;
          conn.destroy();
          return;
        }
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          this.#line(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          nl = buf.indexOf('\n');
        }
      });
      conn.on('end', () => {
        if (buf.trim() !== '') this.#line(buf);
        buf = '';
        conn.end();
      });
      conn.on('error', () => undefined); // a hook that died mid-write: its event is lost, the server is not
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(this.path, 0o600);
    this.#server = server;
  }

  #line(line: string): void {
    const r = parseForwarded(line);
    if (r.ok) {
      this.stats.messages++;
      this.emit('presence', r.event);
    } else if (r.reason === 'ignored') this.stats.ignored++;
    else this.stats.malformed++;
  }

  async stop(): Promise<void> {
    const s = this.#server;
    this.#server = null;
    if (!s) return;
    await new Promise<void>((resolve) => s.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      // net.Server.close removes it already on most systems
    }
  }
}
