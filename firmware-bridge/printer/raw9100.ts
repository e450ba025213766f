/**
 * A printer on raw TCP 9100 (AppSocket/JetDirect), optionally with PJL status read-back.
 *
 * send(): connect (with a timeout), [PJL: job header with USTATUS JOB/DEVICE=ON, wait for
 * USTATUS JOB START], stream the document with backpressure (a write that the printer does not drain
 * within the stall timeout means it stopped reading), [PJL: footer with EOJ], half-close, then wait
 * for the printer's USTATUS JOB END for our job name or its close. `jobState` is 'completed' only on
 * that END; anything else is 'unknown' (raw 9100 cannot tell "printed" from "swallowed").
 *
 * Errors (TallyboxError, details {bytesSent, accepted, reasons?}): PRINTER_UNREACHABLE (refused,
 * timed out: offline, or busy with another job), PRINTER_STOPPED (PJL reported a stopping status such
 * as media-empty, or the printer stopped reading), PRINTER_CLOSED (the printer closed mid-job),
 * PRINTER_CANCELLED (the signal), PRINTER_PROTOCOL (no PJL status reply), PRINTER_REJECTED (a job raw
 * 9100 cannot carry: copies > 1 without PJL). Cancelling can only stop sending: raw 9100 has no
 * cancel at the printer, so what it already took may print.
 */
import { connect, type Socket } from 'node:net';
import type { Printer, PrinterJobState, PrinterStatus, PrintSendResult, PrintSubmission } from '../devices.js';
import { TallyboxError } from '../../src/util/errors.js';
import { assertPjlJobName, type PjlMessage, PjlParser, pjlInfoStatusRequest, pjlJobFooter, pjlJobHeader, pjlStatusToPrinterStatus } from './pjl.js';

export interface RawPrinterOptions {
  host: string;
  port?: number;
  /** Wrap jobs in PJL and read status back (the printer must speak PJL). */
  pjl?: boolean;
  connectTimeoutMs?: number;
  /** PJL: how long to wait for USTATUS JOB START before sending the document anyway. */
  startTimeoutMs?: number;
  /** After the last byte: how long to wait for END (PJL) or the printer's close. */
  confirmTimeoutMs?: number;
  /** A write the printer does not drain for this long: it stopped reading (PRINTER_STOPPED). */
  stallTimeoutMs?: number;
  probeTimeoutMs?: number;
}

/** END job names kept for jobState(): enough for a spool's uncertain jobs, bounded whatever happens. */
const KEPT_ENDS = 512;
/** How long to let the printer close its side after the conversation is over. */
const CLOSE_GRACE_MS = 2_000;

/** One TCP conversation with the printer: a failure latch, the PJL back channel, and waits on conditions. */
class Conversation {
  failure: Error | undefined;
  readonly messages: PjlMessage[] = [];
  closed = false;
  private readonly parser = new PjlParser();
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly socket: Socket,
    private readonly onMessage: (m: PjlMessage) => void,
  ) {
    socket.on('data', (chunk: Buffer) => {
      for (const m of this.parser.push(chunk)) {
        this.messages.push(m);
        if (this.messages.length > 64) this.messages.shift();
        this.onMessage(m);
      }
      this.wake();
    });
    socket.on('drain', () => this.wake());
    socket.on('end', () => this.wake());
    socket.on('error', (err) => {
      this.errno = (err as NodeJS.ErrnoException).code;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  errno: string | undefined;

  get malformed(): number {
    return this.parser.malformed;
  }

  /** Latch the failure and reset the connection: an RST (not a FIN) tells the printer the job was cut off. */
  fail(err: Error): void {
    if (!this.failure) this.failure = err;
    if (!this.socket.destroyed) this.socket.resetAndDestroy();
    this.wake();
  }

  wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves when `cond()` holds; rejects with the failure; `onTimeout` decides what a timeout means. */
  until(cond: () => boolean, timeoutMs: number, onTimeout: () => Error | 'resolve'): Promise<void> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const check = () => {
        if (this.failure) finish(this.failure);
        else if (cond()) finish();
      };
      const finish = (err?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.waiters.add(check);
      timer = setTimeout(() => {
        const r = onTimeout();
        if (r === 'resolve') finish();
        else {
          this.fail(r);
          finish(r);
        }
      }, timeoutMs);
      check();
    });
  }
}

export class RawPrinter implements Printer {
  readonly protocol = 'raw9100' as const;
  readonly description: string;
  private readonly host: string;
  private readonly port: number;
  private readonly pjl: boolean;
  private readonly o: Required<Omit<RawPrinterOptions, 'host' | 'port' | 'pjl'>>;
  /** Job names the printer reported END for (PJL), oldest first; pages where given. */
  private readonly ends = new Map<string, number | undefined>();

  constructor(opts: RawPrinterOptions) {
    this.host = opts.host;
    this.port = opts.port ?? 9100;
    this.pjl = opts.pjl ?? false;
    this.o = {
      connectTimeoutMs: opts.connectTimeoutMs ?? 10_000,
      startTimeoutMs: opts.startTimeoutMs ?? 5_000,
      confirmTimeoutMs: opts.confirmTimeoutMs ?? 120_000,
      stallTimeoutMs: opts.stallTimeoutMs ?? 60_000,
      probeTimeoutMs: opts.probeTimeoutMs ?? 5_000,
    };
    this.description = `raw9100:${this.host}:${this.port}${this.pjl ? '+pjl' : ''}`;
  }

  private connect(signal?: AbortSignal): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.host, port: this.port, allowHalfOpen: true });
      const timer = setTimeout(() => done(new TallyboxError('PRINTER_UNREACHABLE', `no connection to ${this.description} within ${this.o.connectTimeoutMs} ms`, { bytesSent: 0, accepted: false })), this.o.connectTimeoutMs);
      const onAbort = () => done(new TallyboxError('PRINTER_CANCELLED', 'the job was cancelled before the printer was reached', { bytesSent: 0, accepted: false }));
      const onError = (err: NodeJS.ErrnoException) => {
        const code = err.code ?? 'unknown';
        done(new TallyboxError('PRINTER_UNREACHABLE', `${this.description} is unreachable (${code}${code === 'ECONNREFUSED' ? ': offline, or busy with another job' : ''})`, { bytesSent: 0, accepted: false, errno: code }));
      };
      const done = (err?: Error) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.off('error', onError);
        if (err) {
          socket.destroy();
          reject(err);
        } else resolve(socket);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('error', onError);
      socket.once('connect', () => done());
    });
  }

  private noteEnd(m: PjlMessage): void {
    if (m.kind !== 'job' || m.event !== 'END' || m.name === undefined) return;
    this.ends.delete(m.name);
    this.ends.set(m.name, m.pages);
    if (this.ends.size > KEPT_ENDS) this.ends.delete(this.ends.keys().next().value!);
  }

  async probe(): Promise<PrinterStatus> {
    const socket = await this.connect();
    if (!this.pjl) {
      // Without PJL a 9100 port says nothing but "I accept a connection" (an empty job, which printers ignore).
      const conv = new Conversation(socket, () => {});
      socket.end();
      await conv.until(
        () => conv.closed,
        CLOSE_GRACE_MS,
        () => 'resolve',
      );
      socket.destroy();
      return { state: 'idle', reasons: ['none'] };
    }
    const conv = new Conversation(socket, (m) => this.noteEnd(m));
    try {
      socket.write(pjlInfoStatusRequest());
      let status: PrinterStatus | undefined;
      await conv.until(
        () => {
          const m = conv.messages.find((x) => x.kind === 'status' && x.source === 'info');
          if (m && m.kind === 'status') status = pjlStatusToPrinterStatus(m.status);
          return status !== undefined || conv.closed;
        },
        this.o.probeTimeoutMs,
        () => new TallyboxError('PRINTER_PROTOCOL', `${this.description} gave no PJL INFO STATUS reply within ${this.o.probeTimeoutMs} ms (${conv.malformed} malformed messages)`),
      );
      if (!status) throw new TallyboxError('PRINTER_PROTOCOL', `${this.description} closed the connection without a PJL INFO STATUS reply (${conv.malformed} malformed messages)`);
      socket.end();
      await conv.until(
        () => conv.closed,
        CLOSE_GRACE_MS,
        () => 'resolve',
      );
      return status;
    } finally {
      socket.end();
      socket.destroy();
    }
  }

  async jobState(ref: string): Promise<PrinterJobState> {
    return this.ends.has(ref) ? 'completed' : 'unknown';
  }

  async send(job: PrintSubmission): Promise<PrintSendResult> {
    const signal = job.signal;
    if (signal?.aborted) throw new TallyboxError('PRINTER_CANCELLED', 'the job was cancelled before it was sent', { bytesSent: 0, accepted: false });
    if (this.pjl) assertPjlJobName(job.jobName);
    else if (job.copies !== 1) throw new TallyboxError('PRINTER_REJECTED', `raw 9100 without PJL cannot ask for ${job.copies} copies (enable PJL, or send printer-ready bytes with the copies in them)`, { bytesSent: 0, accepted: false });
    const socket = await this.connect(signal);
    let bytesSent = 0;
    let accepted = false;
    let lastStatus: PrinterStatus | undefined;
    let started = false;
    let endPages: number | undefined;
    let endSeen = false;
    let finishing = false;
    const details = (extra: Record<string, unknown> = {}) => ({ bytesSent, accepted, ...extra });
    const conv = new Conversation(socket, (m) => {
      this.noteEnd(m);
      if (m.kind === 'job' && m.name === job.jobName) {
        if (m.event === 'START') started = true;
        if (m.event === 'END') {
          endSeen = true;
          endPages = m.pages;
        }
      }
      if (m.kind === 'status') {
        lastStatus = pjlStatusToPrinterStatus(m.status);
        if (lastStatus.state === 'stopped' && !endSeen) conv.fail(new TallyboxError('PRINTER_STOPPED', `${this.description} stopped (${lastStatus.reasons.join(', ')}) after ${bytesSent} bytes`, details({ reasons: lastStatus.reasons })));
      }
    });
    // Closed before it took the job (no START, no document byte): a printer busy with another job
    // resets the connection; the job is still safe to send again, as after a refused connect.
    const closedEarly = () =>
      !accepted && !started
        ? new TallyboxError('PRINTER_UNREACHABLE', `${this.description} closed the connection before taking the job (busy with another job?${conv.errno ? ` ${conv.errno}` : ''})`, details({ errno: conv.errno }))
        : new TallyboxError('PRINTER_CLOSED', `${this.description} closed the connection after ${bytesSent} bytes${conv.errno ? ` (${conv.errno})` : ''}`, details());
    socket.on('end', () => {
      if (!finishing) conv.fail(closedEarly());
    });
    socket.on('close', () => {
      if (!finishing) conv.fail(closedEarly());
    });
    const onAbort = () => conv.fail(new TallyboxError('PRINTER_CANCELLED', `the job was cancelled after ${bytesSent} bytes`, details()));
    signal?.addEventListener('abort', onAbort, { once: true });

    const write = async (chunk: Uint8Array): Promise<void> => {
      if (conv.failure) throw conv.failure;
      if (socket.write(chunk)) return;
      await conv.until(
        () => !socket.writableNeedDrain,
        this.o.stallTimeoutMs,
        () => new TallyboxError('PRINTER_STOPPED', `${this.description} stopped reading for ${this.o.stallTimeoutMs} ms after ${bytesSent} bytes`, details({ reasons: lastStatus?.reasons ?? [] })),
      );
    };

    try {
      if (this.pjl) {
        await write(pjlJobHeader(job.jobName, { copies: job.copies }));
        // START: the printer took the job. A printer that ignores USTATUS never says so; then the
        // first document byte is the moment, as without PJL.
        await conv.until(
          () => started,
          this.o.startTimeoutMs,
          () => 'resolve',
        );
      }
      for await (const chunk of job.document) {
        if (chunk.length === 0) continue;
        if (conv.failure) throw conv.failure;
        if (!accepted) {
          accepted = true;
          job.onAccepted?.(this.pjl ? job.jobName : undefined);
        }
        bytesSent += chunk.length;
        await write(chunk);
        job.onProgress?.(bytesSent);
      }
      if (!accepted && this.pjl && started) {
        accepted = true;
        job.onAccepted?.(job.jobName);
      }
      if (this.pjl) await write(pjlJobFooter(job.jobName));
      if (conv.failure) throw conv.failure;
      // Half-close: the printer sees the end of the job; its END (PJL) or its close comes back.
      finishing = true;
      socket.end();
      await conv.until(
        () => endSeen || conv.closed,
        this.o.confirmTimeoutMs,
        () => 'resolve',
      );
      if (conv.failure) throw conv.failure;
      // A reset instead of a FIN: the printer threw the connection away, whatever it had read.
      if (!endSeen && conv.errno) throw new TallyboxError('PRINTER_CLOSED', `${this.description} reset the connection after ${bytesSent} bytes were sent (${conv.errno})`, details());
      // After END the printer closes too; letting it (briefly) means the next job does not find
      // the port still held by this one.
      if (endSeen)
        await conv.until(
          () => conv.closed,
          CLOSE_GRACE_MS,
          () => 'resolve',
        );
      const result: PrintSendResult = { ref: this.pjl ? job.jobName : undefined, bytesSent, jobState: endSeen ? 'completed' : 'unknown' };
      if (endPages !== undefined) result.pages = endPages;
      return result;
    } catch (err) {
      // A failure of the connection wins over what a pending write saw of it.
      const e = conv.failure ?? err;
      if (!socket.destroyed) socket.resetAndDestroy(); // e.g. the document source failed: cut the job off
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
    }
  }
}
