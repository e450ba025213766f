/**
 * The cloud side of P1 printing: signed PrintJob / CancelJob / ReprintJob
 * commands, and what came back (every PrintJobStatus per job, newest by seq,
 * and the erasure receipts, verified against the device's identity key).
 */
import type { KeyObject } from 'node:crypto';
import { verifyCommandResult } from '../../src/link/commands/result.js';
import { parseTopic } from '../../src/link/topics.js';
import { PrintDocumentFormat, PrintJobState, type CommandBodyProps, type CommandResult, type PrintJobProps } from '../../src/proto/index.js';
import { verifyErasureReceipt, type ErasureReceipt, type SignedErasureReceipt } from '../../src/privacy/receipt.js';
import type { ServedDocument } from './print-docs.js';

export interface PrintJobSpec {
  jobId: string;
  printer: string;
  format?: PrintDocumentFormat;
  copies?: number;
  inline?: Buffer;
  fetch?: ServedDocument;
  printAfterMs?: number;
}

export function printJobBody(s: PrintJobSpec): CommandBodyProps {
  const job: PrintJobProps = {
    jobId: s.jobId,
    printer: s.printer,
    format: s.format ?? PrintDocumentFormat.PRINT_DOCUMENT_FORMAT_PRINTER_READY,
    copies: s.copies ?? 1,
    ...(s.inline ? { inlineDocument: s.inline } : {}),
    ...(s.fetch ? { fetch: { url: s.fetch.url, sha256: s.fetch.sha256, size: s.fetch.size } } : {}),
    ...(s.printAfterMs !== undefined ? { printAfterMs: s.printAfterMs } : {}),
  };
  return { printJob: job };
}

export const cancelJobBody = (jobId: string): CommandBodyProps => ({ cancelJob: { jobId } });
export const reprintJobBody = (jobId: string): CommandBodyProps => ({ reprintJob: { jobId } });

export interface JobView {
  jobId: string;
  state: PrintJobState;
  stateName: string;
  seq: number;
  bytes: number;
  errorCode: string;
  receipt?: ErasureReceipt;
  receiptError?: string;
}

/** Folds the results a device sent into one view per job (the newest status wins). */
export class PrintStatusBook {
  readonly jobs = new Map<string, JobView>();
  readonly #deviceKey: KeyObject | string | undefined;
  receiptsVerified = 0;
  receiptsBad = 0;
  resultsBad = 0;

  constructor(opts: { deviceKey?: KeyObject | string } = {}) {
    this.#deviceKey = opts.deviceKey;
  }

  add(r: CommandResult, raw?: Uint8Array): void {
    const st = r.printJobStatus;
    if (!st?.jobId) return;
    if (this.#deviceKey && raw) {
      if (!verifyCommandResult(raw, this.#deviceKey as Parameters<typeof verifyCommandResult>[1])) {
        this.resultsBad++;
        return;
      }
    }
    const prev = this.jobs.get(st.jobId);
    const state = st.state ?? PrintJobState.PRINT_JOB_STATE_UNSPECIFIED;
    const view: JobView = { jobId: st.jobId, state, stateName: (PrintJobState[state] ?? String(state)).replace('PRINT_JOB_STATE_', '').toLowerCase(), seq: Number(st.seq ?? 0), bytes: Number(st.bytes ?? 0), errorCode: st.errorCode ?? '' };
    if (r.receipt?.length) {
      try {
        const signed = JSON.parse(Buffer.from(r.receipt).toString('utf8')) as SignedErasureReceipt;
        if (!this.#deviceKey) throw new Error('no device key to verify with');
        view.receipt = verifyErasureReceipt(signed, this.#deviceKey);
        this.receiptsVerified++;
      } catch (err) {
        view.receiptError = (err as Error).message;
        this.receiptsBad++;
      }
    }
    if (!prev || view.seq >= prev.seq) this.jobs.set(st.jobId, { ...prev, ...view });
  }

  state(jobId: string): string | undefined {
    return this.jobs.get(jobId)?.stateName;
  }
}

/** What a PrintCloud needs of the cloud emulator's sink (CloudSink fits). */
export interface PrintResultSource {
  rawResults(): readonly { result: CommandResult; raw: Buffer; topic: string }[];
  sendCommand(signer: { sign(body: CommandBodyProps): Buffer; readonly lastCounter: number }, orgId: string, deviceId: string, body: CommandBodyProps): Promise<Buffer>;
}

/**
 * The cloud emulator's print desk for one device: signs and sends PrintJob / CancelJob /
 * ReprintJob over MQTT through the sink, and folds every result the device sends back into a
 * PrintStatusBook (signatures and erasure receipts verified against the device's key).
 */
export class PrintCloud {
  readonly book: PrintStatusBook;
  #seen = 0;
  constructor(
    readonly o: {
      sink: PrintResultSource;
      signer: { sign(body: CommandBodyProps): Buffer; readonly lastCounter: number };
      deviceId: string;
      /** The device's identity public key (PEM or KeyObject): results and receipts are verified with it. */
      deviceKey?: KeyObject | string;
    },
  ) {
    this.book = new PrintStatusBook(o.deviceKey ? { deviceKey: o.deviceKey } : {});
  }

  /** Fold results that arrived since the last call into the book. */
  refresh(): PrintStatusBook {
    const all = this.o.sink.rawResults();
    for (; this.#seen < all.length; this.#seen++) {
      const r = all[this.#seen]!;
      if (parseTopic(r.topic)?.deviceId === this.o.deviceId) this.book.add(r.result, r.raw);
    }
    return this.book;
  }

  /** Sign and send; the command's counter (its first result carries it). */
  async send(orgId: string, body: CommandBodyProps): Promise<number> {
    await this.o.sink.sendCommand(this.o.signer, orgId, this.o.deviceId, body);
    return this.o.signer.lastCounter;
  }

  printJob(orgId: string, spec: PrintJobSpec): Promise<number> {
    return this.send(orgId, printJobBody(spec));
  }

  cancelJob(orgId: string, jobId: string): Promise<number> {
    return this.send(orgId, cancelJobBody(jobId));
  }

  reprintJob(orgId: string, jobId: string): Promise<number> {
    return this.send(orgId, reprintJobBody(jobId));
  }

  /** The newest view of a job (refreshed). */
  job(jobId: string): JobView | undefined {
    return this.refresh().jobs.get(jobId);
  }

  /** Every job's newest state, plus the book's verification counters (the emulator's GET /api/print). */
  summary(): { jobs: JobView[]; receiptsVerified: number; receiptsBad: number; resultsBad: number } {
    const b = this.refresh();
    return { jobs: [...b.jobs.values()], receiptsVerified: b.receiptsVerified, receiptsBad: b.receiptsBad, resultsBad: b.resultsBad };
  }
}
