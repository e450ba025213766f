/**
 * ByteTransport over `serialport`. The same class opens /dev/ttyS1, a simulator's
 * pseudo-terminal symlink, or a mock binding: only `binding` differs.
 */
import { SerialPort, type SerialPortMock } from 'serialport';
import { TallyboxError, errorMessage } from '../../src/util/errors.js';
import { BaseTransport } from './base.js';
import { hangupAwareBinding } from './hangup-binding.js';

/** The platform binding, fixed so a hung-up tty closes the port instead of spinning (see hangup-binding.ts). */
let platformBinding: SerialBinding | null = null;

/** A serialport binding: the platform default, MockBinding, or a wrapper of either. */
export type SerialBinding = typeof SerialPort.binding | typeof SerialPortMock.binding;

export interface SerialTransportOptions {
  /** Device path, e.g. /dev/ttyS1 or the simulator's --link path. */
  path: string;
  /** Default 57600 (R30x default: 9600 × 6). */
  baudRate?: number;
  /** Default: the platform binding. Tests pass a mock binding. */
  binding?: SerialBinding;
  /**
   * A write that has not drained after this long fails (default 2000 ms). A
   * pseudo-terminal whose other side has gone, or a wedged USB-serial adapter,
   * never drains: without a bound the driver's command would wait forever.
   */
  writeTimeoutMs?: number;
}

export class SerialTransport extends BaseTransport {
  readonly description: string;
  readonly #opts: Required<Omit<SerialTransportOptions, 'binding'>> & { binding: SerialBinding | undefined };
  #port: SerialPort | null = null;

  constructor(opts: SerialTransportOptions) {
    super();
    this.#opts = { path: opts.path, baudRate: opts.baudRate ?? 57600, binding: opts.binding, writeTimeoutMs: opts.writeTimeoutMs ?? 2000 };
    this.description = `serial:${opts.path}`;
  }

  #opening: Promise<void> | null = null;

  /** Concurrent calls share one attempt (two SerialPorts on one path would fight over the lock). */
  open(): Promise<void> {
    if (this.status === 'open') return Promise.resolve();
    this.#opening ??= this.#open().finally(() => {
      this.#opening = null;
    });
    return this.#opening;
  }

  async #open(): Promise<void> {
    this.setStatus('opening');
    // `binding` is not in SerialPort's public option type but SerialPort spreads
    // options over its detected binding, which is exactly the injection we want.
    const options: Record<string, unknown> = { path: this.#opts.path, baudRate: this.#opts.baudRate, autoOpen: false };
    options.binding = this.#opts.binding ?? (platformBinding ??= hangupAwareBinding());
    const port = new SerialPort(options as unknown as ConstructorParameters<typeof SerialPort>[0]);
    try {
      await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
    } catch (err) {
      this.setStatus('closed', err instanceof Error ? err : new Error(String(err)));
      throw new TallyboxError('TRANSPORT_OPEN_FAILED', `cannot open ${this.description}: ${errorMessage(err)}`, { path: this.#opts.path }, { cause: err });
    }
    this.#port = port;
    port.on('data', (chunk: Buffer) => this.emit('data', chunk));
    // serialport reports read failures (EIO when a pty's other side goes away)
    // as 'error' then 'close'; both become one status change here.
    let lastError: Error | undefined;
    port.on('error', (err: Error) => {
      lastError = err;
    });
    port.on('close', (err?: Error | null) => {
      if (this.#port !== port) return;
      this.#port = null;
      if (this.status === 'open') this.setStatus('closed', err ?? lastError ?? new Error('port closed'));
    });
    this.setStatus('open');
  }

  async write(bytes: Uint8Array): Promise<void> {
    this.assertOpen();
    const port = this.#port;
    if (!port) throw new TallyboxError('TRANSPORT_NOT_OPEN', `transport ${this.description} has no open port`);
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`not drained after ${this.#opts.writeTimeoutMs} ms`)), this.#opts.writeTimeoutMs);
        port.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), (err) => (err ? reject(err) : undefined));
        port.drain((err) => (err ? reject(err) : resolve()));
      });
    } catch (err) {
      throw new TallyboxError('TRANSPORT_WRITE_FAILED', `write to ${this.description} failed: ${errorMessage(err)}`, {}, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    const port = this.#port;
    if (!port || this.status !== 'open') return;
    this.setStatus('closing');
    this.#port = null;
    await new Promise<void>((resolve) => {
      if (!port.isOpen) return resolve();
      // Bounded like writes: a port whose device vanished may never call back.
      const timer = setTimeout(resolve, this.#opts.writeTimeoutMs);
      port.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.setStatus('closed');
  }
}
