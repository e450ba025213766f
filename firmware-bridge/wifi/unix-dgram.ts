/**
 * A Unix datagram socket (AF_UNIX, SOCK_DGRAM) over the native/unixdgram
 * addon: Node's dgram module speaks only UDP. One datagram in, one 'message'
 * out; errors carry the errno name as `code`. Used by the hostapd control
 * client and by the simulator's hostapd-compatible control socket.
 */
import { EventEmitter } from 'node:events';
import { existsSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TallyboxError } from '../../src/util/errors.js';

interface NativeDgram {
  socket(): number;
  bind(fd: number, path: string): void;
  connect(fd: number, path: string): void;
  send(fd: number, data: Buffer, path?: string): number;
  recv(fd: number): { data: Buffer; from: string } | null;
  close(fd: number): void;
  watch(fd: number, fn: () => void): object;
  unwatch(handle: object): void;
  ref(handle: object, on: boolean): void;
}

let native: NativeDgram | null = null;

/** The addon is built into native/unixdgram/build at the repository root, above both the sources and dist/. */
function loadNative(): NativeDgram {
  if (native) return native;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const addon = join(dir, 'native', 'unixdgram', 'build', 'Release', 'unixdgram.node');
    if (existsSync(addon)) {
      native = createRequire(import.meta.url)(addon) as NativeDgram;
      return native;
    }
    dir = dirname(dir);
  }
  throw new TallyboxError('UNIX_DGRAM_ADDON_MISSING', 'the Unix datagram socket addon is not built: run `npm install` or `npm run build` (needs python3, make and a C compiler)');
}

export interface UnixDgramEvents {
  message: [data: Buffer, from: string];
  error: [err: Error];
}

export class UnixDgramSocket extends EventEmitter<UnixDgramEvents> {
  readonly #n: NativeDgram;
  #fd: number;
  #watch: object | null = null;
  #boundPath: string | null = null;
  #closed = false;

  constructor() {
    super();
    this.#n = loadNative();
    this.#fd = this.#n.socket();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bind to a path (removing a stale socket file of ours first); removed again by close(). */
  bind(path: string, opts: { replace?: boolean } = {}): void {
    if (opts.replace) {
      try {
        unlinkSync(path);
      } catch {
        // nothing there: the usual case
      }
    }
    this.#n.bind(this.#fd, path);
    this.#boundPath = path;
  }

  connect(path: string): void {
    this.#n.connect(this.#fd, path);
  }

  /** Send one datagram (to the connected peer, or to `path`). Throws with the errno code (ECONNREFUSED: the peer's socket is gone). */
  send(data: string | Buffer, path?: string): void {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    if (path === undefined) this.#n.send(this.#fd, buf);
    else this.#n.send(this.#fd, buf, path);
  }

  /** Start delivering 'message' events. */
  listen(): this {
    if (this.#watch || this.#closed) return this;
    this.#watch = this.#n.watch(this.#fd, () => this.#drain());
    return this;
  }

  /** Whether a listening socket keeps the process alive (default: yes, like a net.Socket). */
  ref(on = true): this {
    if (this.#watch) this.#n.ref(this.#watch, on);
    return this;
  }

  #drain(): void {
    // Level-triggered poll: read until the queue is empty, so one wake-up never leaves a datagram behind.
    for (let i = 0; i < 256 && !this.#closed; i++) {
      let m: { data: Buffer; from: string } | null;
      try {
        m = this.#n.recv(this.#fd);
      } catch (err) {
        this.emit('error', err as Error);
        return;
      }
      if (!m) return;
      this.emit('message', m.data, m.from);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#watch) this.#n.unwatch(this.#watch);
    this.#watch = null;
    try {
      this.#n.close(this.#fd);
    } catch {
      // closing an fd can only fail for EBADF/EINTR here; the socket is unusable either way
    }
    if (this.#boundPath) {
      try {
        unlinkSync(this.#boundPath);
      } catch {
        // already removed (a cleaned-up temp dir): nothing left to do
      }
    }
  }
}
