/**
 * A small test-only printer: a real TCP server that writes every job it
 * receives to a real file, and a `Printer` client for it (until the raw 9100
 * transport and the printer simulator are merged, and for faults those do not
 * have: a hang before acceptance). Protocol: the client sends one line
 * "JOB <name>\n", the server answers "ACCEPT <n>\n" (onAccepted), then the
 * document bytes and a half-close; the server answers "DONE <n>\n" once it has
 * every byte (jobState 'completed'), or nothing when told never to confirm.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Printer, PrinterJobState, PrinterStatus, PrintSendResult, PrintSubmission } from '../../../firmware-bridge/devices.js';
import { TallyboxError } from '../../../src/util/errors.js';

export interface TestJob {
  n: number;
  name: string;
  bytes: number;
  state: 'receiving' | 'completed' | 'aborted';
  file: string;
}

export interface TestPrinterFaults {
  offline: boolean;
  /** Stop reading after this many document bytes of a job (paper out): state stopped, media-empty. */
  paperOutAfter: number;
  neverConfirm: boolean;
  /** Bytes per second read (0: unlimited). */
  slowBps: number;
}

export class TestPrinterServer {
  readonly jobs: TestJob[] = [];
  readonly faults: TestPrinterFaults = { offline: false, paperOutAfter: 0, neverConfirm: false, slowBps: 0 };
  paperOut = false;
  #server: Server | undefined;
  #port = 0;
  readonly #sockets = new Set<Socket>();

  constructor(readonly dir: string) {}

  get port(): number {
    return this.#port;
  }

  async start(port = this.#port): Promise<void> {
    const server = createServer((s) => this.#conn(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.#server = server;
    this.#port = (server.address() as AddressInfo).port;
  }

  /** Offline: the port closes (connections refused) and open connections drop. */
  async stop(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    const srv = this.#server;
    this.#server = undefined;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }

  status(): PrinterStatus {
    return this.paperOut ? { state: 'stopped', reasons: ['media-empty'] } : { state: 'idle', reasons: ['none'] };
  }

  completed(name: string): number {
    return this.jobs.filter((j) => j.name === name && j.state === 'completed').length;
  }

  #conn(s: Socket): void {
    this.#sockets.add(s);
    s.on('close', () => this.#sockets.delete(s));
    s.on('error', () => undefined); // a client killed mid-job: the job is marked aborted below
    let head = Buffer.alloc(0);
    let job: TestJob | undefined;
    let out: WriteStream | undefined;
    const finish = (state: 'completed' | 'aborted') => {
      if (job?.state !== 'receiving') return;
      job.state = state;
      out?.end();
    };
    s.on('data', (d: Buffer) => {
      if (!job) {
        head = Buffer.concat([head, d]);
        const nl = head.indexOf(10);
        if (nl < 0) return;
        const line = head.subarray(0, nl).toString('latin1');
        const rest = head.subarray(nl + 1);
        if (this.paperOut) {
          s.end('STOPPED media-empty\n');
          return;
        }
        const n = this.jobs.length + 1;
        job = { n, name: line.replace(/^JOB /, ''), bytes: 0, state: 'receiving', file: join(this.dir, `job-${n}.bin`) };
        this.jobs.push(job);
        out = createWriteStream(job.file, { mode: 0o600 });
        s.write(`ACCEPT ${n}\n`);
        d = rest;
      }
      if (d.length === 0) return;
      const j = job;
      let take = d;
      if (this.faults.paperOutAfter > 0 && j.bytes + d.length > this.faults.paperOutAfter) {
        take = d.subarray(0, Math.max(0, this.faults.paperOutAfter - j.bytes));
        this.paperOut = true;
        s.pause(); // stops reading: the client's writes back up, as with a printer out of paper
        setTimeout(() => {
          finish('aborted');
          s.destroy();
        }, 300).unref();
      }
      j.bytes += take.length;
      out?.write(take);
      if (this.faults.slowBps > 0) {
        s.pause();
        setTimeout(() => s.resume(), Math.ceil((take.length / this.faults.slowBps) * 1000)).unref();
      }
    });
    s.on('end', () => {
      if (!job) return s.end();
      finish('completed');
      if (this.faults.neverConfirm) s.end();
      else s.end(`DONE ${job.n}\n`);
    });
    s.on('close', () => finish('aborted'));
  }
}

/** The Printer client of the test server. */
export class TestPrinter implements Printer {
  readonly protocol = 'raw9100' as const;
  readonly description: string;
  constructor(
    readonly server: TestPrinterServer,
    readonly opts: { canQuery?: boolean } = {},
  ) {
    this.description = `test printer 127.0.0.1:${server.port}`;
    if (opts.canQuery === false) this.jobState = undefined;
  }

  async probe(): Promise<PrinterStatus> {
    const s = await this.#connect();
    s.destroy();
    return this.server.status();
  }

  jobState?: (ref: string) => Promise<PrinterJobState> = async (ref) => {
    const j = this.server.jobs.find((x) => String(x.n) === ref);
    if (!j) return 'unknown';
    if (j.state === 'completed' && !this.server.faults.neverConfirm) return 'completed';
    return j.state === 'aborted' ? 'aborted' : 'processing';
  };

  #connect(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: this.server.port });
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => reject(new TallyboxError('PRINTER_UNREACHABLE', `PRINTER_UNREACHABLE: ${err.code ?? 'error'}`)));
    });
  }

  async send(job: PrintSubmission): Promise<PrintSendResult> {
    if (job.signal?.aborted) throw new TallyboxError('PRINTER_CANCELLED', 'PRINTER_CANCELLED');
    const s = await this.#connect();
    let replies = '';
    let closed = false;
    let waiter: (() => void) | undefined;
    s.on('data', (d: Buffer) => {
      replies += d.toString('latin1');
      waiter?.();
    });
    s.on('close', () => {
      closed = true;
      waiter?.();
    });
    s.on('error', () => undefined); // seen as the close
    const until = async (cond: () => boolean) => {
      while (!cond()) {
        if (closed) return;
        await new Promise<void>((r) => (waiter = r));
      }
    };
    const onAbort = () => s.destroy();
    job.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      s.write(`JOB ${job.jobName}\n`);
      await until(() => replies.includes('\n'));
      if (replies.startsWith('STOPPED')) throw new TallyboxError('PRINTER_STOPPED', 'PRINTER_STOPPED: media-empty', { reasons: ['media-empty'] });
      const m = /^ACCEPT (\d+)\n/.exec(replies);
      if (!m) throw new TallyboxError(closed ? 'PRINTER_CLOSED' : 'PRINTER_PROTOCOL', 'no ACCEPT');
      const ref = m[1];
      job.onAccepted?.(ref);
      let bytes = 0;
      for await (const chunk of job.document) {
        if (closed || job.signal?.aborted) break;
        const okToGo = s.write(chunk);
        bytes += chunk.length;
        job.onProgress?.(bytes);
        if (!okToGo) {
          await new Promise<void>((r) => {
            const done = () => {
              s.off('drain', done);
              s.off('close', done);
              r();
            };
            s.on('drain', done);
            s.on('close', done);
          });
        }
      }
      if (job.signal?.aborted) throw new TallyboxError('PRINTER_CANCELLED', 'PRINTER_CANCELLED');
      if (closed) throw new TallyboxError(this.server.paperOut ? 'PRINTER_STOPPED' : 'PRINTER_CLOSED', 'connection closed mid-job', { reasons: this.server.paperOut ? ['media-empty'] : [] });
      s.end();
      await until(() => /DONE \d+\n/.test(replies));
      if (job.signal?.aborted) throw new TallyboxError('PRINTER_CANCELLED', 'PRINTER_CANCELLED');
      const done = /DONE \d+\n/.test(replies);
      if (!done && this.server.paperOut) throw new TallyboxError('PRINTER_STOPPED', 'PRINTER_STOPPED', { reasons: ['media-empty'] });
      return { ref, bytesSent: bytes, jobState: done ? 'completed' : 'unknown' };
    } finally {
      job.signal?.removeEventListener('abort', onAbort);
      s.destroy();
    }
  }
}
