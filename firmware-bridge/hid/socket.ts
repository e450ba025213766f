/**
 * A HID report transport over a Unix stream socket: how a card reader in
 * another process (the `tallybox-sim card --serve PATH` simulator, or a
 * hidraw-forwarding helper on a device whose reader the agent's user cannot
 * open) reaches the agent. Configured as `m2.cardReader.device: PATH`.
 *
 * Wire format: each input report as one length byte (1..64) followed by the
 * report's bytes, exactly as hidraw's read() would return it. A length of 0
 * or above 64 is a framing error: the connection is dropped (and reopened by
 * the supervisor), never guessed at.
 */
import { connect, type Socket } from 'node:net';
import { stat } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import { TallyboxError, errorMessage } from '../../src/util/errors.js';
import { TRANSPORT_TRANSITIONS, type TransportStatus } from '../transport/types.js';
import type { HidReportTransport, HidTransportEvents } from './transport.js';

export const MAX_REPORT = 64;

/** Frame reports for the socket (the simulator's side). */
export function frameReport(report: Uint8Array): Buffer {
  if (report.length < 1 || report.length > MAX_REPORT) throw new RangeError(`a HID report is 1..${MAX_REPORT} bytes, got ${report.length}`);
  return Buffer.concat([Buffer.from([report.length]), report]);
}

/** Incremental de-framer: bytes in, whole reports out; null on a framing error. */
export class ReportDeframer {
  #buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): Buffer[] | null {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    const out: Buffer[] = [];
    for (;;) {
      if (this.#buf.length < 1) break;
      const n = this.#buf[0]!;
      if (n < 1 || n > MAX_REPORT) return null;
      if (this.#buf.length < 1 + n) break;
      out.push(Buffer.from(this.#buf.subarray(1, 1 + n)));
      this.#buf = this.#buf.subarray(1 + n);
    }
    return out;
  }
}

export class SocketHidTransport extends EventEmitter<HidTransportEvents> implements HidReportTransport {
  readonly description: string;
  readonly #path: string;
  #status: TransportStatus = 'closed';
  #sock: Socket | null = null;

  constructor(opts: { path: string }) {
    super();
    this.#path = opts.path;
    this.description = `hid-socket:${opts.path}`;
  }

  get status(): TransportStatus {
    return this.#status;
  }

  #set(next: TransportStatus, reason?: Error): void {
    const from = this.#status;
    if (from === next) return;
    if (!TRANSPORT_TRANSITIONS[from].includes(next)) throw new TallyboxError('TRANSPORT_BAD_TRANSITION', `transport ${this.description}: status ${from} → ${next} is not allowed`, { from, next });
    this.#status = next;
    this.emit('status', next, reason);
  }

  async open(): Promise<void> {
    if (this.#status === 'open') return;
    this.#set('opening');
    const sock = connect(this.#path);
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
      });
    } catch (err) {
      sock.destroy();
      const code = (err as NodeJS.ErrnoException).code;
      const e =
        code === 'ENOENT' || code === 'ECONNREFUSED'
          ? new TallyboxError('HID_DEVICE_NOT_FOUND', `no card reader serving ${this.#path} (${code})`, { path: this.#path }, { cause: err })
          : new TallyboxError('HID_OPEN_FAILED', `cannot connect to card reader socket ${this.#path}: ${errorMessage(err)}`, { path: this.#path }, { cause: err });
      this.#set('closed', e);
      throw e;
    }
    this.#sock = sock;
    const deframer = new ReportDeframer();
    sock.on('data', (chunk: Buffer) => {
      const reports = deframer.push(chunk);
      if (reports === null) {
        this.#lost(sock, new TallyboxError('HID_FRAMING', `card reader socket ${this.#path}: bad report length`));
        return;
      }
      for (const r of reports) this.emit('report', r);
    });
    sock.on('error', (err) => this.#lost(sock, err));
    sock.on('close', () => this.#lost(sock, new Error('card reader socket closed')));
    this.#set('open');
  }

  #lost(sock: Socket, reason: Error): void {
    if (this.#sock !== sock) return;
    this.#sock = null;
    sock.destroy();
    if (this.#status === 'open') this.#set('closed', reason);
  }

  /** The peer still connected and its socket still in the file system. */
  async probe(): Promise<void> {
    if (this.#status !== 'open' || !this.#sock) throw new TallyboxError('HID_NOT_OPEN', `card reader ${this.description} is ${this.#status}`);
    try {
      await stat(this.#path);
    } catch (err) {
      throw new TallyboxError('HID_DEVICE_GONE', `card reader socket ${this.#path} is gone`, {}, { cause: err });
    }
  }

  async close(): Promise<void> {
    const sock = this.#sock;
    if (!sock || this.#status !== 'open') return;
    this.#set('closing');
    this.#sock = null;
    sock.destroy();
    this.#set('closed');
  }
}
