/**
 * The P1 spool: print jobs from signed commands to the printer, durable across
 * power cuts, each document encrypted at rest under its own key and shredded
 * the moment its job ends.
 *
 * THE NEVER-PRINT-TWICE RULE (what a restart may re-send):
 * - A job is re-sent automatically only while its row says `sending` with
 *   `accepted = 0` (or `ready`): the printer never took responsibility for it.
 * - `accepted = 1` is written when the transport calls onAccepted (IPP: a
 *   job-id came back; PJL: USTATUS JOB START; raw/USB: the first byte was
 *   written). The write cannot happen *before* the printer accepts, and a
 *   transport does not wait for it; so the document iterator handed to
 *   printer.send() waits for that write to commit before it yields one more
 *   chunk. Hence at the moment of a crash, after acceptance at most the chunk
 *   the transport already held can have gone out unrecorded; on transports
 *   that accept before the document (IPP Create-Job, PJL JOB START) nothing
 *   can. On raw/USB (accept = first byte written) the first chunk the
 *   iterator yields is FIRST_CHUNK_BYTES long, so an unrecorded acceptance has
 *   put at most that many bytes into the printer, which no printer language
 *   prints as a page; that job is re-sent once, completely.
 * - `sending` with `accepted = 1`, `sent` and `uncertain` are NEVER re-sent
 *   automatically: the printer is asked (printer.jobState(ref)) where the
 *   transport can, else the job is reported `uncertain` and held, document
 *   still encrypted, until a signed ReprintJob (→ ready, a new attempt) or
 *   CancelJob (→ cancelled, shredded). A job id the spool has seen before
 *   (live or ended) is never queued again: its status is answered instead.
 *
 * Ending (confirmed, failed, cancelled): the state change and the wrapped key's
 * destruction are one statement; then the file, then the row (shred.ts).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { constants as fsc } from 'node:fs';
import { mkdir, open, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Printer, PrintFormat, PrinterJobState } from '../../../firmware-bridge/devices.js';
import { PrintDocumentFormat, ResultCode, type PrintJob, type PrintJobStatusProps, type PrinterSummaryProps } from '../../proto/index.js';
import type { ReceiptSigner, SignedErasureReceipt } from '../../privacy/receipt.js';
import type { ErasureReport, ErasureSample } from '../../privacy/types.js';
import { TallyboxError, isTallyboxError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/log.js';
import { ensurePrivateDir, syncDir } from '../../util/private-fs.js';
import { Backoff } from '../kit/backoff.js';
import { errorCode, type PeripheralSupervisor } from '../kit/supervisor.js';
import { ChunkWriter, readChunks } from './chunks.js';
import type { P1Config } from './config.js';
import { fetchDocument } from './fetch.js';
import { jobReceipt, removeSpoolFile, sampleJob, scanJob } from './shred.js';
import { shredOrgJobs, type ShredOrgResult } from './withdraw.js';
import { END_STATES, protoState, type JobState } from './states.js';
import { SpoolStore, type JobRow } from './store.js';

/**
 * A job's intermediate states (fetching, ready, sending, sent) go to the cloud at most once per this
 * many ms each (the newest state then): a printer retry loop flapping ready ↔ sending must not flood
 * the result queue. End states and `uncertain` go at once, with their receipt.
 */
export const STATUS_MIN_INTERVAL_MS = 1000;

/** First chunk handed to a transport: see the never-print-twice rule above. */
export const FIRST_CHUNK_BYTES = 1;

const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
const MAX_COPIES = 999;

const FORMATS: Partial<Record<PrintDocumentFormat, PrintFormat>> = {
  [PrintDocumentFormat.PRINT_DOCUMENT_FORMAT_PDF]: 'application/pdf',
  [PrintDocumentFormat.PRINT_DOCUMENT_FORMAT_PWG_RASTER]: 'image/pwg-raster',
  [PrintDocumentFormat.PRINT_DOCUMENT_FORMAT_PRINTER_READY]: 'application/octet-stream',
};

/** Job keys: wrapped and unwrapped by the org key (Vault.wrapJobKey / unwrapJobKey). */
export interface JobKeyWrapper {
  wrapJobKey(orgId: string, jobId: string, key: Buffer): Promise<{ wrapped: Buffer; keyVersion: number }>;
  unwrapJobKey(orgId: string, jobId: string, keyVersion: number, wrapped: Buffer): Promise<Buffer>;
}

export interface SpoolPrinter {
  printer: Printer;
  supervisor: Pick<PeripheralSupervisor, 'usable' | 'fault' | 'alive' | 'on' | 'off' | 'status' | 'detail'>;
  confirm: 'printer' | 'delivery';
}

export interface SpoolOptions {
  config: P1Config;
  spoolDir: string;
  dbPath: string;
  printers: ReadonlyMap<string, SpoolPrinter>;
  keys: JobKeyWrapper;
  signer: ReceiptSigner;
  deviceId: string;
  /** Durably queue a job's status (a signed result under the PrintJob's counter) with its receipt once it ended. */
  publish(orgId: string, counter: number, status: PrintJobStatusProps, receipt?: SignedErasureReceipt): Promise<void>;
  clockSynced(): boolean;
  /** Extra CA for document URLs. */
  ca?: string | undefined;
  logger?: Logger;
  /** Printer retry jitter (tests). */
  random?: () => number;
  /** How long a `sent` job is polled for the printer's word before it is `uncertain` (ms). */
  confirmTimeoutMs?: number;
}

export interface SpoolEvents {
  /** Every state a job enters (tests, demo, DeviceState). */
  state: [jobId: string, state: JobState];
  /** A job ended and was shredded; its receipt. */
  shredded: [jobId: string, receipt: SignedErasureReceipt];
  /** A printer's reported state changed (DeviceState's printer summary is due). */
  printer: [name: string];
}

/** What a command handler answers. */
export interface SpoolAnswer {
  code: ResultCode;
  reason: string;
  detail: string;
  status?: PrintJobStatusProps;
}

const k = (orgId: string, jobId: string) => `${orgId}\0${jobId}`;

/** The fast start of an inline job (#startDirect → #transmit). */
interface DirectStart {
  /** The document's first FIRST_CHUNK_BYTES, from the command (a copy). */
  first: Uint8Array;
  /** The spool file is written, fsynced, its directory fsynced. */
  written: Promise<void>;
  /** The job's data key (a copy; zeroed when the attempt ends). */
  key: Buffer;
  /** The row is committed (the intake's answer waits for this), or the job never came to exist. */
  resolve(row: JobRow): void;
  reject(err: unknown): void;
}

interface Inflight {
  ac: AbortController;
  cancel: boolean;
  withdrawn: boolean;
  done: Promise<void>;
}
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

export class Spool extends EventEmitter<SpoolEvents> {
  readonly store: SpoolStore;
  readonly #o: SpoolOptions;
  readonly #log: Logger;
  /**
   * In-flight fetch or send per job: abort to cancel; the runner itself ends the job, except when
   * `withdrawn` (an org withdrawal stopped it): then the withdrawal shreds it, under its own receipt.
   */
  readonly #inflight = new Map<string, Inflight>();
  /** Jobs a CancelJob is working on: not started by a worker meanwhile. */
  readonly #cancelling = new Set<string>();
  readonly #pumps = new Map<string, Promise<void>>();
  readonly #again = new Set<string>();
  readonly #backoff = new Map<string, Backoff>();
  readonly #printerState = new Map<string, { state: string; reasons: string[] }>();
  #running = false;
  readonly #unwatch: (() => void)[] = [];
  /** Orgs being withdrawn: their jobs are not started meanwhile. */
  readonly #erasing = new Set<string>();
  #holdTimer: NodeJS.Timeout | null = null;
  /** Per job: when its last intermediate status was queued (monotonic), and the timer of the next one. */
  readonly #announced = new Map<string, { at: number; timer: NodeJS.Timeout | null }>();
  /** Orgs with a withdrawal tally in p1_withdrawn (withdraw.ts). */
  readonly #tallied = new Set<string>();
  /** Background work (fetches, shreds, confirmations): tests wait on it. */
  readonly #work = new Set<Promise<unknown>>();

  private constructor(store: SpoolStore, o: SpoolOptions) {
    super();
    this.store = store;
    this.#o = o;
    this.#log = o.logger ?? silentLogger();
  }

  static async open(o: SpoolOptions): Promise<Spool> {
    await mkdir(o.spoolDir, { recursive: true, mode: 0o700 });
    ensurePrivateDir(o.spoolDir);
    const store = await SpoolStore.open(o.dbPath);
    // Orphans: a file whose row was never written (its key was never stored) or whose shred was
    // interrupted. Swept here, before the spool exists: a PrintJob that arrives while start() resumes
    // writes its file before its row, and a sweep then (it was in start()) deleted that job's document.
    const files = new Set((await store.all()).map((r) => r.file));
    for (const name of await readdir(o.spoolDir).catch(() => [] as string[])) {
      if (!files.has(name)) await unlink(join(o.spoolDir, name)).catch(() => undefined); // gone meanwhile: fine
    }
    const spool = new Spool(store, o);
    for (const r of await store.db.all<{ org_id: string }>('SELECT org_id FROM p1_withdrawn')) spool.#tallied.add(r.org_id);
    return spool;
  }

  /** Files the erasure scan reads (the spool database). */
  scanFiles(): string[] {
    return this.store.files();
  }

  // ------------------------------------------------------------------ commands

  async submit(orgId: string, cmd: PrintJob, counter: number): Promise<SpoolAnswer> {
    const c = this.#o.config;
    const jobId = cmd.jobId;
    if (!JOB_ID.test(jobId ?? '')) return refuse('bad_job_id', 'job_id must be 1-64 of A-Z a-z 0-9 _ . : -');
    const known = await this.#known(orgId, jobId);
    // The org prints again: the tally of an earlier withdrawal of it is over (withdraw.ts). Known
    // in memory, so the hot path pays no read: loaded at open, added to by shredOrg.
    if (this.#tallied.delete(orgId)) await this.store.db.run('DELETE FROM p1_withdrawn WHERE org_id = ?', [orgId]);
    if (known) {
      // Never queued twice: the same job id (a retried or replayed command with a new nonce) gets its status.
      inlineWipe(cmd);
      return { code: ResultCode.RESULT_CODE_OK, reason: 'job_known', detail: `job already ${known.state}; not queued again`, status: known };
    }
    const format = FORMATS[cmd.format];
    if (!format) return refuse('bad_format', 'format must be PDF, PWG_RASTER or PRINTER_READY');
    const copies = cmd.copies || 1;
    if (copies < 1 || copies > MAX_COPIES) return refuse('bad_copies', `copies must be 1-${MAX_COPIES}`);
    if (!this.#o.printers.has(cmd.printer)) return refuse('unknown_printer', 'no printer of that name is configured on this device');
    const printAfterMs = cmd.printAfterMs != null && cmd.printAfterMs > 0 ? cmd.printAfterMs : null;
    // What every new job row starts with, inline or fetched: nothing sent, not accepted, no attempt yet.
    const base = {
      jobId,
      orgId,
      format,
      copies,
      printer: cmd.printer,
      printAfterMs,
      counter,
      createdAtMs: Date.now(),
      bytesSent: 0,
      accepted: false,
      printerRef: null,
      errorCode: null,
      pages: 0,
      attempts: 0,
      statusSeq: 1,
    };
    if (cmd.document === 'inlineDocument') {
      const doc = cmd.inlineDocument ?? new Uint8Array(0);
      if (doc.length > c.inlineMaxBytes) {
        inlineWipe(cmd);
        return refuse('inline_too_large', `inline documents are limited to ${c.inlineMaxBytes} bytes; send a fetch URL`);
      }
      const file = spoolName();
      const key = randomBytes(32);
      try {
        const { wrapped, keyVersion } = await this.#o.keys.wrapJobKey(orgId, jobId, key);
        const entry = this.#o.printers.get(cmd.printer)!;
        if (printAfterMs === null && doc.length > 0 && this.#canStartDirect(cmd.printer, orgId, jobId, entry)) {
          const row = await this.#startDirect({ ...base, state: 'sending', attempts: 1, fetchUrl: null, fetchSha256: null, fetchSize: null, wrappedKey: wrapped, keyVersion, file, bytesTotal: doc.length }, entry, doc, key);
          return { code: ResultCode.RESULT_CODE_OK, reason: 'job_queued', detail: `${doc.length} bytes spooled, encrypted; sending`, status: status(row) };
        }
        // The file first, then the row: a crash in between leaves an orphan file (its key never stored) that start() deletes.
        await this.#writeFile(file, key, jobId, async (w) => w.write(doc));
        const row: JobRow = {
          ...base,
          state: 'ready',
          fetchUrl: null,
          fetchSha256: null,
          fetchSize: null,
          wrappedKey: wrapped,
          keyVersion,
          file,
          bytesTotal: doc.length,
        };
        await this.store.insert(row);
        this.#answered(orgId, jobId);
        this.emit('state', jobId, 'ready');
        this.#kick(cmd.printer);
        return { code: ResultCode.RESULT_CODE_OK, reason: 'job_queued', detail: `${doc.length} bytes spooled, encrypted`, status: status(row) };
      } finally {
        key.fill(0);
        inlineWipe(cmd);
      }
    }
    if (cmd.document === 'fetch' && cmd.fetch) {
      const f = { url: cmd.fetch.url ?? '', sha256: cmd.fetch.sha256 ?? new Uint8Array(0), size: Number(cmd.fetch.size ?? 0) };
      let u: URL | undefined;
      try {
        u = new URL(f.url);
      } catch {
        u = undefined; // refused just below as bad_url, with the reason the cloud can act on
      }
      if (u?.protocol !== 'https:') return refuse('bad_url', 'documents are fetched over https only');
      if (f.sha256.length !== 32) return refuse('bad_sha256', 'sha256 must be 32 bytes');
      if (!Number.isSafeInteger(f.size) || f.size > c.fetch.maxBytes) return refuse('fetch_too_large', `fetched documents are limited to ${c.fetch.maxBytes} bytes`);
      const key = randomBytes(32);
      try {
        const { wrapped, keyVersion } = await this.#o.keys.wrapJobKey(orgId, jobId, key);
        const row: JobRow = {
          ...base,
          state: 'queued',
          fetchUrl: f.url,
          fetchSha256: Buffer.from(f.sha256),
          fetchSize: f.size,
          wrappedKey: wrapped,
          keyVersion,
          file: spoolName(),
          bytesTotal: f.size,
        };
        await this.store.insert(row);
        this.#answered(orgId, jobId);
        this.emit('state', jobId, 'queued');
        this.#track(this.#fetch(row));
        return { code: ResultCode.RESULT_CODE_OK, reason: 'job_queued', detail: `${f.size} bytes to fetch`, status: status(row) };
      } finally {
        key.fill(0);
      }
    }
    return refuse('no_document', 'a print job needs inline_document or fetch');
  }

  async cancel(orgId: string, jobId: string): Promise<SpoolAnswer> {
    // While this runs no worker starts sending the job (#cancelling); one already sending is aborted.
    this.#cancelling.add(k(orgId, jobId));
    try {
      return await this.#cancel(orgId, jobId);
    } finally {
      this.#cancelling.delete(k(orgId, jobId));
    }
  }

  async #cancel(orgId: string, jobId: string): Promise<SpoolAnswer> {
    // A worker may pick the job up between our read and our write (P1_STATE_RACE): read again, a few times.
    for (let tries = 0; tries < 20; tries++) {
      const row = await this.store.get(orgId, jobId);
      if (!row) {
        const ended = await this.#ended(orgId, jobId);
        if (ended && tries > 0 && ended.state === protoState('cancelled')) return { code: ResultCode.RESULT_CODE_OK, reason: 'job_cancelled', detail: 'cancelled', status: ended };
        if (ended) return { code: ResultCode.RESULT_CODE_REFUSED, reason: 'job_ended', detail: `job already ${ended.state}`, status: ended };
        return refuse('unknown_job', 'no such job on this device');
      }
      if (END_STATES.has(row.state)) return { code: ResultCode.RESULT_CODE_REFUSED, reason: 'job_ended', detail: `job already ${row.state}`, status: status(row) };
      const fl = this.#inflight.get(k(orgId, jobId));
      if (fl) {
        fl.cancel = true;
        fl.ac.abort();
        await fl.done;
        const after = await this.#known(orgId, jobId);
        if (after?.state === protoState('cancelled')) return { code: ResultCode.RESULT_CODE_OK, reason: 'job_cancelled', detail: 'cancelled while it was being fetched or sent', status: after };
        continue; // it ended otherwise meanwhile (answered above next time), or is still live: look again
      }
      // Sent or uncertain: the printer may still hold it; cancel it there where the protocol allows.
      let detail = `cancelled (was ${row.state})`;
      if ((row.state === 'sent' || row.state === 'uncertain') && row.printerRef) {
        const p = this.#o.printers.get(row.printer)?.printer;
        if (p?.cancel) {
          await p.cancel(row.printerRef).then(
            () => (detail += '; cancelled at the printer'),
            (err: unknown) => (detail += `; the printer's cancel failed (${errorCode(err)}): it may still print`),
          );
        } else detail += '; this printer cannot cancel a job it took: it may still print';
      }
      const ended = await this.#end(row, 'cancelled', { errorCode: 'CANCELLED' });
      if (!ended) continue; // raced with a worker: look again
      return { code: ResultCode.RESULT_CODE_OK, reason: 'job_cancelled', detail, status: ended };
    }
    return { code: ResultCode.RESULT_CODE_FAILED, reason: 'cancel_raced', detail: 'the job kept changing state; send CancelJob again' };
  }

  /** The cloud's decision for an uncertain job: print it again (a new attempt from the spooled document). */
  async reprint(orgId: string, jobId: string): Promise<SpoolAnswer> {
    const row = await this.store.get(orgId, jobId);
    if (!row) return refuse('unknown_job', 'no such job on this device (ended jobs are shredded: send a new PrintJob)');
    if (row.state !== 'uncertain') return { code: ResultCode.RESULT_CODE_REFUSED, reason: 'not_uncertain', detail: `only an uncertain job is reprinted; this one is ${row.state}`, status: status(row) };
    const next = await this.#move(row, 'ready', { accepted: false, printerRef: null, bytesSent: 0, errorCode: null });
    this.#kick(row.printer);
    return { code: ResultCode.RESULT_CODE_OK, reason: 'job_reprint', detail: "queued again by the cloud's decision", status: status(next) };
  }

  // ------------------------------------------------------------------ lifecycle

  /** Resume every job from its state (see the rule at the top), then run. */
  async start(): Promise<void> {
    this.#running = true;
    // The state a failed send reported (stopped: media-empty, unreachable) holds until the printer's
    // supervisor finds it ready again (paper loaded, back on the LAN): then DeviceState says so too.
    for (const [name, entry] of this.#o.printers) {
      const on = (st: string) => {
        if (st === 'ready' && this.#printerState.delete(name)) this.emit('printer', name);
        else if (st !== 'ready') this.emit('printer', name);
      };
      entry.supervisor.on('status', on);
      this.#unwatch.push(() => entry.supervisor.off('status', on));
    }
    const rows = await this.#dropWithdrawn(await this.store.all());
    for (const row of rows) {
      try {
        await this.#resume(row);
      } catch (err) {
        this.#log.error({ event: 'p1_resume_failed', code: errorCode(err) }, `print job could not be resumed: ${errorCode(err)}`);
      }
    }
    for (const name of this.#o.printers.keys()) this.#kick(name);
  }

  async stop(): Promise<void> {
    this.#running = false;
    for (const u of this.#unwatch.splice(0)) u();
    if (this.#holdTimer) clearTimeout(this.#holdTimer);
    for (const a of this.#announced.values()) if (a.timer) clearTimeout(a.timer);
    this.#announced.clear();
    for (const fl of this.#inflight.values()) fl.ac.abort();
    await Promise.allSettled([...this.#pumps.values(), ...this.#work]);
    await this.store.close();
  }

  /** Everything started so far has settled (tests). */
  async settled(): Promise<void> {
    while (this.#work.size || this.#pumps.size) await Promise.allSettled([...this.#work, ...this.#pumps.values()]);
  }

  summaries(jobs: readonly JobRow[]): PrinterSummaryProps[] {
    return [...this.#o.printers.entries()].map(([name, p]) => {
      const st = this.#printerState.get(name);
      const mine = jobs.filter((j) => j.printer === name && !END_STATES.has(j.state));
      return {
        name,
        state: st?.state ?? (p.supervisor.usable ? 'idle' : 'unreachable'),
        reasons: st?.reasons ?? [],
        jobsWaiting: mine.length,
        jobsUncertain: mine.filter((j) => j.state === 'uncertain').length,
      };
    });
  }

  /** Org withdrawal: every job of the org is stopped and shredded (no status is sent: the withdrawal's receipt covers it). */
  async eraseOrg(orgId: string): Promise<ErasureReport> {
    return (await this.shredOrg(orgId, [])).report;
  }

  /** eraseOrg, carrying the samples an earlier call still found (withdraw.ts: spoolErasureParticipant). */
  async shredOrg(orgId: string, carried: readonly ErasureSample[]): Promise<ShredOrgResult> {
    // From here no worker starts one of the org's jobs (#pump skips them); those running are stopped.
    this.#erasing.add(orgId);
    for (const [key, a] of this.#announced) {
      if (!key.startsWith(`${orgId}\0`)) continue;
      if (a.timer) clearTimeout(a.timer);
      this.#announced.delete(key);
    }
    try {
      const stopRunning = async () => {
        for (const [key, fl] of this.#inflight) {
          if (!key.startsWith(`${orgId}\0`)) continue;
          // Stopped, not ended by its runner: it stays in the rows read below, so its fragments are
          // sampled and its shred is this withdrawal's (ended on its own it left the withdrawal's scan blind to it).
          fl.withdrawn = true;
          fl.cancel = true;
          fl.ac.abort();
          await fl.done;
        }
      };
      await stopRunning();
      this.#tallied.add(orgId);
      return await shredOrgJobs({ store: this.store, spoolDir: this.#o.spoolDir, orgId, logger: this.#log, stopRunning, carried });
    } finally {
      this.#erasing.delete(orgId);
    }
  }

  // ------------------------------------------------------------------ internals

  /**
   * Jobs of a withdrawn org still here when the spool starts (keys already NULL, or the org key gone:
   * NO_ORG_KEY). Normally there are none: a withdrawal resumed at start-up shreds them first through
   * the pipeline's `p1-spool` participant (withdraw.ts), under its receipt. This is the fallback (that
   * participant's call failed, or the data predates it): shredded here (file, then row), with no
   * status, counted in the log only, never left to be printed. Returns the rows left to resume.
   */
  async #dropWithdrawn(rows: JobRow[]): Promise<JobRow[]> {
    const keep: JobRow[] = [];
    const gone: JobRow[] = [];
    for (const row of rows) {
      if (END_STATES.has(row.state)) keep.push(row);
      else if (!row.wrappedKey) gone.push(row);
      else {
        const key = await this.#o.keys.unwrapJobKey(row.orgId, row.jobId, row.keyVersion, row.wrappedKey).catch((err: unknown) => (isTallyboxError(err, 'NO_ORG_KEY') ? null : undefined));
        if (key === null) gone.push(row);
        else {
          key?.fill(0);
          keep.push(row); // readable, or unreadable for another reason: resumed (and failed there, with its reason)
        }
      }
    }
    if (!gone.length) return keep;
    await this.store.db.run(
      `UPDATE p1_jobs SET wrapped_key = NULL WHERE ${gone.map(() => '(org_id = ? AND job_id = ?)').join(' OR ')}`,
      gone.flatMap((r) => [r.orgId, r.jobId]),
    );
    for (const row of gone) await removeSpoolFile(this.#o.spoolDir, row.file);
    for (const row of gone) await this.store.delete(row.orgId, row.jobId);
    for (const orgId of new Set(gone.map((r) => r.orgId))) await this.store.db.run('DELETE FROM p1_ended WHERE org_id = ?', [orgId]);
    await this.#checkpoint();
    this.#log.warn({ event: 'p1_withdrawn_jobs_shredded', jobs: gone.length }, `${gone.length} print job(s) of a withdrawn organisation shredded at start (the withdrawal was cut short)`);
    return keep;
  }

  async #resume(row: JobRow): Promise<void> {
    if (END_STATES.has(row.state)) {
      this.#track(this.#finishEnd(row, [], true));
      return;
    }
    switch (row.state) {
      case 'queued':
      case 'fetching':
        this.#track(this.#fetch(row));
        return;
      case 'ready':
        return;
      case 'sending':
        if (!row.accepted) {
          this.#log.info({ event: 'p1_resend', jobId: row.jobId }, 'print job was being sent and the printer had not taken it: sent again');
          await this.#move(row, 'ready', { bytesSent: 0 });
          return;
        }
        this.#track(this.#confirm(await this.#move(row, 'sent'), true));
        return;
      case 'sent':
        this.#track(this.#confirm(row, true));
        return;
      case 'uncertain':
        // Held for the cloud's decision. Its status is queued again: a crash right after the state
        // change (before #move queued it) would otherwise leave the cloud waiting on a job that waits on it.
        await this.#o.publish(row.orgId, row.counter, status(row));
        return;
    }
  }

  #track(p: Promise<unknown>): void {
    const t = p.catch((err: unknown) => this.#log.error({ event: 'p1_job_error', code: errorCode(err) }, `print job step failed: ${errorCode(err)}`));
    this.#work.add(t);
    void t.finally(() => this.#work.delete(t));
  }

  async #move(row: JobRow, to: JobState, patch: Parameters<SpoolStore['transition']>[2] = {}): Promise<JobRow> {
    const next = await this.store.transition(row, to, patch);
    this.#log.info({ event: 'p1_job_state', jobId: row.jobId, from: row.state, to }, `print job ${row.state} → ${to}`);
    this.emit('state', row.jobId, to);
    this.#announce(next);
    if (to === 'uncertain') await this.#o.publish(row.orgId, row.counter, status(next));
    return next;
  }

  /**
   * Tell the cloud a job's new state (PrintJobStatus under the PrintJob's counter: job id, state,
   * bytes, pages, error code, seq; never content or names). Intermediate states are rate-limited
   * (STATUS_MIN_INTERVAL_MS, the newest state when the interval is up); the end states and
   * `uncertain` are published by their own paths (with the receipt) and cancel a pending one.
   */
  #announce(row: JobRow): void {
    const key = k(row.orgId, row.jobId);
    const a = this.#announced.get(key);
    if (END_STATES.has(row.state) || row.state === 'uncertain') {
      if (a?.timer) clearTimeout(a.timer);
      this.#announced.delete(key);
      return;
    }
    if (!this.#running || this.#erasing.has(row.orgId) || a?.timer) return; // a pending one sends the newest state
    const wait = a ? a.at + STATUS_MIN_INTERVAL_MS - performance.now() : 0;
    if (wait <= 0) return this.#publishStatus(key, row);
    const next = { at: a!.at, timer: null as NodeJS.Timeout | null };
    next.timer = setTimeout(() => {
      next.timer = null;
      this.#track(
        this.store.get(row.orgId, row.jobId).then((cur) => {
          if (!cur || END_STATES.has(cur.state) || cur.state === 'uncertain' || !this.#running || this.#erasing.has(cur.orgId)) return;
          this.#publishStatus(key, cur);
        }),
      );
    }, wait);
    next.timer.unref?.();
    this.#announced.set(key, next);
  }

  /**
   * The intake's answer (job_queued, with the job's first state) counts as the job's first status: the
   * next intermediate one waits STATUS_MIN_INTERVAL_MS, so it follows the answer (which the intake
   * queues once this handler returned and its journal entry is written) instead of overtaking it.
   */
  #answered(orgId: string, jobId: string): void {
    this.#announced.set(k(orgId, jobId), { at: performance.now(), timer: null });
  }

  #publishStatus(key: string, row: JobRow): void {
    this.#announced.set(key, { at: performance.now(), timer: null });
    this.#track(this.#o.publish(row.orgId, row.counter, status(row)));
  }

  async #writeFile(file: string, key: Buffer, jobId: string, fill: (w: ChunkWriter) => Promise<void>): Promise<number> {
    const path = join(this.#o.spoolDir, file);
    // O_EXCL|O_NOFOLLOW, 0600: never through a planted link, never an old file reused.
    const fh = await open(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      const w = new ChunkWriter({ fh, key, jobId, chunkBytes: this.#o.config.chunkBytes });
      await fill(w);
      await w.end();
      syncDir(this.#o.spoolDir);
      return w.plaintextBytes;
    } catch (err) {
      await fh.close().catch(() => undefined); // the write's own error is the one to report
      await unlink(path).catch(() => undefined); // the partial file goes with the failure
      throw err;
    } finally {
      await fh.close().catch(() => undefined); // closed already on the error path
    }
  }

  async #fetch(row0: JobRow): Promise<void> {
    let row = row0;
    const key = k(row.orgId, row.jobId);
    // Once per job: a PrintJob that arrives while start() resumes is both submitted and in its rows.
    if (this.#inflight.has(key)) return;
    const ac = new AbortController();
    let resolveDone!: () => void;
    const fl: Inflight = { ac, cancel: false, withdrawn: false, done: new Promise<void>((r) => (resolveDone = r)) };
    this.#inflight.set(key, fl);
    try {
      const c = this.#o.config.fetch;
      for (let attempt = 1; ; attempt++) {
        // A restarted fetch starts from nothing: a new key, a new file (no nonce is ever reused under a key).
        await removeSpoolFile(this.#o.spoolDir, row.file);
        const jobKey = randomBytes(32);
        try {
          const { wrapped, keyVersion } = await this.#o.keys.wrapJobKey(row.orgId, row.jobId, jobKey);
          row = await this.#move(row, 'fetching', { wrappedKey: wrapped, keyVersion, file: spoolName() });
          await this.#writeFile(row.file, jobKey, row.jobId, async (w) => {
            await fetchDocument({ url: row.fetchUrl ?? '', sha256: row.fetchSha256 ?? Buffer.alloc(0), size: row.fetchSize ?? 0, maxBytes: c.maxBytes, timeoutMs: c.timeoutMs, ca: this.#o.ca, signal: ac.signal, sink: (b) => w.write(b) });
          });
          row = await this.#move(row, 'ready');
          this.#kick(row.printer);
          return;
        } catch (err) {
          const code = errorCode(err);
          if (fl.withdrawn) return; // the withdrawal shreds it
          if (fl.cancel) {
            await this.#end(row, 'cancelled', { errorCode: 'CANCELLED' });
            return;
          }
          if (!this.#running) return; // stopping: the fetch restarts at the next start
          const retry = (code === 'FETCH_FAILED' || code === 'FETCH_TIMEOUT' || code === 'FETCH_HTTP_STATUS') && attempt < 3;
          this.#log.warn({ event: 'p1_fetch_failed', jobId: row.jobId, code, attempt }, `document fetch failed: ${code}${retry ? '; retrying' : ''}`);
          if (!retry) {
            await this.#end(row, 'failed', { errorCode: code });
            return;
          }
          await sleep(1000 * attempt);
        } finally {
          jobKey.fill(0);
        }
      }
    } finally {
      this.#inflight.delete(key);
      resolveDone();
    }
  }

  #kick(printer: string): void {
    if (!this.#running) return;
    if (this.#pumps.has(printer)) {
      this.#again.add(printer);
      return;
    }
    const p = this.#pump(printer)
      .catch((err: unknown) => this.#log.error({ event: 'p1_pump_failed', code: errorCode(err) }, `printer queue stopped on an error: ${errorCode(err)}`))
      .finally(() => {
        this.#pumps.delete(printer);
        if (this.#again.delete(printer)) this.#kick(printer);
      });
    this.#pumps.set(printer, p);
  }

  /** One printer's queue: one job at a time, oldest first; waits for the printer; backs off after a refusal. */
  async #pump(name: string): Promise<void> {
    const entry = this.#o.printers.get(name);
    if (!entry) return;
    const b = this.#backoff.get(name) ?? new Backoff({ ...this.#o.config.retry, ...(this.#o.random ? { random: this.#o.random } : {}) });
    this.#backoff.set(name, b);
    while (this.#running) {
      this.#again.delete(name);
      const rows = (await this.store.all()).filter((r) => r.printer === name && r.state === 'ready' && !this.#erasing.has(r.orgId));
      const now = Date.now();
      const synced = this.#o.clockSynced();
      // print_after: a wall-clock time, compared only against a synchronised clock; held otherwise.
      const eligible = rows.find((r) => !this.#cancelling.has(k(r.orgId, r.jobId)) && (r.printAfterMs === null || (synced && r.printAfterMs <= now)));
      const held = rows.filter((r) => r !== eligible && r.printAfterMs !== null);
      if (held.length) this.#armHold(held, synced);
      if (!eligible) return;
      if (!entry.supervisor.usable) {
        await this.#waitUsable(entry);
        continue;
      }
      const outcome = await this.#send(eligible, entry);
      if (outcome === 'retry') await sleep(b.next());
      else b.reset();
    }
  }

  #armHold(held: JobRow[], synced: boolean): void {
    if (this.#holdTimer) return;
    const soonest = Math.min(...held.map((r) => r.printAfterMs ?? Number.POSITIVE_INFINITY));
    if (!synced) this.#log.info({ event: 'p1_held_unsynced', jobs: held.length }, 'print jobs with a print-after time are held: the clock is not synchronised');
    // Re-checked at least every 30 s: the wall clock may be stepped (NTP) meanwhile.
    const wait = synced ? Math.max(50, Math.min(30_000, soonest - Date.now())) : 5000;
    this.#holdTimer = setTimeout(() => {
      this.#holdTimer = null;
      for (const n of this.#o.printers.keys()) this.#kick(n);
    }, wait);
    this.#holdTimer.unref?.();
  }

  #waitUsable(entry: SpoolPrinter): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        entry.supervisor.off('status', on);
        resolve();
      };
      const on = () => {
        if (entry.supervisor.usable || !this.#running) done();
      };
      // Also re-checked on a timer: a stop() must not leave this waiting.
      const t = setTimeout(done, 1000);
      entry.supervisor.on('status', on);
    });
  }

  /** One attempt. 'retry': the printer refused before taking the job (it is ready again). */
  async #send(row0: JobRow, entry: SpoolPrinter): Promise<'done' | 'retry'> {
    // In flight before the state says sending: a CancelJob from here on aborts this attempt.
    const key = k(row0.orgId, row0.jobId);
    const fl = this.#newInflight(key);
    let row: JobRow;
    try {
      row = await this.#move(row0, 'sending', { accepted: false, printerRef: null, bytesSent: 0, attempts: row0.attempts + 1 });
    } catch (err) {
      this.#endInflight(key, fl);
      if (isTallyboxError(err, 'P1_STATE_RACE')) return 'done'; // cancelled meanwhile
      throw err;
    }
    if (fl.cancel) {
      this.#endInflight(key, fl);
      if (!fl.withdrawn) await this.#end(row, 'cancelled', { errorCode: 'CANCELLED' });
      return 'done';
    }
    return this.#transmit(row, entry, fl);
  }

  #newInflight(key: string): Inflight & { resolve: () => void } {
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    const fl = { ac: new AbortController(), cancel: this.#cancelling.has(key), withdrawn: false, done, resolve };
    this.#inflight.set(key, fl);
    return fl;
  }

  #endInflight(key: string, fl: Inflight & { resolve: () => void }): void {
    if (this.#inflight.get(key) === fl) this.#inflight.delete(key);
    fl.resolve();
  }

  /**
   * Send one attempt of a job in `sending`. `direct` (the fast start of an inline job, see
   * #startDirect): the row is not written yet; the first FIRST_CHUNK_BYTES of the document go from
   * the command's own bytes while the spool file is written and fsynced, then the row is inserted
   * (`sending`, with the acceptance if the printer gave it meanwhile) in one commit; nothing more
   * leaves before that commit, so the never-print-twice rule holds as on the spooled path.
   */
  async #transmit(row0: JobRow, entry: SpoolPrinter, fl: Inflight & { resolve: () => void }, direct?: DirectStart): Promise<'done' | 'retry'> {
    let row = row0;
    const key = k(row.orgId, row.jobId);
    let jobKey: Buffer | undefined;
    let accepted = false;
    let ref: string | undefined;
    let acceptWrite: Promise<void> | undefined;
    let sent = 0;
    // Direct start: the row's one commit (after the spool file is durable), carrying the acceptance if it came first.
    let insertStarted = false;
    const inserted: Promise<JobRow> | undefined = direct?.written.then(async () => {
      insertStarted = true;
      const r: JobRow = { ...row, accepted, printerRef: ref ?? null };
      await this.store.insert(r);
      row = r;
      this.#answered(r.orgId, r.jobId); // the intake's answer says sending
      this.#log.info({ event: 'p1_job_state', jobId: r.jobId, from: 'queued', to: 'sending' }, 'print job queued → sending (started from the command)');
      this.emit('state', r.jobId, 'sending');
      return r;
    });
    inserted?.then(direct!.resolve, direct!.reject);
    try {
      const jobId = row.jobId;
      const path = join(this.#o.spoolDir, row.file);
      if (direct) jobKey = direct.key;
      else {
        jobKey = await this.#o.keys.unwrapJobKey(row.orgId, row.jobId, row.keyVersion, row.wrappedKey ?? Buffer.alloc(0));
        // The document must be there before the printer is asked: a transport that accepts before it
        // reads (IPP Create-Job, PJL JOB START) would otherwise turn a lost spool file into `uncertain`.
        await stat(path).catch((err: NodeJS.ErrnoException) => {
          throw new TallyboxError('P1_SPOOL_CORRUPT', `P1_SPOOL_CORRUPT: spool file of job ${jobId} is missing (${err.code ?? 'error'})`);
        });
      }
      const k2 = jobKey;
      async function* document(): AsyncGenerator<Uint8Array> {
        // Direct: the first bytes from the command, the rest from the spool once the row is committed.
        let skip = 0;
        if (direct && inserted) {
          skip = direct.first.length;
          yield direct.first;
          await inserted;
        }
        let first = !direct;
        for await (const chunk of readChunks(path, k2, jobId)) {
          let rest: Uint8Array = chunk;
          if (skip > 0) {
            const n = Math.min(skip, rest.length);
            rest = rest.subarray(n);
            skip -= n;
          } else if (first && chunk.length > FIRST_CHUNK_BYTES) {
            first = false;
            yield chunk.subarray(0, FIRST_CHUNK_BYTES);
            rest = chunk.subarray(FIRST_CHUNK_BYTES);
          }
          first = false;
          // Nothing more leaves until the printer's acceptance is on disk (the rule at the top).
          if (acceptWrite) await acceptWrite;
          if (rest.length) yield rest;
        }
        if (acceptWrite) await acceptWrite;
      }
      const res = await entry.printer.send({
        jobName: row.jobId,
        format: row.format,
        copies: row.copies,
        document: document(),
        signal: fl.ac.signal,
        onAccepted: (r) => {
          if (accepted) return;
          accepted = true;
          ref = r;
          if (inserted && !insertStarted) return; // the row's insert carries it
          acceptWrite = (inserted ?? Promise.resolve(row)).then(async (cur) => {
            row = await this.store.update(cur, { accepted: true, printerRef: r ?? null });
          });
        },
        onProgress: (n) => {
          sent = n;
        },
      });
      if (inserted) await inserted;
      await acceptWrite;
      entry.supervisor.alive();
      row = await this.#move(row, 'sent', { accepted: true, bytesSent: res.bytesSent, printerRef: res.ref ?? ref ?? null, ...(res.pages !== undefined ? { pages: res.pages } : {}) });
      await this.#settleSent(row, entry, res.jobState, false);
      return 'done';
    } catch (err) {
      await acceptWrite?.catch(() => undefined); // its failure is this attempt's failure too
      // Direct: a job whose row never got written does not exist (its intake answer says why); the
      // printer got at most its first bytes.
      if (
        inserted &&
        !(await inserted.then(
          () => true,
          () => false,
        ))
      )
        return 'done';
      const code = errorCode(err);
      if (fl.cancel) {
        if (accepted && ref && entry.printer.cancel) await entry.printer.cancel(ref).catch(() => undefined); // best effort: reported in the log below
        if (fl.withdrawn) return 'done'; // the withdrawal shreds it (its row, file and key are still there for its samples)
        const cur = (await this.store.get(row.orgId, row.jobId)) ?? row;
        await this.#end(cur, 'cancelled', { errorCode: 'CANCELLED', bytesSent: sent });
        return 'done';
      }
      if (!this.#running && !accepted) {
        await this.#move(row, 'ready', { bytesSent: 0 }).catch(() => undefined); // resumed at the next start either way
        return 'done';
      }
      if (code === 'P1_SPOOL_CORRUPT' || code === 'NO_ORG_KEY' || code === 'KEY_VERSION_UNKNOWN') {
        this.#log.error({ event: 'p1_spool_unreadable', jobId: row.jobId, code }, `spooled document cannot be read (${code}): job failed`);
        const cur = (await this.store.get(row.orgId, row.jobId)) ?? row;
        if (!accepted) await this.#end(cur, 'failed', { errorCode: code });
        else await this.#move(cur, 'uncertain', { errorCode: code, bytesSent: sent });
        return 'done';
      }
      entry.supervisor.fault(err);
      this.#notePrinter(row.printer, err);
      if (!accepted) {
        this.#log.info({ event: 'p1_send_refused', jobId: row.jobId, code }, `printer did not take the job (${code}); it stays queued`);
        await this.#move(row, 'ready', { bytesSent: 0, errorCode: code });
        return 'retry';
      }
      // Taken by the printer, then broken off (paper out, connection closed): never re-sent on our own.
      this.#log.warn({ event: 'p1_send_broken', jobId: row.jobId, code, bytes: sent }, `printer took the job, then the transfer failed (${code}): uncertain, held for the cloud`);
      const cur = (await this.store.get(row.orgId, row.jobId)) ?? row;
      if (cur.printerRef && entry.printer.jobState && cur.state === 'sending') {
        const st = await entry.printer.jobState(cur.printerRef).catch(() => 'unknown' as const);
        if (st === 'completed') {
          await this.#settleSent(await this.#move(cur, 'sent', { bytesSent: sent }), entry, st, false);
          return 'done';
        }
      }
      await this.#move(cur, 'uncertain', { errorCode: code, bytesSent: sent });
      return 'done';
    } finally {
      jobKey?.fill(0);
      this.#endInflight(key, fl);
    }
  }

  /** An idle, usable printer with nothing queued before this job: it may start straight from the command. */
  #canStartDirect(printer: string, orgId: string, jobId: string, entry: SpoolPrinter): boolean {
    return this.#running && entry.supervisor.usable && !this.#pumps.has(printer) && !this.#erasing.has(orgId) && !this.#cancelling.has(k(orgId, jobId));
  }

  /**
   * First byte without waiting for the spool: the spool file is written (encrypted, fsynced) while the
   * printer connection opens and takes the document's first FIRST_CHUNK_BYTES from the command's
   * bytes; then the row is inserted in `sending` (with the acceptance) in one commit, and the rest
   * follows from the spool. The attempt runs as the printer's queue (no other job starts meanwhile).
   * Resolves with the committed row (the intake answers then). A crash before that commit leaves no
   * row (the orphan file is swept, the command is answered `interrupted`) and at most the first
   * FIRST_CHUNK_BYTES at the printer: the never-print-twice rule's one re-send, as on the spooled path.
   */
  #startDirect(row: JobRow, entry: SpoolPrinter, doc: Uint8Array, key: Buffer): Promise<JobRow> {
    let resolve!: (r: JobRow) => void;
    let reject!: (e: unknown) => void;
    const committed = new Promise<JobRow>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const written = this.#writeFile(row.file, key, row.jobId, async (w) => w.write(doc)).then(() => undefined);
    const direct: DirectStart = { first: Buffer.from(doc.subarray(0, FIRST_CHUNK_BYTES)), written, key: Buffer.from(key), resolve, reject };
    const fl = this.#newInflight(k(row.orgId, row.jobId));
    const name = row.printer;
    const run = this.#transmit(row, entry, fl, direct)
      .then((outcome) => {
        if (outcome === 'done') this.#backoff.get(name)?.reset();
      })
      .catch((err: unknown) => this.#log.error({ event: 'p1_pump_failed', code: errorCode(err) }, `printer queue stopped on an error: ${errorCode(err)}`))
      .finally(() => {
        this.#pumps.delete(name);
        this.#again.delete(name);
        this.#kick(name); // a retry, or jobs queued meanwhile
      });
    this.#pumps.set(name, run);
    return committed;
  }

  #notePrinter(name: string, err: unknown): void {
    const reasons = (err as { details?: { reasons?: unknown } } | null)?.details?.reasons;
    const code = errorCode(err);
    this.#printerState.set(name, { state: code === 'PRINTER_STOPPED' ? 'stopped' : code === 'PRINTER_UNREACHABLE' ? 'unreachable' : 'unknown', reasons: Array.isArray(reasons) ? reasons.map(String) : [] });
    this.emit('printer', name);
  }

  /** A job whose bytes all went out: the printer's word, or the configured delivery rule, or uncertain. */
  async #settleSent(row: JobRow, entry: SpoolPrinter, state: PrinterJobState, resumed: boolean): Promise<void> {
    this.#printerState.delete(row.printer);
    if (state === 'completed' || (state === 'unknown' && !resumed && entry.confirm === 'delivery')) {
      await this.#end(row, 'confirmed', {});
      return;
    }
    if (state === 'canceled' || state === 'aborted') {
      await this.#end(row, 'failed', { errorCode: state === 'canceled' ? 'PRINTER_CANCELLED' : 'PRINTER_ABORTED' });
      return;
    }
    this.#track(this.#confirm(row, resumed));
  }

  /** Ask the printer for a job it took (never re-send): completed → confirmed; no answer → uncertain. */
  async #confirm(row: JobRow, _resumed: boolean): Promise<void> {
    const entry = this.#o.printers.get(row.printer);
    const p = entry?.printer;
    if (!p?.jobState || !row.printerRef) {
      await this.#move(row, 'uncertain', { errorCode: row.errorCode ?? 'NOT_CONFIRMED' });
      return;
    }
    const deadline = performance.now() + (this.#o.confirmTimeoutMs ?? 300_000);
    let wait = 250;
    while (this.#running && performance.now() < deadline) {
      const st = await p.jobState(row.printerRef).catch(() => 'unknown' as PrinterJobState);
      if (st === 'completed') return void (await this.#end(row, 'confirmed', {}));
      if (st === 'canceled' || st === 'aborted') return void (await this.#end(row, 'failed', { errorCode: st === 'canceled' ? 'PRINTER_CANCELLED' : 'PRINTER_ABORTED' }));
      if (st === 'unknown') break;
      await sleep(wait);
      wait = Math.min(wait * 2, 10_000);
    }
    if (!this.#running) return; // asked again at the next start
    const cur = await this.store.get(row.orgId, row.jobId);
    if (cur && cur.state === 'sent') await this.#move(cur, 'uncertain', { errorCode: 'NOT_CONFIRMED' });
  }

  /**
   * End a job: the state and the key's destruction in one statement, then the file, the row, the scan,
   * the receipt and the status. Returns the final status (undefined when it was ended meanwhile).
   */
  async #end(row: JobRow, to: 'confirmed' | 'failed' | 'cancelled', patch: Parameters<SpoolStore['transition']>[2]): Promise<PrintJobStatusProps | undefined> {
    const t0 = performance.now();
    const samples = await sampleJob(join(this.#o.spoolDir, row.file), row.wrappedKey);
    let ended: JobRow;
    try {
      ended = await this.#move(row, to, { ...patch, wrappedKey: null });
    } catch (err) {
      if (isTallyboxError(err, 'P1_STATE_RACE')) return undefined;
      throw err;
    }
    return this.#finishEnd(ended, samples, false, performance.now() - t0);
  }

  async #finishEnd(row: JobRow, samples: Awaited<ReturnType<typeof sampleJob>>, resumed: boolean, keyMs = 0): Promise<PrintJobStatusProps> {
    const startedAtMs = Date.now();
    const t0 = performance.now();
    if (row.wrappedKey) row = await this.store.update(row, { wrappedKey: null }); // a row ended before this version wiped keys
    const fileRemoved = await removeSpoolFile(this.#o.spoolDir, row.file);
    await this.#checkpoint();
    const t1 = performance.now();
    const scan = samples.length ? await scanJob(this.#o.spoolDir, this.store.files(), samples) : undefined;
    for (const s of samples) s.bytes.fill(0);
    const { signed, receipt } = jobReceipt(
      {
        deviceId: this.#o.deviceId,
        orgId: row.orgId,
        jobId: row.jobId,
        counter: row.counter,
        ended: row.state as 'confirmed',
        fileRemoved,
        resumed,
        samples: samples.length,
        scan,
        startedAtMs,
        durations: { erase: keyMs + t1 - t0, scan: performance.now() - t1 },
      },
      this.#o.signer,
    );
    if (receipt.verification === 'failed') this.#log.error({ event: 'p1_shred_unverified', jobId: row.jobId, hits: receipt.scan.hits }, 'print job shredded but fragments were found by the scan');
    const st = status(row);
    // The status and its receipt are queued (durably) BEFORE the row goes: a crash in between finishes
    // the shred again at the next start (#resume: a second, resumed receipt), where the other order
    // would leave an ended job the cloud is never told about. The row holds no key and no content now.
    await this.#o.publish(row.orgId, row.counter, st, signed);
    await this.store.db.transaction(async () => {
      await this.store.db.run('INSERT OR REPLACE INTO p1_ended (org_id, job_id, state, ended_at_ms) VALUES (?, ?, ?, ?)', [row.orgId, row.jobId, row.state, Date.now()]);
      await this.store.delete(row.orgId, row.jobId);
    });
    await this.#checkpoint();
    this.emit('shredded', row.jobId, signed);
    return st;
  }

  async #checkpoint(): Promise<void> {
    // Old page images (with the wrapped key) must not outlive the job in the -wal file.
    await this.store.db.get('PRAGMA wal_checkpoint(TRUNCATE)').catch(() => undefined); // busy: the next checkpoint does it; the scan says so
  }

  async #known(orgId: string, jobId: string): Promise<PrintJobStatusProps | undefined> {
    const row = await this.store.get(orgId, jobId);
    return row ? status(row) : this.#ended(orgId, jobId);
  }

  async #ended(orgId: string, jobId: string): Promise<PrintJobStatusProps | undefined> {
    const e = await this.store.db.get<{ state: string }>('SELECT state FROM p1_ended WHERE org_id = ? AND job_id = ?', [orgId, jobId]);
    return e ? { jobId, state: protoState(e.state as JobState) } : undefined;
  }
}

function refuse(reason: string, detail: string): SpoolAnswer {
  return { code: ResultCode.RESULT_CODE_REFUSED, reason, detail };
}

/** The document bytes came in the command: zero them once spooled (or refused). */
function inlineWipe(cmd: PrintJob): void {
  if (cmd.inlineDocument?.length) cmd.inlineDocument.fill(0);
}

function spoolName(): string {
  return `${randomBytes(12).toString('hex')}.spool`;
}

export function status(r: JobRow): PrintJobStatusProps {
  return {
    jobId: r.jobId,
    state: protoState(r.state),
    bytes: r.bytesSent,
    pages: r.pages,
    ...(r.errorCode ? { errorCode: r.errorCode } : {}),
    seq: r.statusSeq,
  };
}

export { TallyboxError };
