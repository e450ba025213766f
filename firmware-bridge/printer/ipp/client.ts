/**
 * IppPrinter: the `Printer` contract (firmware-bridge/devices.ts) over IPP/1.1 and IPPS (RFC 8011,
 * RFC 8010, RFC 7472).
 *
 * - probe(): Get-Printer-Attributes (printer-state, printer-state-reasons, printer-is-accepting-jobs,
 *   operations-supported, document-format-supported).
 * - send(): probe first (a stopped or not-accepting printer is PRINTER_STOPPED before anything is sent,
 *   so the job can be retried); then Create-Job + Send-Document when the printer lists Create-Job, else
 *   Print-Job. `onAccepted(job-id)` fires the moment a job-id comes back: after Create-Job, before any
 *   document byte; with Print-Job only after the whole document (that operation gives no id earlier).
 *   The document is streamed in the chunked request body with backpressure. Then Get-Job-Attributes is
 *   polled for a short while (confirmWaitMs) until the job is completed/aborted/canceled, and whatever
 *   is known by then is returned ('pending'/'processing' when the printer has not finished).
 * - The job carries job-name = the cloud's job id, requesting-user-name = a fixed non-personal value,
 *   never a person's or a file's name.
 * - The signal aborts the upload, and Cancel-Job is sent when a job-id exists.
 */
import type { Printer, PrinterJobState, PrinterState, PrinterStatus, PrintSendResult, PrintSubmission } from '../../devices.js';
import { TallyboxError } from '../../../src/util/errors.js';
import { cancelledError, printerError, stoppedError } from '../errors.js';
import { pause } from '../pause.js';
import { attr, bool, findAttr, group, type IppAttribute, type IppMessage, ints, strings } from './codec.js';
import { isSuccess, isTerminalJobState, JOB_STATE, OP, type OperationName, statusName } from './constants.js';
import { exchange, type IppEndpoint, newRequestId, parseEndpoint } from './transport.js';

export interface IppPrinterOptions {
  /** ipp://host[:631]/ipp/print, ipps://…, or http(s)://… */
  url: string;
  /** PEM CA bundle to verify an IPPS printer's certificate with (default: the system's store). The host name is always checked. */
  caFile?: string;
  /** Idle/answer timeout of one request (default 15 s). */
  timeoutMs?: number;
  /** How long send() polls job-state after the document (default 5 s; 0: once). */
  confirmWaitMs?: number;
  /** Between polls (default 250 ms). */
  pollIntervalMs?: number;
  /** requesting-user-name: a fixed, non-personal value (default 'tallybox'). */
  userName?: string;
  /** How the printer is shown in logs and DeviceState (default: the URL without its query). */
  description?: string;
  /**
   * 'auto' (default): Create-Job + Send-Document when the printer lists Create-Job (a job-id before any
   * byte), else Print-Job. 'print-job': always Print-Job (for printers whose Create-Job is broken).
   */
  submit?: 'auto' | 'print-job';
}

/** What probe() learns; the extra fields decide how send() submits. */
export interface IppPrinterInfo extends PrinterStatus {
  acceptingJobs: boolean | undefined;
  operations: number[];
  formats: string[];
}

const PRINTER_STATES: Record<number, PrinterState> = { 3: 'idle', 4: 'processing', 5: 'stopped' };

export function jobStateOf(code: number | undefined): PrinterJobState {
  switch (code) {
    case JOB_STATE.pending:
    case JOB_STATE['pending-held']:
      return 'pending';
    case JOB_STATE.processing:
    case JOB_STATE['processing-stopped']:
      return 'processing';
    case JOB_STATE.canceled:
      return 'canceled';
    case JOB_STATE.aborted:
      return 'aborted';
    case JOB_STATE.completed:
      return 'completed';
    default:
      return 'unknown';
  }
}

/** IPP status → the contract's codes: busy/unavailable are retried like an unreachable printer; not-accepting is a stop. */
function rejected(op: OperationName, reply: IppMessage): TallyboxError {
  const status = statusName(reply.code);
  const message = strings(findAttr(reply, 'operation', 'status-message'))[0];
  const text = `${op}: the printer answered ${status}${message ? ` (${message.slice(0, 200)})` : ''}`;
  if (status === 'server-error-not-accepting-jobs') return printerError('PRINTER_STOPPED', text, { status });
  if (status === 'server-error-busy' || status === 'server-error-service-unavailable' || status === 'server-error-temporary-error') return printerError('PRINTER_UNREACHABLE', text, { status, reason: 'busy' });
  return printerError('PRINTER_REJECTED', text, { status });
}

/** How long an abort waits for Cancel-Job's answer before cutting the upload anyway. */
const CANCEL_BEFORE_CUT_MS = 2000;

export class IppPrinter implements Printer {
  readonly protocol = 'ipp' as const;
  readonly description: string;
  private readonly ep: IppEndpoint;
  private readonly timeoutMs: number;
  private readonly confirmWaitMs: number;
  private readonly pollIntervalMs: number;
  private readonly userName: string;
  private readonly submit: 'auto' | 'print-job';

  constructor(opts: IppPrinterOptions) {
    this.ep = parseEndpoint(opts.url, opts.caFile ? { caFile: opts.caFile } : {});
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.confirmWaitMs = opts.confirmWaitMs ?? 5_000;
    this.pollIntervalMs = opts.pollIntervalMs ?? 250;
    this.userName = opts.userName ?? 'tallybox';
    this.submit = opts.submit ?? 'auto';
    this.description = opts.description ?? this.ep.printerUri.split('?')[0]!;
  }

  /** The operation attributes every request starts with (RFC 8011 §4.1.4: charset, language, target, in that order). */
  private opAttrs(extra: IppAttribute[] = [], withUser = true): IppAttribute[] {
    return [
      attr('attributes-charset', 'charset', 'utf-8'),
      attr('attributes-natural-language', 'naturalLanguage', 'en'),
      attr('printer-uri', 'uri', this.ep.printerUri),
      ...(withUser ? [attr('requesting-user-name', 'name', this.userName)] : []),
      ...extra,
    ];
  }

  private async call(op: OperationName, groups: IppMessage['groups'], more: { document?: AsyncIterable<Uint8Array>; signal?: AbortSignal; onProgress?: (n: number) => void } = {}) {
    const request: IppMessage = { version: { major: 1, minor: 1 }, code: OP[op], requestId: newRequestId(), groups };
    const reply = await exchange({ endpoint: this.ep, request, timeoutMs: this.timeoutMs, ...more });
    if (reply.message.requestId !== request.requestId) throw printerError('PRINTER_PROTOCOL', `${op}: the reply's request-id ${reply.message.requestId} is not ${request.requestId}`);
    if (!isSuccess(reply.message.code)) throw rejected(op, reply.message);
    return reply;
  }

  /** Get-Printer-Attributes with what a print box needs. */
  async info(): Promise<IppPrinterInfo> {
    const req = this.opAttrs([attr('requested-attributes', 'keyword', 'printer-state', 'printer-state-reasons', 'printer-is-accepting-jobs', 'operations-supported', 'document-format-supported')]);
    const { message } = await this.call('Get-Printer-Attributes', [group('operation', req)]);
    const code = ints(findAttr(message, 'printer', 'printer-state'))[0];
    const state = code === undefined ? undefined : PRINTER_STATES[code];
    if (!state) throw printerError('PRINTER_PROTOCOL', `Get-Printer-Attributes: printer-state ${code ?? 'missing'} is not idle/processing/stopped`);
    const reasons = strings(findAttr(message, 'printer', 'printer-state-reasons'));
    return {
      state,
      reasons: reasons.length > 0 ? reasons : ['none'],
      acceptingJobs: bool(findAttr(message, 'printer', 'printer-is-accepting-jobs')),
      operations: ints(findAttr(message, 'printer', 'operations-supported')),
      formats: strings(findAttr(message, 'printer', 'document-format-supported')),
    };
  }

  async probe(): Promise<PrinterStatus> {
    const { state, reasons } = await this.info();
    return { state, reasons };
  }

  async send(job: PrintSubmission): Promise<PrintSendResult> {
    const { signal } = job;
    if (signal?.aborted) throw cancelledError('before it was sent');
    if (!Number.isInteger(job.copies) || job.copies < 1) throw printerError('PRINTER_REJECTED', `copies ${job.copies} is not a positive integer`, { status: 'client-error-bad-request' });
    const info = await this.info();
    if (info.state === 'stopped' || info.acceptingJobs === false) throw stoppedError('the printer', info, {}, info.acceptingJobs === false ? ', not accepting jobs' : '');
    const jobAttrs = job.copies > 1 ? [group('job', [attr('copies', 'integer', job.copies)])] : [];
    let ref: string | undefined;
    let jobId: number | undefined;
    const accepted = (id: number) => {
      jobId = id;
      ref = String(id);
      job.onAccepted?.(ref);
    };
    const progress = job.onProgress ? { onProgress: job.onProgress } : {};
    const sig = signal ? { signal } : {};
    let bytesSent = 0;
    /** Cancel-Job already went out (the abort handler sends it before cutting the upload). */
    let cancelSent = false;
    try {
      if (this.submit === 'auto' && info.operations.includes(OP['Create-Job']) && info.operations.includes(OP['Send-Document'])) {
        const created = await this.call('Create-Job', [group('operation', this.opAttrs([attr('job-name', 'name', job.jobName)])), ...jobAttrs], sig);
        accepted(this.jobIdOf('Create-Job', created.message));
        // Cancel-Job first, then cut the upload: cut first, a printer starts processing the
        // partial document (ippeveprinter showed pending → processing → canceled) and a real one
        // may print part of a page before the cancel arrives.
        const upload = new AbortController();
        const cancelFirst = (): void => {
          cancelSent = true;
          void Promise.race([this.cancel(String(jobId)).catch(() => undefined), pause(CANCEL_BEFORE_CUT_MS)]).finally(() => upload.abort()); // best effort: the cut follows either way
        };
        if (signal?.aborted) cancelFirst();
        else signal?.addEventListener('abort', cancelFirst, { once: true });
        try {
          const sent = await this.call('Send-Document', [group('operation', this.jobOpAttrs(jobId!, [attr('document-format', 'mimeMediaType', job.format), attr('last-document', 'boolean', true)]))], {
            document: job.document,
            signal: upload.signal,
            ...progress,
          });
          bytesSent = sent.bytesSent;
          if (!sent.complete) throw printerError('PRINTER_CLOSED', 'Send-Document: the printer answered before the whole document was sent');
        } finally {
          signal?.removeEventListener('abort', cancelFirst);
        }
      } else {
        const printed = await this.call('Print-Job', [group('operation', this.opAttrs([attr('job-name', 'name', job.jobName), attr('document-format', 'mimeMediaType', job.format)])), ...jobAttrs], {
          document: job.document,
          ...sig,
          ...progress,
        });
        bytesSent = printed.bytesSent;
        if (!printed.complete) throw printerError('PRINTER_CLOSED', 'Print-Job: the printer answered before the whole document was sent');
        accepted(this.jobIdOf('Print-Job', printed.message));
      }
    } catch (err) {
      // The printer holds a job that will never get (all of) its document: cancel it there.
      if (jobId !== undefined && !cancelSent) await this.cancel(String(jobId)).catch(() => undefined); // best effort: the job may already be gone; the original error is what matters
      if (signal?.aborted) throw cancelledError(ref ? `(printer job ${ref} cancelled there)` : 'before the printer took it', { ref });
      if (err instanceof TallyboxError && ref !== undefined && err.details.ref === undefined) throw new TallyboxError(err.code, err.message, { ...err.details, ref }, { cause: err });
      throw err;
    }
    // Every byte is out and the printer has the job: from here on nothing is cancelled unless asked.
    try {
      const { state, pages } = await this.awaitJob(jobId!, signal);
      return { ref, bytesSent, jobState: state, ...(pages !== undefined ? { pages } : {}) };
    } catch {
      if (signal?.aborted) {
        await this.cancel(ref!).catch(() => undefined); // best effort, as above
        throw cancelledError(`after its document was sent (printer job ${ref})`, { ref });
      }
      // The document was delivered; only the confirmation failed (the error is not the job's fate):
      // what is known is that the printer has the job, not how it ended.
      return { ref, bytesSent, jobState: 'unknown' };
    }
  }

  private jobIdOf(op: OperationName, reply: IppMessage): number {
    const id = ints(findAttr(reply, 'job', 'job-id'))[0];
    if (id === undefined || id < 1) throw printerError('PRINTER_PROTOCOL', `${op}: the reply has no job-id`);
    return id;
  }

  private jobOpAttrs(jobId: number, extra: IppAttribute[] = []): IppAttribute[] {
    return this.opAttrs([attr('job-id', 'integer', jobId), ...extra]).sort((a, b) => order(a.name) - order(b.name));
  }

  private async getJob(jobId: number): Promise<{ state: PrinterJobState; code: number | undefined; pages: number | undefined }> {
    const req = this.jobOpAttrs(jobId, [attr('requested-attributes', 'keyword', 'job-state', 'job-state-reasons', 'job-impressions-completed')]);
    const { message } = await this.call('Get-Job-Attributes', [group('operation', req)]);
    const code = ints(findAttr(message, 'job', 'job-state'))[0];
    return { state: jobStateOf(code), code, pages: ints(findAttr(message, 'job', 'job-impressions-completed'))[0] };
  }

  /** Poll job-state until terminal or confirmWaitMs (monotonic) has passed. */
  private async awaitJob(jobId: number, signal?: AbortSignal): Promise<{ state: PrinterJobState; pages: number | undefined }> {
    const end = performance.now() + this.confirmWaitMs;
    for (;;) {
      if (signal?.aborted) throw printerError('PRINTER_CANCELLED', 'cancelled while waiting for the printer');
      const j = await this.getJob(jobId);
      if ((j.code !== undefined && isTerminalJobState(j.code)) || performance.now() >= end) return { state: j.state, pages: j.pages };
      await pause(Math.min(this.pollIntervalMs, Math.max(0, end - performance.now())), signal);
    }
  }

  async jobState(ref: string): Promise<PrinterJobState> {
    return (await this.getJob(parseRef(ref))).state;
  }

  async cancel(ref: string): Promise<void> {
    await this.call('Cancel-Job', [group('operation', this.jobOpAttrs(parseRef(ref)))]);
  }
}

/** printer-uri + job-id identify the job; they come right after the language (RFC 8011 §4.3.3). */
function order(name: string): number {
  const i = ['attributes-charset', 'attributes-natural-language', 'printer-uri', 'job-id', 'requesting-user-name'].indexOf(name);
  return i < 0 ? 10 : i;
}

function parseRef(ref: string): number {
  const n = Number(ref);
  if (!/^\d{1,10}$/.test(ref) || !Number.isSafeInteger(n) || n < 1 || n > 0x7fffffff) throw printerError('PRINTER_REJECTED', `${JSON.stringify(ref.slice(0, 20))} is not an IPP job-id`, { status: 'client-error-bad-request' });
  return n;
}
