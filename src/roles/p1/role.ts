/**
 * The P1 role: one supervisor per configured printer (the kit's
 * printerPeripheral: heartbeat, backoff, DeviceState), the spool, the print
 * command handlers, and the spool as an erasure participant (an org's jobs are
 * shredded with it). Job statuses go back as signed CommandResults under the
 * PrintJob's counter, durably queued like every result.
 */
import { PRINT_JOB_STATUS_REASON } from './states.js';
import { join } from 'node:path';
import type { Printer } from '../../../firmware-bridge/devices.js';
import { resultSigningBytes } from '../../link/commands/result.js';
import type { CommandContext, HandlerOutcome } from '../../link/commands/index.js';
import { ResultCode, type CancelJob, type CommandResultProps, type PrintJob, type PrintJobStatusProps, type PrinterSummaryProps, type ReprintJob } from '../../proto/index.js';
import type { ReceiptSigner, SignedErasureReceipt } from '../../privacy/receipt.js';
import type { ErasureParticipant, ErasureReport, ErasureSample } from '../../privacy/types.js';
import type { ShredOrgResult } from './withdraw.js';
import { errorMessage } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/log.js';
import { PeripheralSupervisor, type PeripheralSink } from '../kit/supervisor.js';
import { printerPeripheral } from '../kit/peripherals.js';
import type { P1Config } from './config.js';
import { loadCa } from './fetch.js';
import { Spool, type JobKeyWrapper, type SpoolAnswer, type SpoolPrinter } from './spool.js';

/** The print commands, as the agent's command handlers call them. */
export interface PrintCommandHandlers {
  printJob(orgId: string, cmd: PrintJob, ctx: CommandContext): Promise<HandlerOutcome>;
  cancelJob(orgId: string, cmd: CancelJob, ctx: CommandContext): Promise<HandlerOutcome>;
  reprintJob(orgId: string, cmd: ReprintJob, ctx: CommandContext): Promise<HandlerOutcome>;
}

export interface P1RoleOptions {
  config: P1Config;
  dataDir: string;
  deviceId: string;
  keys: JobKeyWrapper;
  /** Device identity: signs receipts and job-status results. */
  identity: ReceiptSigner;
  /** Durable result queue (agent.results.enqueue). */
  enqueueResult(orgId: string, result: CommandResultProps): Promise<void>;
  sink: PeripheralSink & { setPrinters?(printers: PrinterSummaryProps[]): void };
  clockSynced(): boolean;
  /** A printer URL → a Printer (firmware-bridge/printer: openPrinter). */
  openPrinter(url: string): Printer;
  logger?: Logger;
  /** Supervisor backoff override (tests). */
  supervisorBackoff?: { minMs: number; maxMs: number };
  confirmTimeoutMs?: number;
}

export class P1Role implements ErasureParticipant, PrintCommandHandlers {
  readonly name = 'p1-spool';
  readonly printers = new Map<string, SpoolPrinter & { supervisor: PeripheralSupervisor }>();
  spool!: Spool;
  readonly #o: P1RoleOptions;
  readonly #log: Logger;
  #summaryTimer: NodeJS.Timeout | null = null;

  private constructor(o: P1RoleOptions) {
    this.#o = o;
    this.#log = o.logger ?? silentLogger();
  }

  static async create(o: P1RoleOptions): Promise<P1Role> {
    const r = new P1Role(o);
    for (const [name, pc] of Object.entries(o.config.printers)) {
      const printer = o.openPrinter(pc.url);
      const supervisor = new PeripheralSupervisor({
        peripheral: printerPeripheral({ printer, name: `printer:${name}` }),
        sink: o.sink,
        logger: r.#log,
        heartbeatMs: o.config.heartbeatMs,
        backoff: o.supervisorBackoff ?? o.config.retry,
      });
      r.printers.set(name, { printer, supervisor, confirm: pc.confirm });
    }
    r.spool = await Spool.open({
      config: o.config,
      spoolDir: o.config.spoolDir ?? join(o.dataDir, 'spool'),
      dbPath: join(o.dataDir, 'p1-spool.db'),
      printers: r.printers,
      keys: o.keys,
      signer: o.identity,
      deviceId: o.deviceId,
      publish: (orgId, counter, status, receipt) => o.enqueueResult(orgId, r.statusResult(counter, status, receipt)),
      clockSynced: o.clockSynced,
      ca: loadCa(o.config.fetch.caFile),
      logger: r.#log,
      ...(o.confirmTimeoutMs !== undefined ? { confirmTimeoutMs: o.confirmTimeoutMs } : {}),
    });
    r.spool.on('state', () => r.#summarySoon());
    r.spool.on('printer', () => r.#summarySoon());
    return r;
  }

  async start(): Promise<void> {
    await Promise.all([...this.printers.values()].map((p) => p.supervisor.start()));
    await this.spool.start();
    this.#summarySoon();
  }

  async stop(): Promise<void> {
    if (this.#summaryTimer) clearTimeout(this.#summaryTimer);
    await Promise.all([...this.printers.values()].map((p) => p.supervisor.stop()));
    await this.spool.stop();
  }

  /** A later status of a job: a signed result under the PrintJob's counter (no nonce: it answers no new command). */
  statusResult(counter: number, status: PrintJobStatusProps, receipt?: SignedErasureReceipt): CommandResultProps {
    const unsigned: CommandResultProps = {
      deviceId: this.#o.deviceId,
      counter,
      code: ResultCode.RESULT_CODE_OK,
      reason: PRINT_JOB_STATUS_REASON,
      atMs: Date.now(),
      printJobStatus: status,
      ...(receipt ? { receipt: Buffer.from(JSON.stringify(receipt), 'utf8') } : {}),
      keyId: this.#o.identity.keyId,
    };
    return { ...unsigned, signature: this.#o.identity.sign(resultSigningBytes(unsigned)) };
  }

  #summarySoon(): void {
    if (this.#summaryTimer || !this.#o.sink.setPrinters) return;
    this.#summaryTimer = setTimeout(() => {
      this.#summaryTimer = null;
      this.spool.store.all().then(
        (jobs) => this.#o.sink.setPrinters?.(this.spool.summaries(jobs)),
        (err: unknown) => this.#log.warn({ event: 'p1_summary_failed', err: errorMessage(err) }, 'printer summary not updated'),
      );
    }, 100);
    this.#summaryTimer.unref?.();
  }

  // ------------------------------------------------------------------ commands

  printJob(orgId: string, cmd: PrintJob, ctx: CommandContext): Promise<HandlerOutcome> {
    return this.spool.submit(orgId, cmd, ctx.counter).then(outcome);
  }

  cancelJob(orgId: string, cmd: CancelJob): Promise<HandlerOutcome> {
    return this.spool.cancel(orgId, cmd.jobId).then(outcome);
  }

  reprintJob(orgId: string, cmd: ReprintJob): Promise<HandlerOutcome> {
    return this.spool.reprint(orgId, cmd.jobId).then(outcome);
  }

  // ------------------------------------------------------------------ erasure participant

  eraseOrg(orgId: string): Promise<ErasureReport> {
    return this.spool.eraseOrg(orgId);
  }

  /** The live spool behind the pipeline's `p1-spool` participant (withdraw.ts), once the role is attached. */
  shredOrg(orgId: string, carried: readonly ErasureSample[]): Promise<ShredOrgResult> {
    return this.spool.shredOrg(orgId, carried);
  }

  /** Print jobs belong to an organisation, not to a subject: nothing to erase per person. */
  async eraseSubject(): Promise<ErasureReport> {
    return { ok: true, counts: {} };
  }

  scanFiles(): readonly string[] {
    return this.spool.scanFiles();
  }
}

function outcome(a: SpoolAnswer): HandlerOutcome {
  return { code: a.code, reason: a.reason, detail: a.detail, ...(a.status ? { printJobStatus: a.status } : {}) };
}
