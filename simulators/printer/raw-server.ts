/**
 * The simulated printer's raw TCP 9100 (AppSocket/JetDirect) port, PJL-aware.
 *
 * One connection at a time, as on a real printer: while a connection is open (and while the printer
 * is offline or told to be busy) the port is not listening, so another client gets ECONNREFUSED.
 * A session re-opens the port before it closes its connection (see `release`).
 *
 * The byte stream is read the way a PJL printer reads it: after a UEL (ESC%-12345X) come `@PJL …`
 * command lines; the first byte that does not start one is document data (printer language) up to
 * the next UEL. A stream that does not start with a UEL is all data (a plain raw job). What is
 * recorded is the document data only: between the PJL job header and the footer's UEL, or the whole
 * stream without PJL. Commands answered: INFO STATUS, USTATUS JOB/DEVICE=ON (START at JOB, END with
 * PAGES at EOJ), SET COPIES, ENTER LANGUAGE; others are accepted and ignored.
 *
 * Faults (read live from ctx.faults): offline and busy stop listening; slow reads at N bytes/s;
 * paper-out after N bytes of a job stops reading (a PJL client is told USTATUS DEVICE CODE=41000,
 * repeated every second) until ctx.resume(); close-after N bytes records exactly N bytes and closes;
 * never-confirm sends no END. Document content and job names are never logged.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { encodeJobEvent, encodeStatus, PJL_CODE, UEL } from '../../firmware-bridge/printer/pjl.js';
import { errorMessage } from '../../src/util/errors.js';
import type { PrinterSimContext, RecordedJobWriter, StartedServer } from './types.js';

const PJL_PREFIX = Buffer.from('@PJL', 'latin1');
const MAX_PJL_LINE = 1024;
const FF = 0x0c;

type Pause = 'slow' | 'disk' | 'paper' | 'job';

/** Length of the longest suffix of `b` that is a proper prefix of the UEL (it may complete in the next chunk). */
function uelPrefixTail(b: Buffer): number {
  for (let k = Math.min(UEL.length - 1, b.length); k > 0; k--) if (b.subarray(b.length - k).equals(UEL.subarray(0, k))) return k;
  return 0;
}

function startsWithPjl(b: Buffer): boolean | undefined {
  const n = Math.min(b.length, PJL_PREFIX.length);
  for (let i = 0; i < n; i++) if ((b[i]! & 0xdf) !== PJL_PREFIX[i]) return false;
  return n === PJL_PREFIX.length ? true : undefined; // undefined: too short to tell yet
}

function pjlStatusOf(ctx: PrinterSimContext): { code: number; display: string; online: boolean } {
  const s = ctx.status();
  if (s.reasons.includes('media-empty')) return { code: PJL_CODE.paperOut, display: 'LOAD PAPER', online: true };
  if (s.reasons.includes('offline-report')) return { code: PJL_CODE.offline, display: 'OFFLINE', online: false };
  return s.state === 'processing' ? { code: PJL_CODE.processing, display: 'PROCESSING JOB', online: true } : { code: PJL_CODE.ready, display: 'READY', online: true };
}

function recorderFailed(err: unknown): void {
  process.stderr.write(`tallybox-sim printer: recording a job failed: ${errorMessage(err)}\n`);
}

interface OpenJob {
  pjl: boolean;
  name: string | undefined;
  copies: number;
  writer: RecordedJobWriter | undefined;
  bytes: number;
  formFeeds: number;
  paperOutDone: boolean;
}

class RawSession {
  private mode: 'pjl' | 'data';
  private carry: Buffer = Buffer.alloc(0);
  /** Input not yet processed because processing is blocked (paper out, a job being closed). */
  private held: Buffer = Buffer.alloc(0);
  private job: OpenJob | undefined;
  private ustatusJob = false;
  private ustatusDevice = false;
  private readonly pauses = new Set<Pause>();
  private blocked: 'paper' | 'job' | undefined;
  private peerEnded = false;
  private finished = false;
  private dead = false;
  private ticker: NodeJS.Timeout | undefined;
  private slowTimer: NodeJS.Timeout | undefined;
  private readonly unsubscribe: (() => void) | undefined;

  constructor(
    private readonly ctx: PrinterSimContext,
    private readonly socket: Socket,
    private readonly hooks: { release(): Promise<void>; gone(): void },
  ) {
    this.mode = 'data';
    this.firstChunk = true;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      this.peerEnded = true;
      this.maybeFinish();
    });
    socket.on('error', () => {
      // a reset by the client: 'close' follows and aborts the job
    });
    socket.on('close', () => void this.onClose());
    this.unsubscribe = ctx.onChange?.(() => this.onFaultsChanged());
  }

  private firstChunk: boolean;

  private onData(chunk: Buffer): void {
    if (this.dead) return;
    if (this.firstChunk) {
      this.firstChunk = false;
      // A stream that opens with a UEL (or the start of one) is PJL; anything else is a plain raw job.
      const n = Math.min(chunk.length, UEL.length);
      if (chunk.subarray(0, n).equals(UEL.subarray(0, n))) this.mode = 'pjl';
    }
    const slow = this.ctx.faults.slowBytesPerSec;
    if (slow > 0) {
      this.pause('slow');
      this.slowTimer = setTimeout(() => this.unpause('slow'), Math.ceil((chunk.length / slow) * 1000));
    }
    if (this.blocked) {
      this.held = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
      return;
    }
    this.process(chunk);
    this.maybeFinish();
  }

  private pause(r: Pause): void {
    this.pauses.add(r);
    this.socket.pause();
  }

  private unpause(r: Pause): void {
    this.pauses.delete(r);
    if (this.pauses.size === 0 && !this.dead) this.socket.resume();
  }

  private block(r: 'paper' | 'job', rest: Buffer): void {
    this.blocked = r;
    this.held = rest.length ? Buffer.from(rest) : Buffer.alloc(0);
    this.pause(r);
  }

  private unblock(): void {
    const r = this.blocked;
    if (!r) return;
    this.blocked = undefined;
    const held = this.held;
    this.held = Buffer.alloc(0);
    if (held.length) this.process(held);
    this.unpause(r); // a new block added its own pause reason
    this.maybeFinish();
  }

  private process(input: Buffer): void {
    let b = this.carry.length ? Buffer.concat([this.carry, input]) : input;
    this.carry = Buffer.alloc(0);
    while (b.length > 0 && !this.dead) {
      if (this.blocked) {
        this.held = Buffer.concat([this.held, b]);
        return;
      }
      if (this.mode === 'data') {
        const i = b.indexOf(UEL);
        const dataEnd = i >= 0 ? i : b.length - uelPrefixTail(b);
        const data = b.subarray(0, dataEnd);
        const consumed = this.record(data);
        if (this.dead) return;
        if (consumed < data.length || this.blocked) {
          // blocked by a paper-out: the rest waits for resume()
          this.held = Buffer.concat([this.held, b.subarray(consumed)]);
          return;
        }
        if (i < 0) {
          this.carry = Buffer.from(b.subarray(dataEnd));
          return;
        }
        b = b.subarray(i + UEL.length);
        this.mode = 'pjl';
        // A UEL ends an implicit (non-PJL) job.
        if (this.job && !this.job.pjl) {
          this.closeJob('completed', b);
          return;
        }
        continue;
      }
      // PJL mode
      const n = Math.min(b.length, UEL.length);
      if (b.subarray(0, n).equals(UEL.subarray(0, n))) {
        if (n < UEL.length) {
          this.carry = Buffer.from(b);
          return;
        }
        b = b.subarray(UEL.length);
        continue;
      }
      const pjl = startsWithPjl(b);
      if (pjl === undefined) {
        this.carry = Buffer.from(b);
        return;
      }
      if (pjl) {
        const nl = b.indexOf(0x0a);
        if (nl < 0) {
          if (b.length <= MAX_PJL_LINE) {
            this.carry = Buffer.from(b);
            return;
          }
          this.mode = 'data'; // not a command line after all: printer-language data
          continue;
        }
        const line = b.subarray(0, nl).toString('latin1').replace(/\r$/, '');
        b = b.subarray(nl + 1);
        const rest = this.command(line, b);
        if (rest === null) return; // blocked: the rest is held
        continue;
      }
      this.mode = 'data';
    }
  }

  /** One `@PJL …` line. Returns null when processing blocks (the rest is held). */
  private command(line: string, rest: Buffer): Buffer | null {
    const words = line.trim().replace(/\s+/g, ' ');
    const upper = words.toUpperCase();
    if (upper === '@PJL' || upper === '@PJL COMMENT' || upper.startsWith('@PJL COMMENT ')) return rest;
    if (upper === '@PJL INFO STATUS') {
      this.socket.write(encodeStatus('info', pjlStatusOf(this.ctx)));
      return rest;
    }
    let m = /^@PJL USTATUS (JOB|DEVICE)\s*=\s*(ON|OFF|VERBOSE)$/i.exec(words);
    if (m) {
      const on = m[2]!.toUpperCase() !== 'OFF';
      if (m[1]!.toUpperCase() === 'JOB') this.ustatusJob = on;
      else this.ustatusDevice = on;
      return rest;
    }
    m = /^@PJL ENTER LANGUAGE\s*=/i.exec(words);
    if (m) {
      this.mode = 'data';
      return rest;
    }
    m = /^@PJL SET (COPIES|QTY)\s*=\s*(\d{1,3})$/i.exec(words);
    if (m) {
      if (this.job && !this.job.writer) this.job.copies = Math.max(1, Number(m[2]));
      return rest;
    }
    if (/^@PJL JOB(\s|$)/i.test(words)) {
      const name = /NAME\s*=\s*"([^"]*)"/i.exec(words)?.[1];
      if (this.job) {
        // A JOB inside a job: the printer closes the open one first.
        this.closeJob('completed', Buffer.concat([Buffer.from(line + '\n', 'latin1'), rest]));
        return null;
      }
      this.job = { pjl: true, name, copies: 1, writer: undefined, bytes: 0, formFeeds: 0, paperOutDone: false };
      this.ctx.jobStarted?.();
      if (this.ustatusJob) this.socket.write(encodeJobEvent('START', name));
      return rest;
    }
    if (/^@PJL EOJ(\s|$)/i.test(words)) {
      if (this.job?.pjl) {
        this.closeJob('completed', rest);
        return null;
      }
      return rest;
    }
    return rest; // SET/DEFAULT/INQUIRE/…: accepted, nothing to simulate
  }

  private ensureWriter(job: OpenJob): RecordedJobWriter {
    if (!job.writer) job.writer = this.ctx.recorder.begin({ protocol: 'raw9100', ...(job.name === undefined ? {} : { name: job.name }), copies: job.copies });
    return job.writer;
  }

  /** Record document data; returns how many bytes were taken (fewer when a fault stops the job). */
  private record(data: Buffer): number {
    if (data.length === 0) return 0;
    if (!this.job) {
      this.job = { pjl: false, name: undefined, copies: 1, writer: undefined, bytes: 0, formFeeds: 0, paperOutDone: false };
      this.ctx.jobStarted?.();
    }
    const job = this.job;
    const f = this.ctx.faults;
    const toPaperOut = f.paperOutAfterBytes > 0 && !job.paperOutDone ? Math.max(0, f.paperOutAfterBytes - job.bytes) : Number.POSITIVE_INFINITY;
    const toClose = f.closeAfterBytes > 0 ? Math.max(0, f.closeAfterBytes - job.bytes) : Number.POSITIVE_INFINITY;
    const n = Math.min(data.length, toPaperOut, toClose);
    if (n > 0) {
      const part = data.subarray(0, n);
      const writer = this.ensureWriter(job);
      job.bytes += n;
      for (let i = part.indexOf(FF); i >= 0; i = part.indexOf(FF, i + 1)) job.formFeeds++;
      if (!writer.write(part)) {
        this.pause('disk');
        void writer.drained().then(() => this.unpause('disk'));
      }
    }
    if (f.closeAfterBytes > 0 && job.bytes >= f.closeAfterBytes) {
      this.die();
      return n;
    }
    if (f.paperOutAfterBytes > 0 && !job.paperOutDone && job.bytes >= f.paperOutAfterBytes) {
      job.paperOutDone = true;
      this.paperOut();
    }
    return n;
  }

  private paperOut(): void {
    this.blocked = 'paper';
    this.pause('paper');
    this.ctx.paperOut?.();
    const tell = () => {
      if (this.ustatusDevice && !this.dead) this.socket.write(encodeStatus('ustatus', pjlStatusOf(this.ctx)));
    };
    tell();
    // Repeated, as printers repeat a status that needs a person: and a write is how a server whose
    // reading is stopped notices that the client has gone.
    if (this.ustatusDevice) this.ticker = setInterval(tell, 1000);
  }

  private onFaultsChanged(): void {
    if (this.blocked === 'paper' && this.ctx.status().reasons.includes('media-empty') === false) {
      clearInterval(this.ticker);
      this.ticker = undefined;
      if (this.ustatusDevice && !this.dead) this.socket.write(encodeStatus('ustatus', pjlStatusOf(this.ctx)));
      this.unblock();
    }
  }

  /** End the open job (its file flushed) before reading on; a PJL job gets its END unless never-confirm. */
  private closeJob(state: 'completed' | 'aborted', rest: Buffer): void {
    const job = this.job;
    if (!job) return;
    this.job = undefined;
    this.block('job', rest);
    void (async () => {
      try {
        await this.ensureWriter(job).end(state);
      } catch (err) {
        // the output directory failed under us: the job cannot be recorded, so the printer drops the connection
        recorderFailed(err);
        this.ctx.jobEnded?.();
        this.die();
        return;
      }
      this.ctx.jobEnded?.();
      if (job.pjl && this.ustatusJob && state === 'completed' && !this.ctx.faults.neverConfirm && !this.dead) {
        this.socket.write(encodeJobEvent('END', job.name, job.bytes === 0 ? 0 : Math.max(1, job.formFeeds)));
      }
      this.unblock();
    })();
  }

  /** The client finished sending: what is left is data, an open job is complete, then we close too. */
  private maybeFinish(): void {
    if (!this.peerEnded || this.blocked || this.finished || this.dead) return;
    const carry = this.carry;
    this.carry = Buffer.alloc(0);
    if (carry.length) {
      const n = Math.min(carry.length, UEL.length);
      if (this.mode === 'pjl' && startsWithPjl(carry)) {
        // a last command line without its line feed
        const rest = this.command(carry.toString('latin1').replace(/\r$/, ''), Buffer.alloc(0));
        if (rest === null) return; // the job closes first; unblock() calls back here
      } else if (this.mode === 'data' || !carry.subarray(0, n).equals(UEL.subarray(0, n))) {
        // data mode keeps a possible UEL start back; at the end of the stream it is data after all
        this.mode = 'data';
        this.record(carry);
        if (this.blocked || this.dead) return;
      }
    }
    if (this.job) {
      this.closeJob('completed', Buffer.alloc(0));
      return;
    }
    this.finished = true;
    // Port open again first, then our FIN: the client's next job finds the printer listening.
    void this.hooks.release().then(() => this.socket.end());
  }

  /** The printer closes the connection (close-after fault). */
  private die(): void {
    this.dead = true;
    this.socket.pause();
    void this.hooks.release().then(() => this.socket.destroy());
  }

  private async onClose(): Promise<void> {
    this.dead = true;
    clearInterval(this.ticker);
    clearTimeout(this.slowTimer);
    this.unsubscribe?.();
    const job = this.job;
    this.job = undefined;
    if (job) {
      await this.ensureWriter(job).end('aborted').catch(recorderFailed);
      this.ctx.jobEnded?.();
    }
    this.hooks.gone();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Start the raw 9100 server; `port: 0` picks a free one (then kept across offline/busy). */
export async function startRawServer(ctx: PrinterSimContext, opts: { host: string; port: number }): Promise<StartedServer> {
  let active: RawSession | undefined;
  let activeGone: Promise<void> = Promise.resolve();
  let listener: Server | undefined;
  let listening: Promise<void> | undefined;
  let port = opts.port;
  let closed = false;
  let relistenTimer: NodeJS.Timeout | undefined;

  const onConnection = (socket: Socket): void => {
    if (closed || active) {
      // accepted from the backlog just before the port stopped listening: refuse it the hard way
      socket.resetAndDestroy();
      return;
    }
    let done!: () => void;
    activeGone = new Promise<void>((r) => {
      done = r;
    });
    let released = false;
    const session = new RawSession(ctx, socket, {
      release: () => {
        if (released) return Promise.resolve();
        released = true;
        active = undefined;
        return apply();
      },
      gone: () => {
        if (!released) {
          released = true;
          if (active === session) active = undefined;
          void apply();
        }
        done();
      },
    });
    active = session;
    void apply();
    socket.resume();
  };

  const listen = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const s = createServer({ pauseOnConnect: true, allowHalfOpen: true }, onConnection);
      s.once('error', reject);
      s.listen({ host: opts.host, port, exclusive: true }, () => {
        s.off('error', reject);
        const a = s.address();
        if (a && typeof a === 'object') port = a.port;
        listener = s;
        resolve();
      });
    });

  /**
   * Listening exactly when a new job could be taken: not offline, not busy (the fault), no connection
   * open. Resolves once the port is in the wanted state, so a session re-opens the port before it
   * closes its connection and a client that sends right after its last job is never refused.
   */
  const apply = (): Promise<void> => {
    const want = !closed && !ctx.faults.offline && !ctx.faults.busy && !active;
    if (!want) {
      listener?.close();
      listener = undefined;
      return Promise.resolve();
    }
    if (listener) return Promise.resolve();
    if (!listening) {
      listening = listen().then(
        () => {
          listening = undefined;
          // the wish may have changed while the port opened
          if (closed || ctx.faults.offline || ctx.faults.busy || active) return apply();
        },
        () => {
          // the port was taken in the meantime (another process): try again shortly
          listening = undefined;
          clearTimeout(relistenTimer);
          relistenTimer = setTimeout(() => void apply(), 100);
        },
      );
    }
    return listening;
  };

  await listen();
  const unsubscribe = ctx.onChange?.(() => void apply());
  await apply();
  return {
    get port() {
      return port;
    },
    async close() {
      closed = true;
      clearTimeout(relistenTimer);
      unsubscribe?.();
      await listening;
      listener?.close();
      listener = undefined;
      active?.destroy();
      await activeGone;
    },
  };
}
