/**
 * The printer simulator's IPP server: HTTP POST application/ipp at /ipp/print (RFC 8010 §4), speaking
 * Get-Printer-Attributes, Validate-Job, Print-Job, Create-Job, Send-Document, Get-Job-Attributes,
 * Get-Jobs and Cancel-Job (RFC 8011), faithful enough for ipptool's standard tests and a CUPS queue.
 *
 * Documents are streamed into `ctx.recorder` as they arrive (the request is read with backpressure,
 * never held whole). `ctx.faults` is read live:
 * - offline: the port stops listening (connection refused) until the fault is cleared;
 * - busy: job-creating operations answer server-error-busy;
 * - slowBytesPerSec: the document is read at that rate (TCP backpressure slows the client);
 * - paperOutAfterBytes: after that many bytes of a job the printer is 'stopped' with 'media-empty'; the
 *   job (still received in full: an IPP printer spools) is held in processing-stopped until `resume()`
 *   or the fault is cleared, then completes;
 * - closeAfterBytes: the connection is cut after that many bytes of a document; the job is aborted;
 * - neverConfirm: a received job stays 'processing' for ever.
 */
import { randomUUID } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { attr, decodeMessage, encodeMessage, findAttr, group, type IppAttribute, type IppGroup, type IppMessage, ints, strings } from '../../firmware-bridge/printer/ipp/codec.js';
import { isTerminalJobState, JOB_STATE, OP, STATUS, type StatusName } from '../../firmware-bridge/printer/ipp/constants.js';
import { isTallyboxError } from '../../src/util/errors.js';
import { mediaType } from '../../src/util/http-body.js';
import { dateTime, MAX_COPIES, printerAttributes, SUPPORTED_FORMATS, SUPPORTED_OPERATIONS, selectAttributes } from './ipp/attributes.js';
import type { PrinterSimContext, RecordedJobWriter, StartedServer } from './types.js';

export const IPP_PATH = '/ipp/print';
/** Largest attribute part accepted before the document (real requests are well under 4 KiB). */
const MAX_ATTRIBUTES = 256 * 1024;
/** Jobs remembered for Get-Jobs/Get-Job-Attributes. */
const MAX_JOBS = 500;

export interface IppSimServer extends StartedServer {
  /** Paper loaded again: the printer leaves 'stopped' and held jobs complete. */
  resume(): void;
}

interface SimJob {
  id: number;
  name: string | undefined;
  user: string;
  format: string;
  copies: number;
  state: number;
  reasons: string[];
  createdMs: number;
  createdUp: number;
  processingUp: number | undefined;
  completedUp: number | undefined;
  bytes: number;
  hasDocument: boolean;
  /** The whole document is in, the job waits for paper. */
  held: boolean;
  writer: RecordedJobWriter | undefined;
}

class Refusal {
  constructor(
    readonly status: StatusName,
    readonly message: string,
  ) {}
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `tls` (PEM key and certificate) makes it an IPPS printer (RFC 7472: HTTPS on the same port). */
export async function startIppServer(ctx: PrinterSimContext, opts: { host: string; port: number; tls?: { key: string | Buffer; cert: string | Buffer } }): Promise<IppSimServer> {
  const sim = new IppSim(ctx, opts.host, opts.tls);
  await sim.start(opts.port);
  return sim;
}

class IppSim implements IppSimServer {
  private readonly server: http.Server;
  private readonly scheme: 'ipp' | 'ipps';
  private readonly sockets = new Set<Socket>();
  private readonly jobs = new Map<number, SimJob>();
  private nextJobId = 1;
  private paperOut = false;
  private listening = false;
  private closed = false;
  private boundPort = 0;
  private watcher: NodeJS.Timeout | undefined;
  private readonly startedAt = performance.now();
  private readonly uuid = randomUUID();

  constructor(
    private readonly ctx: PrinterSimContext,
    private readonly host: string,
    tls?: { key: string | Buffer; cert: string | Buffer },
  ) {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch(() => {
        // The client went away mid-request (or the server is closing): nothing left to answer.
        res.destroy();
      });
    };
    this.scheme = tls ? 'ipps' : 'ipp';
    this.server = tls ? (https.createServer({ key: tls.key, cert: tls.cert }, handler) as unknown as http.Server) : http.createServer(handler);
    // A 'slow' printer may legitimately take minutes to read one document.
    this.server.requestTimeout = 0;
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  get port(): number {
    return this.boundPort;
  }

  async start(port: number): Promise<void> {
    await this.listen(port);
    if (this.ctx.faults.offline) await this.unlisten();
    // Faults are switched at run time: follow 'offline' and the end of a paper-out.
    this.watcher = setInterval(() => void this.follow(), 50);
    this.watcher.unref();
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, this.host, () => {
        this.server.off('error', onError);
        this.boundPort = (this.server.address() as { port: number }).port;
        this.listening = true;
        resolve();
      });
    });
  }

  private unlisten(): Promise<void> {
    this.listening = false;
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }

  private switching = false;
  private async follow(): Promise<void> {
    if (this.switching || this.closed) return;
    this.switching = true;
    try {
      if (this.ctx.faults.offline && this.listening) await this.unlisten();
      else if (!this.ctx.faults.offline && !this.listening) await this.listen(this.boundPort);
      if (this.paperOut && this.ctx.faults.paperOutAfterBytes === 0) this.resume();
    } catch {
      // The port could not be bound again yet (in use for a moment): the next tick tries again.
    } finally {
      this.switching = false;
    }
  }

  resume(): void {
    this.paperOut = false;
    for (const j of this.jobs.values()) {
      if (j.held) {
        j.held = false;
        void this.finish(j);
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.watcher) clearInterval(this.watcher);
    if (this.listening) await this.unlisten();
    for (const j of this.jobs.values()) if (j.writer) await this.endRecording(j, 'aborted');
  }

  // -------------------------------------------------------------------------------------------
  // Printer state

  private upTime(): number {
    return 1 + Math.floor((performance.now() - this.startedAt) / 1000);
  }

  private printerState(): { state: number; reasons: string[]; message: string } {
    if (this.paperOut) return { state: 5, reasons: ['media-empty'], message: 'out of paper' };
    const shared = this.ctx.status();
    if (shared.state === 'stopped') return { state: 5, reasons: shared.reasons.length ? shared.reasons : ['other'], message: 'stopped' };
    const busy = shared.state === 'processing' || [...this.jobs.values()].some((j) => j.state === JOB_STATE.processing && j.writer);
    return { state: busy ? 4 : 3, reasons: ['none'], message: busy ? 'printing' : 'idle' };
  }

  private printerUri(req: IncomingMessage): string {
    const host = req.headers.host ?? `${this.host}:${this.boundPort}`;
    return `${this.scheme}://${host}${IPP_PATH}`;
  }

  // -------------------------------------------------------------------------------------------
  // HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'POST') {
      res.writeHead(req.method === 'GET' && (path === '/' || path === IPP_PATH) ? 200 : 405, { 'content-type': 'text/plain' });
      res.end('tallybox-sim IPP printer: POST application/ipp to /ipp/print\n');
      return;
    }
    // The printer's URI, or a job's URI under it (ipp://…/ipp/print/7: RFC 8011 job-uri targets).
    if (path !== IPP_PATH && !/^\/ipp\/print\/\d+$/.test(path ?? '')) {
      req.resume();
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    if (mediaType(req.headers['content-type']) !== 'application/ipp') {
      req.resume();
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('Content-Type must be application/ipp\n');
      return;
    }
    const it = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let buf = Buffer.alloc(0);
    let decoded: { message: IppMessage; dataOffset: number } | undefined;
    for (;;) {
      try {
        decoded = decodeMessage(buf);
        break;
      } catch (err) {
        const truncated = isTallyboxError(err) && err.details.reason === 'truncated';
        if (!truncated) return this.refuseRaw(req, res, it, buf, 'client-error-bad-request');
      }
      const n = await it.next();
      if (n.done) return this.refuseRaw(req, res, it, buf, 'client-error-bad-request');
      buf = Buffer.concat([buf, n.value]);
      if (buf.length > MAX_ATTRIBUTES) return this.refuseRaw(req, res, it, buf, 'client-error-request-entity-too-large');
    }
    const rest = buf.subarray(decoded.dataOffset);
    const document = (async function* () {
      if (rest.length > 0) yield rest;
      for (;;) {
        const n = await it.next();
        if (n.done) return;
        yield n.value;
      }
    })();
    const msg = decoded.message;
    let reply: IppMessage;
    try {
      reply = await this.operate(req, msg, document);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      reply = this.response(msg, err.status, [], err.message);
    }
    // Whatever of the body the operation did not want is read and dropped, so the connection stays usable.
    for await (const _ of document) void _;
    if (res.destroyed) return;
    const body = encodeMessage(reply);
    res.writeHead(200, { 'content-type': 'application/ipp', 'content-length': body.length });
    res.end(body);
  }

  /** A request whose header cannot be decoded: answered with a bare header (the request-id is echoed when readable). */
  private async refuseRaw(req: IncomingMessage, res: ServerResponse, it: AsyncIterator<Buffer>, head: Buffer, status: StatusName): Promise<void> {
    const requestId = head.length >= 8 ? head.readInt32BE(4) : 0;
    if (status === 'client-error-request-entity-too-large') req.socket.destroy();
    else while (!(await it.next()).done);
    if (res.destroyed) return;
    const body = encodeMessage({ version: { major: 1, minor: 1 }, code: STATUS[status], requestId, groups: [group('operation', [attr('attributes-charset', 'charset', 'utf-8'), attr('attributes-natural-language', 'naturalLanguage', 'en')])] });
    res.writeHead(200, { 'content-type': 'application/ipp', 'content-length': body.length });
    res.end(body);
  }

  private response(req: IppMessage, status: StatusName, groups: IppGroup[], message?: string): IppMessage {
    const v = req.version;
    const version = (v.major === 1 && v.minor <= 1) || (v.major === 2 && v.minor <= 2) ? v : { major: 1, minor: 1 };
    const op: IppAttribute[] = [attr('attributes-charset', 'charset', 'utf-8'), attr('attributes-natural-language', 'naturalLanguage', 'en'), attr('status-message', 'text', message ?? status)];
    return { version, code: STATUS[status], requestId: req.requestId, groups: [group('operation', op), ...groups] };
  }

  // -------------------------------------------------------------------------------------------
  // Operations

  /** RFC 8011 §4.1: version, request-id, the operation group and its first two attributes, the target. */
  private checkRequest(msg: IppMessage): IppAttribute[] {
    if (msg.version.major < 1 || msg.version.major > 2) throw new Refusal('server-error-version-not-supported', `IPP/${msg.version.major}.${msg.version.minor} is not supported`);
    if (msg.requestId <= 0) throw new Refusal('client-error-bad-request', 'request-id must be 1 or more');
    const opGroups = msg.groups.filter((g) => g.tag === 'operation');
    if (msg.groups[0]?.tag !== 'operation' || opGroups.length !== 1) throw new Refusal('client-error-bad-request', 'the request must start with one operation attributes group');
    const a = msg.groups[0].attributes;
    const cs = a[0];
    const nl = a[1];
    if (cs?.name !== 'attributes-charset' || cs.values.length !== 1 || cs.values[0]!.tag !== 'charset') throw new Refusal('client-error-bad-request', 'attributes-charset must come first');
    if (nl?.name !== 'attributes-natural-language' || nl.values.length !== 1 || nl.values[0]!.tag !== 'naturalLanguage') throw new Refusal('client-error-bad-request', 'attributes-natural-language must come second');
    const charset = strings(cs)[0]!.toLowerCase();
    if (charset !== 'utf-8' && charset !== 'us-ascii') throw new Refusal('client-error-charset-not-supported', `charset ${charset} is not supported`);
    const seen = new Set<string>();
    for (const g of msg.groups) {
      for (const x of g.attributes) {
        if (g.tag === 'operation' && seen.has(x.name)) throw new Refusal('client-error-bad-request', `${x.name} appears twice`);
        if (g.tag === 'operation') seen.add(x.name);
      }
    }
    return a;
  }

  private target(op: IppAttribute[], needJob: boolean): { jobId: number | undefined } {
    const printerUri = op.find((x) => x.name === 'printer-uri');
    const jobUri = op.find((x) => x.name === 'job-uri');
    if (printerUri && (printerUri.values.length !== 1 || printerUri.values[0]!.tag !== 'uri')) throw new Refusal('client-error-bad-request', 'printer-uri must be one uri');
    if (!needJob) {
      if (!printerUri) throw new Refusal('client-error-bad-request', 'printer-uri is missing');
      return { jobId: undefined };
    }
    if (jobUri) {
      const m = /\/(\d+)$/.exec(strings(jobUri)[0] ?? '');
      if (!m || jobUri.values[0]!.tag !== 'uri') throw new Refusal('client-error-bad-request', 'job-uri is not a job of this printer');
      return { jobId: Number(m[1]) };
    }
    if (!printerUri) throw new Refusal('client-error-bad-request', 'printer-uri or job-uri is missing');
    const idAttr = op.find((x) => x.name === 'job-id');
    if (idAttr?.values.length !== 1 || idAttr.values[0]!.tag !== 'integer') throw new Refusal('client-error-bad-request', 'job-id is missing or not an integer');
    return { jobId: ints(idAttr)[0]! };
  }

  private job(jobId: number | undefined): SimJob {
    const j = jobId === undefined ? undefined : this.jobs.get(jobId);
    if (!j) throw new Refusal('client-error-not-found', `job ${jobId} does not exist`);
    return j;
  }

  private async operate(req: IncomingMessage, msg: IppMessage, document: AsyncIterable<Buffer>): Promise<IppMessage> {
    const op = this.checkRequest(msg);
    const code = msg.code;
    if (!SUPPORTED_OPERATIONS.includes(code as (typeof SUPPORTED_OPERATIONS)[number])) throw new Refusal('server-error-operation-not-supported', `operation 0x${code.toString(16)} is not supported`);
    const isJobOp = code === OP['Send-Document'] || code === OP['Cancel-Job'] || code === OP['Get-Job-Attributes'];
    const { jobId } = this.target(op, isJobOp);
    const uri = this.printerUri(req);
    const requested = strings(op.find((x) => x.name === 'requested-attributes'));
    switch (code) {
      case OP['Get-Printer-Attributes']: {
        const format = strings(op.find((x) => x.name === 'document-format'))[0];
        if (format !== undefined && !SUPPORTED_FORMATS.includes(format as (typeof SUPPORTED_FORMATS)[number])) throw new Refusal('client-error-document-format-not-supported', `document-format ${format} is not supported`);
        const st = this.printerState();
        const all = printerAttributes({
          uri,
          moreInfo: `${this.scheme === 'ipps' ? 'https' : 'http'}://${req.headers.host ?? `${this.host}:${this.boundPort}`}/`,
          ...st,
          accepting: true,
          queued: [...this.jobs.values()].filter((j) => !isTerminalJobState(j.state)).length,
          upTime: this.upTime(),
          nowMs: Date.now(),
          uuid: this.uuid,
        });
        return this.response(msg, 'successful-ok', [group('printer', selectAttributes(all, requested.length ? requested : undefined))]);
      }
      case OP['Validate-Job']: {
        this.jobTemplate(msg, op);
        return this.response(msg, 'successful-ok', []);
      }
      case OP['Print-Job']:
      case OP['Create-Job']: {
        const t = this.jobTemplate(msg, op);
        if (this.ctx.faults.busy) throw new Refusal('server-error-busy', 'the printer is busy');
        const j = this.newJob(t, op);
        if (code === OP['Print-Job']) await this.receive(req, j, document);
        return this.response(msg, 'successful-ok', [group('job', this.jobAttributes(j, uri, ['job-id', 'job-uri', 'job-state', 'job-state-reasons', 'job-state-message']))]);
      }
      case OP['Send-Document']: {
        const j = this.job(jobId);
        const last = op.find((x) => x.name === 'last-document');
        if (last?.values[0]?.tag !== 'boolean') throw new Refusal('client-error-bad-request', 'last-document is missing');
        if (j.hasDocument || isTerminalJobState(j.state)) throw new Refusal('client-error-not-possible', `job ${j.id} is ${j.hasDocument ? 'already sent' : 'finished'}`);
        const format = strings(op.find((x) => x.name === 'document-format'))[0];
        if (format !== undefined) {
          if (!SUPPORTED_FORMATS.includes(format as (typeof SUPPORTED_FORMATS)[number])) throw new Refusal('client-error-document-format-not-supported', `document-format ${format} is not supported`);
          j.format = format;
        }
        if (last.values[0].value === false) throw new Refusal('server-error-multiple-document-jobs-not-supported', 'one document per job');
        await this.receive(req, j, document);
        return this.response(msg, 'successful-ok', [group('job', this.jobAttributes(j, uri, ['job-id', 'job-uri', 'job-state', 'job-state-reasons', 'job-state-message']))]);
      }
      case OP['Get-Job-Attributes']: {
        const j = this.job(jobId);
        return this.response(msg, 'successful-ok', [group('job', this.jobAttributes(j, uri, requested))]);
      }
      case OP['Get-Jobs']: {
        const which = strings(op.find((x) => x.name === 'which-jobs'))[0] ?? 'not-completed';
        if (which !== 'completed' && which !== 'not-completed' && which !== 'all') throw new Refusal('client-error-attributes-or-values-not-supported', `which-jobs ${which} is not supported`);
        const limit = ints(op.find((x) => x.name === 'limit'))[0];
        const myJobs = op.find((x) => x.name === 'my-jobs')?.values[0];
        const user = strings(op.find((x) => x.name === 'requesting-user-name'))[0];
        let list = [...this.jobs.values()].filter((j) => (which === 'all' ? true : which === 'completed' ? isTerminalJobState(j.state) : !isTerminalJobState(j.state)));
        if (myJobs?.tag === 'boolean' && myJobs.value && user !== undefined) list = list.filter((j) => j.user === user);
        list.sort((a, b) => b.id - a.id);
        if (limit !== undefined && limit > 0) list = list.slice(0, limit);
        const want = requested.length ? requested : ['job-id', 'job-uri'];
        return this.response(
          msg,
          'successful-ok',
          list.map((j) => group('job', this.jobAttributes(j, uri, want))),
        );
      }
      case OP['Cancel-Job']: {
        const j = this.job(jobId);
        if (isTerminalJobState(j.state)) throw new Refusal('client-error-not-possible', `job ${j.id} is already ${j.state === JOB_STATE.completed ? 'completed' : 'finished'}`);
        j.state = JOB_STATE.canceled;
        j.reasons = ['job-canceled-by-user'];
        j.completedUp = this.upTime();
        j.held = false;
        if (j.writer) await this.endRecording(j, 'canceled');
        return this.response(msg, 'successful-ok', []);
      }
      default:
        throw new Refusal('server-error-operation-not-supported', 'operation not supported');
    }
  }

  /** The job template attributes the simulator looks at (copies, document-format); the rest are accepted as they are. */
  private jobTemplate(msg: IppMessage, op: IppAttribute[]): { copies: number; format: string; name: string | undefined } {
    const format = strings(op.find((x) => x.name === 'document-format'))[0] ?? 'application/octet-stream';
    if (!SUPPORTED_FORMATS.includes(format as (typeof SUPPORTED_FORMATS)[number])) throw new Refusal('client-error-document-format-not-supported', `document-format ${format} is not supported`);
    const copiesAttr = findAttr(msg, 'job', 'copies');
    const copies = copiesAttr ? ints(copiesAttr)[0] : 1;
    if (copies === undefined || copies < 1 || copies > MAX_COPIES) throw new Refusal('client-error-attributes-or-values-not-supported', `copies must be 1-${MAX_COPIES}`);
    const compression = strings(op.find((x) => x.name === 'compression'))[0];
    if (compression !== undefined && compression !== 'none') throw new Refusal('client-error-compression-not-supported', `compression ${compression} is not supported`);
    return { copies, format, name: strings(op.find((x) => x.name === 'job-name'))[0] };
  }

  private newJob(t: { copies: number; format: string; name: string | undefined }, op: IppAttribute[]): SimJob {
    const id = this.nextJobId++;
    const j: SimJob = {
      id,
      name: t.name,
      user: strings(op.find((x) => x.name === 'requesting-user-name'))[0] ?? 'anonymous',
      format: t.format,
      copies: t.copies,
      state: JOB_STATE.pending,
      reasons: ['none'],
      createdMs: Date.now(),
      createdUp: this.upTime(),
      processingUp: undefined,
      completedUp: undefined,
      bytes: 0,
      hasDocument: false,
      held: false,
      writer: undefined,
    };
    this.jobs.set(id, j);
    // Forget the oldest finished jobs beyond the limit (a long-running simulator must not grow).
    for (const old of this.jobs.values()) {
      if (this.jobs.size <= MAX_JOBS) break;
      if (isTerminalJobState(old.state)) this.jobs.delete(old.id);
    }
    return j;
  }

  /** Stream the document into the recorder, applying the faults; the job's state follows. */
  private async receive(req: IncomingMessage, j: SimJob, document: AsyncIterable<Buffer>): Promise<void> {
    j.hasDocument = true;
    j.state = JOB_STATE.processing;
    j.reasons = ['job-printing'];
    j.processingUp = this.upTime();
    const writer = this.ctx.recorder.begin({ protocol: 'ipp', ...(j.name !== undefined ? { name: j.name } : {}), format: j.format, copies: j.copies });
    j.writer = writer;
    for await (const chunk of document) {
      if (j.state === JOB_STATE.canceled || j.state === JOB_STATE.aborted) continue; // Cancel-Job arrived mid-document: drop the rest
      const { closeAfterBytes, paperOutAfterBytes, slowBytesPerSec } = this.ctx.faults;
      let c = chunk;
      const cut = closeAfterBytes > 0 && j.bytes + c.length >= closeAfterBytes;
      if (cut) c = c.subarray(0, closeAfterBytes - j.bytes);
      await this.record(j, c);
      if (cut) {
        j.state = JOB_STATE.aborted;
        j.reasons = ['aborted-by-system'];
        j.completedUp = this.upTime();
        await this.endRecording(j, 'aborted');
        req.socket.destroy();
        return;
      }
      if (paperOutAfterBytes > 0 && j.bytes >= paperOutAfterBytes && !this.paperOut) {
        this.paperOut = true;
        j.state = JOB_STATE['processing-stopped'];
        j.reasons = ['printer-stopped'];
      }
      if (slowBytesPerSec > 0) await sleep((c.length * 1000) / slowBytesPerSec);
    }
    if (j.state === JOB_STATE.canceled || j.state === JOB_STATE.aborted) return;
    if (this.paperOut) {
      // Held until paper is back (resume()): the recording stays open, the job unfinished.
      j.state = JOB_STATE['processing-stopped'];
      j.reasons = ['printer-stopped'];
      j.held = true;
      return;
    }
    await this.finish(j);
  }

  private async record(j: SimJob, c: Buffer): Promise<void> {
    if (c.length === 0 || !j.writer) return;
    j.bytes += c.length;
    // The recorder may say "disk behind" (write() === false, then drained()): stop reading until it catches up.
    const w = j.writer as RecordedJobWriter & { drained?: () => Promise<void> };
    const more = w.write(c) as unknown;
    if (more === false && w.drained) await w.drained();
  }

  /** The document is in: the job completes, or (neverConfirm) stays 'processing' for ever. */
  private async finish(j: SimJob): Promise<void> {
    await this.endRecording(j, 'completed');
    if (this.ctx.faults.neverConfirm) {
      j.state = JOB_STATE.processing;
      j.reasons = ['job-printing'];
      return;
    }
    j.state = JOB_STATE.completed;
    j.reasons = ['job-completed-successfully'];
    j.completedUp = this.upTime();
  }

  private async endRecording(j: SimJob, state: 'completed' | 'aborted' | 'canceled'): Promise<void> {
    const w = j.writer;
    j.writer = undefined;
    if (w) await w.end(state);
  }

  private jobAttributes(j: SimJob, printerUri: string, requested: string[]): IppAttribute[] {
    const noValue = (name: string): IppAttribute => ({ name, values: [{ tag: 'no-value' }] });
    const all: IppAttribute[] = [
      attr('job-id', 'integer', j.id),
      attr('job-uri', 'uri', `${printerUri}/${j.id}`),
      attr('job-printer-uri', 'uri', printerUri),
      j.name !== undefined ? attr('job-name', 'name', j.name) : attr('job-name', 'name', `job-${j.id}`),
      attr('job-originating-user-name', 'name', j.user),
      attr('job-state', 'enum', j.state),
      attr('job-state-reasons', 'keyword', ...j.reasons),
      attr('job-state-message', 'text', j.reasons[0]!),
      attr('job-printer-up-time', 'integer', this.upTime()),
      attr('time-at-creation', 'integer', j.createdUp),
      j.processingUp !== undefined ? attr('time-at-processing', 'integer', j.processingUp) : noValue('time-at-processing'),
      j.completedUp !== undefined ? attr('time-at-completed', 'integer', j.completedUp) : noValue('time-at-completed'),
      { name: 'date-time-at-creation', values: [dateTime(j.createdMs)] },
      attr('copies', 'integer', j.copies),
      attr('document-format', 'mimeMediaType', j.format),
      attr('job-k-octets', 'integer', Math.ceil(j.bytes / 1024)),
      attr('job-impressions-completed', 'integer', j.state === JOB_STATE.completed ? j.copies : 0),
      attr('number-of-documents', 'integer', j.hasDocument ? 1 : 0),
    ];
    if (requested.length === 0 || requested.includes('all') || requested.includes('job-description') || requested.includes('job-template')) return all;
    const want = new Set(requested);
    return all.filter((a) => want.has(a.name));
  }
}
