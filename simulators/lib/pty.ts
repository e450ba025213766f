/**
 * A real pseudo-terminal for the serial simulators (fingerprint, face): the
 * host opens `link` with serialport exactly as it would open /dev/ttyS1; the
 * simulator holds the other end (the pty master) as a ByteTransport.
 *
 * Made with openpty(3) through a small Node-API addon (native/ptypair, built
 * by node-gyp at `npm install`), so nothing but `npm install` is needed: no
 * socat. Why not socat: a system program the user must install, and a relay
 * process with two ptys and a copy loop between them (one more hop each way).
 * Why not node-pty: it exists to spawn a shell in a terminal; its open() also
 * reads the slave end (it would eat the host's bytes) and leaves the line in
 * cooked mode with echo. See README "Pseudo-terminals" for the measurements.
 *
 * Semantics the tests rely on, kept from the socat version:
 *  - the host may close and reopen `link` at will: the pair stays (this module
 *    keeps one slave descriptor open, so the master never reads EIO when the
 *    host closes, just like socat kept its side open);
 *  - close()/hangup() closes the master: the host's next read gets EIO (a
 *    hangup, as when a USB-serial adapter is pulled), serialport reports
 *    'close', and `link` disappears, so opening it fails until a new pair;
 *  - a stale symlink at `link` (a killed run) is replaced; anything that is not
 *    a symlink is refused with PTY_PATH_EXISTS and left alone.
 */
import { closeSync, existsSync, lstatSync, readlinkSync, renameSync, symlinkSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ReadStream } from 'node:tty';
import { fileURLToPath } from 'node:url';
import { BaseTransport } from '../../firmware-bridge/transport/base.js';
import type { ByteTransport } from '../../firmware-bridge/transport/types.js';
import { TallyboxError, errorMessage } from '../../src/util/errors.js';

export interface PtyPairOptions {
  /** Stable symlink for the host side, e.g. /tmp/tallybox-r30x. */
  link: string;
  /** A device-end write that has not been taken by the kernel after this long fails; default 2000 ms. */
  writeTimeoutMs?: number;
}

export interface PtyPair {
  /** The symlink the host opens. */
  readonly link: string;
  /** The kernel's name of the host end (where `link` points), e.g. /dev/pts/3. */
  readonly slavePath: string;
  /** The simulator's end (the pty master), already open. Closing it is close(). */
  readonly device: ByteTransport;
  /** Resolves once the pty is gone: close(), hangup(), or the master failed. */
  readonly closed: Promise<void>;
  /** Stop taking bytes from the host (its writes then fill the pty buffer and stop draining). */
  pauseReading(): void;
  resumeReading(): void;
  /** The device end vanishes without the simulator asking (as a module losing power with its cable). */
  hangup(): void;
  /** Remove `link`, then close the master (the host sees a hangup). Idempotent. */
  close(): Promise<void>;
}

interface NativePty {
  open(): { master: number; slave: number; path: string };
}

let native: NativePty | null = null;

/** The addon lives in native/ptypair/build at the repository root, above both src and dist. */
function loadNative(): NativePty {
  if (native) return native;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const addon = join(dir, 'native', 'ptypair', 'build', 'Release', 'ptypair.node');
    if (existsSync(addon)) {
      native = createRequire(import.meta.url)(addon) as NativePty;
      return native;
    }
    dir = dirname(dir);
  }
  throw new TallyboxError('PTY_ADDON_MISSING', 'the pseudo-terminal addon is not built: run `npm install` or `npm run build` (needs python3, make and a C compiler)');
}

/** Links this process made and still owns: removed at exit, even if the caller forgot close(). */
const liveLinks = new Map<string, string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const [link, target] of liveLinks) removeLinkIfOurs(link, target);
  });
}

/** Remove `link` only while it still points at our pty: a newer pair may own the path by now. */
function removeLinkIfOurs(link: string, target: string): void {
  try {
    if (readlinkSync(link) === target) unlinkSync(link);
  } catch {
    // Already gone (or replaced by a non-link we must not touch): nothing to do.
  }
}

/** Refuse anything but a symlink (or nothing) at a link path: a file or device there is someone's. */
function assertLinkPathFree(path: string): void {
  let isLink = true;
  try {
    isLink = lstatSync(path).isSymbolicLink();
  } catch {
    // ENOENT: free.
  }
  if (!isLink) {
    throw new TallyboxError('PTY_PATH_EXISTS', `cannot create a pseudo-terminal link at ${path}: a file or device is already there`, { path });
  }
}

/** The pty master as a ByteTransport, read and written through libuv (non-blocking). */
class PtyMasterTransport extends BaseTransport {
  readonly description: string;
  readonly #stream: ReadStream;
  readonly #writeTimeoutMs: number;
  readonly closed: Promise<void>;
  #closing = false;

  constructor(opts: { fd: number; slavePath: string; writeTimeoutMs: number }) {
    super();
    this.description = `pty-master:${opts.slavePath}`;
    this.#writeTimeoutMs = opts.writeTimeoutMs;
    // tty.ReadStream is a full duplex socket over a libuv TTY handle; unlike
    // tty.WriteStream it does not switch the descriptor to blocking writes,
    // so a host that stops reading never stalls this process.
    this.#stream = new ReadStream(opts.fd);
    let lastError: Error | undefined;
    this.#stream.on('data', (chunk: Buffer) => this.emit('data', chunk));
    this.#stream.on('error', (err: Error) => {
      lastError = err;
    });
    this.closed = new Promise<void>((resolve) => {
      this.#stream.once('close', () => {
        if (this.status === 'open') this.setStatus('closed', lastError ?? new Error('pty hung up'));
        resolve();
      });
    });
    this.setStatus('opening');
    this.setStatus('open');
  }

  /** A master cannot be reopened: a closed pair is gone, make a new one. */
  async open(): Promise<void> {
    if (this.status === 'open') return;
    throw new TallyboxError('TRANSPORT_OPEN_FAILED', `cannot open ${this.description}: the pseudo-terminal is closed`);
  }

  async write(bytes: Uint8Array): Promise<void> {
    this.assertOpen();
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`not drained after ${this.#writeTimeoutMs} ms`)), this.#writeTimeoutMs);
        this.#stream.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), (err) => (err ? reject(err) : resolve()));
      });
    } catch (err) {
      throw new TallyboxError('TRANSPORT_WRITE_FAILED', `write to ${this.description} failed: ${errorMessage(err)}`, {}, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  pause(): void {
    this.#stream.pause();
  }
  resume(): void {
    this.#stream.resume();
  }

  /** Abrupt: the stream goes without a 'closing' step, so listeners see an unasked-for close. */
  hangup(): void {
    this.#stream.destroy();
  }

  async close(): Promise<void> {
    if (this.status !== 'open' || this.#closing) return this.closed;
    this.#closing = true;
    this.setStatus('closing');
    this.#stream.destroy();
    await this.closed;
    this.setStatus('closed');
  }
}

export async function createPtyPair(opts: PtyPairOptions): Promise<PtyPair> {
  const link = opts.link;
  assertLinkPathFree(link);
  const addon = loadNative();
  let fds: { master: number; slave: number; path: string };
  try {
    fds = addon.open();
  } catch (err) {
    throw new TallyboxError('PTY_START_FAILED', `cannot create a pseudo-terminal at ${link}: ${errorMessage(err)}`, { link }, { cause: err });
  }
  const slavePath = fds.path;
  // Atomic replacement of a stale link: make the new one beside it, then rename over.
  const tmp = `${link}.${process.pid}.${Math.random().toString(36).slice(2, 8)}.tmp`;
  try {
    symlinkSync(slavePath, tmp);
    renameSync(tmp, link);
  } catch (err) {
    for (const fd of [fds.master, fds.slave]) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // never created: nothing to clean
    }
    throw new TallyboxError('PTY_START_FAILED', `cannot create a pseudo-terminal link at ${link}: ${errorMessage(err)}`, { link }, { cause: err });
  }
  installExitHook();
  liveLinks.set(link, slavePath);
  const device = new PtyMasterTransport({ fd: fds.master, slavePath, writeTimeoutMs: opts.writeTimeoutMs ?? 2000 });
  // Our slave descriptor: never read, only held so that a host closing the port
  // does not hang up the master (the device is still plugged in).
  let slaveFd: number | null = fds.slave;
  const release = () => {
    if (liveLinks.get(link) === slavePath) liveLinks.delete(link);
    removeLinkIfOurs(link, slavePath);
    if (slaveFd !== null) closeSync(slaveFd);
    slaveFd = null;
  };
  // However the master goes (close, hangup, failure), the link and the held slave go with it.
  const closed = device.closed.then(release);
  return {
    link,
    slavePath,
    device,
    closed,
    pauseReading: () => device.pause(),
    resumeReading: () => device.resume(),
    hangup: () => device.hangup(),
    async close() {
      // The link first, so a host retrying right now gets ENOENT, not a dying pty.
      removeLinkIfOurs(link, slavePath);
      await device.close();
      await closed;
    },
  };
}
