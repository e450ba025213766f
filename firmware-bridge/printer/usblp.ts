/**
 * A printer on a USB printer-class device file (/dev/usb/lpN, the kernel's usblp driver): printer-ready
 * bytes written straight in, and the port status read with ioctl(LPGETSTATUS) (native/usblp).
 *
 * The file is opened O_WRONLY|O_NONBLOCK|O_NOCTTY, never created: a write the printer cannot take now
 * returns EAGAIN and is retried after a short, growing pause (backpressure without a blocked thread,
 * and an abort is honoured between tries); EAGAIN for longer than the stall timeout is PRINTER_STOPPED.
 * Anything that is not a character device or a FIFO (a regular file from a typo) is refused.
 *
 * Status: LPGETSTATUS where the driver answers it; a FIFO, a pty, an lp driver without it (ENOTTY), or
 * a build without the addon give `portStatus()` 'unknown', and probe() reports no reasons rather than
 * inventing 'none'. USB printers do not say when a job is done: jobState is always 'unknown'.
 *
 * Errors as in devices.ts: PRINTER_UNREACHABLE (absent: ENOENT, ENXIO — a FIFO without a reader —,
 * ENODEV, EACCES), PRINTER_STOPPED (paper out before or during the job, or stalled), PRINTER_CLOSED
 * (EPIPE, EIO, ENODEV mid-job: unplugged), PRINTER_CANCELLED, PRINTER_REJECTED (copies > 1).
 */
import { constants as fsc, existsSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Printer, PrinterJobState, PrinterStatus, PrintSendResult, PrintSubmission } from '../devices.js';
import { TallyboxError } from '../../src/util/errors.js';
import { cancelledError, linkError, printerError, stoppedError } from './errors.js';
import { pause } from './pause.js';

/** IEEE 1284 status bits as <linux/lp.h> names them. */
export const LP_STATUS = { busyInverted: 0x80, ack: 0x40, paperOut: 0x20, selected: 0x10, noError: 0x08 } as const;

export interface UsbLpPortStatus {
  paperOut: boolean;
  selected: boolean;
  error: boolean;
  busy: boolean;
}

export function decodeLpStatus(byte: number): UsbLpPortStatus {
  return { paperOut: (byte & LP_STATUS.paperOut) !== 0, selected: (byte & LP_STATUS.selected) !== 0, error: (byte & LP_STATUS.noError) === 0, busy: (byte & LP_STATUS.busyInverted) === 0 };
}

/** Port status → IPP-like printer status. */
export function lpStatusToPrinterStatus(s: UsbLpPortStatus): PrinterStatus {
  const reasons: string[] = [];
  if (s.paperOut) reasons.push('media-empty');
  if (!s.selected) reasons.push('offline-report');
  if (s.error && !s.paperOut) reasons.push('other');
  if (reasons.length > 0) return { state: 'stopped', reasons };
  return { state: s.busy ? 'processing' : 'idle', reasons: ['none'] };
}

interface NativeUsbLp {
  getStatus(fd: number): number;
}

let native: NativeUsbLp | null | undefined;

/** The addon is built into native/usblp/build at the repository root, above both the sources and dist/. */
function loadNative(): NativeUsbLp | null {
  if (native !== undefined) return native;
  native = null;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const addon = join(dir, 'native', 'usblp', 'build', 'Release', 'usblp.node');
    if (existsSync(addon)) {
      native = createRequire(import.meta.url)(addon) as NativeUsbLp;
      break;
    }
    dir = dirname(dir);
  }
  return native;
}

export interface UsbLpPrinterOptions {
  path: string;
  /** EAGAIN for this long: the printer stopped taking data (PRINTER_STOPPED). */
  stallTimeoutMs?: number;
  /** Largest single write (the usblp driver takes up to a page of data per write anyway). */
  chunkBytes?: number;
}

const GONE = new Set(['EPIPE', 'EIO', 'ENODEV', 'ESHUTDOWN', 'ECONNRESET']);
const MAX_BACKOFF_MS = 100;

export class UsbLpPrinter implements Printer {
  readonly protocol = 'usblp' as const;
  readonly description: string;
  private readonly path: string;
  private readonly stallTimeoutMs: number;
  private readonly chunkBytes: number;

  constructor(opts: UsbLpPrinterOptions) {
    this.path = opts.path;
    this.stallTimeoutMs = opts.stallTimeoutMs ?? 60_000;
    this.chunkBytes = opts.chunkBytes ?? 64 * 1024;
    // the device path is configuration, not personal data
    this.description = `usblp:${this.path}`;
  }

  private async openDevice(): Promise<FileHandle> {
    let fh: FileHandle;
    try {
      fh = await open(this.path, fsc.O_WRONLY | fsc.O_NONBLOCK | fsc.O_NOCTTY);
    } catch (err) {
      // Whatever the reason (absent, no permission, busy), the printer took nothing: unreachable.
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
      throw linkError(code, false, `${this.description} cannot be opened (${code}${code === 'ENXIO' ? ': nothing is reading it' : ''})`, { bytesSent: 0, accepted: false });
    }
    const st = await fh.stat();
    if (!st.isCharacterDevice() && !st.isFIFO()) {
      await fh.close();
      throw new TallyboxError('PRINTER_URL_INVALID', `${this.description} is not a device file (a character device such as /dev/usb/lp0)`);
    }
    return fh;
  }

  /** The port status byte decoded, or 'unknown' when the file does not answer LPGETSTATUS (FIFO, pty, no addon). */
  readStatus(fh: FileHandle): UsbLpPortStatus | 'unknown' {
    const n = loadNative();
    if (!n) return 'unknown';
    try {
      return decodeLpStatus(n.getStatus(fh.fd));
    } catch (err) {
      // ENOTTY/EINVAL: not an lp device, or a driver without the ioctl; nothing to report
      const code = (err as { code?: string }).code;
      if (code === 'ENODEV' || code === 'EIO') throw linkError(code, false, `${this.description} is gone (${code})`);
      return 'unknown';
    }
  }

  async portStatus(): Promise<UsbLpPortStatus | 'unknown'> {
    const fh = await this.openDevice();
    try {
      return this.readStatus(fh);
    } finally {
      await fh.close();
    }
  }

  async probe(): Promise<PrinterStatus> {
    const s = await this.portStatus();
    // Unknown is said as no reasons: 'none' would claim the printer reported all is well.
    return s === 'unknown' ? { state: 'idle', reasons: [] } : lpStatusToPrinterStatus(s);
  }

  async jobState(_ref: string): Promise<PrinterJobState> {
    return 'unknown';
  }

  async send(job: PrintSubmission): Promise<PrintSendResult> {
    const signal = job.signal;
    let bytesSent = 0;
    let accepted = false;
    const details = (extra: Record<string, unknown> = {}) => ({ bytesSent, accepted, ...extra });
    const cancelled = () => cancelledError(`after ${bytesSent} bytes`, details());
    if (signal?.aborted) throw cancelled();
    if (job.copies !== 1) throw printerError('PRINTER_REJECTED', `a USB printer-class device cannot be asked for ${job.copies} copies (send printer-ready bytes with the copies in them)`, details());
    const fh = await this.openDevice();
    try {
      const before = this.readStatus(fh);
      if (before !== 'unknown') {
        const st = lpStatusToPrinterStatus(before);
        if (st.state === 'stopped') throw stoppedError(this.description, st, details());
      }
      for await (const chunk of job.document) {
        for (let off = 0; off < chunk.length; ) {
          if (signal?.aborted) throw cancelled();
          if (!accepted) {
            accepted = true;
            job.onAccepted?.(undefined);
          }
          const piece = chunk.subarray(off, Math.min(chunk.length, off + this.chunkBytes));
          const n = await this.writeSome(fh, piece, signal, details);
          off += n;
          bytesSent += n;
          job.onProgress?.(bytesSent);
        }
      }
      return { ref: undefined, bytesSent, jobState: 'unknown' };
    } finally {
      await fh.close();
    }
  }

  /** One write, retried on EAGAIN with a growing pause; returns the bytes the device took (> 0). */
  private async writeSome(fh: FileHandle, piece: Uint8Array, signal: AbortSignal | undefined, details: (extra?: Record<string, unknown>) => Record<string, unknown>): Promise<number> {
    let waitedFrom: number | undefined;
    let backoff = 1;
    for (;;) {
      try {
        const { bytesWritten } = await fh.write(piece, 0, piece.length, null);
        if (bytesWritten > 0) return bytesWritten;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
        if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK') {
          const what = GONE.has(code) ? `${this.description} went away` : `writing to ${this.description} failed`;
          throw linkError(code, true, `${what} after ${details().bytesSent} bytes (${code})`, details());
        }
      }
      // The printer is not taking data: out of paper, or just slow. Ask it, where it can say.
      const st = this.readStatus(fh);
      if (st !== 'unknown' && st.paperOut) throw printerError('PRINTER_STOPPED', `${this.description} is out of paper after ${details().bytesSent} bytes`, details({ reasons: ['media-empty'] }));
      waitedFrom ??= performance.now();
      if (performance.now() - waitedFrom > this.stallTimeoutMs) {
        throw printerError('PRINTER_STOPPED', `${this.description} took no data for ${this.stallTimeoutMs} ms after ${details().bytesSent} bytes`, details({ reasons: st === 'unknown' ? [] : lpStatusToPrinterStatus(st).reasons }));
      }
      await pause(backoff, signal);
      if (signal?.aborted) throw cancelledError(`after ${details().bytesSent} bytes`, details());
      backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
    }
  }
}
