/**
 * `tallybox demo --device p1`: the print box on one machine — an embedded
 * broker, the cloud emulator (which signs the print commands and serves the
 * fetched documents over HTTPS under a private CA made for this run), the
 * printer simulator (raw TCP 9100 with PJL status, recording every job's bytes)
 * and the agent with its P1 role, started by the `tallybox run` start path.
 * The cloud sends a few signed jobs (inline and fetched); the simulator prints
 * them; the device sends back job statuses and a signed erasure receipt per job.
 *
 *   tallybox demo --device p1                 three jobs, their statuses as they arrive, the evidence
 *   tallybox demo --device p1 --json          one JSON line per job, then one summary line
 *                                             {"sent","printed","failed","uncertain","bytes","receiptsVerified",...};
 *                                             exit 0 only when every job was printed exactly once and every receipt verified
 *
 * The summary is computed from evidence, never from what the agent says: a job
 * counts as printed only when the simulator recorded exactly one complete copy
 * whose SHA-256 equals what the cloud sent, and a receipt counts only when it
 * verifies against the device's public key from provisioning (and names the
 * job). The agent's own report is shown next to it, and a disagreement
 * ("contradicted") fails the run.
 *
 * `startP1Stack` and `checkPrintEvidence` are exported for the tests; the
 * `wrapRecorder` and `interceptResult` seams let a test break the printer's
 * recording or what reaches the cloud and see the check fail.
 */
import { createHash, createPublicKey } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePrivateCa, PrintDocServer, type PrivateCa } from '../../simulators/cloud/print-docs.js';
import { PrintStatusBook, printJobBody } from '../../simulators/cloud/print-jobs.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { SimPrinterContext } from '../../simulators/printer/context.js';
import { startRawServer } from '../../simulators/printer/raw-server.js';
import { DirJobRecorder } from '../../simulators/printer/recorder.js';
import type { JobRecorder, PrinterFaults, StartedServer } from '../../simulators/printer/types.js';
import { pb, type CommandResult } from '../proto/index.js';
import type { P1Role } from '../roles/p1/role.js';
import { errorMessage } from '../util/errors.js';
import { createLogger, type Logger } from '../util/log.js';
import { sleep, startDemoDevice, type DemoDevice } from './demo-kit.js';
import { checkPrintEvidence, printerReadyDocument, SETTLED_JOB_STATES as SETTLED, summaryOk, type SentJob } from '../../simulators/printer/evidence.js';
export { checkPrintEvidence, summaryOk, type JobEvidence, type P1Summary, type SentJob } from '../../simulators/printer/evidence.js';

const PRINTER = 'front';

export interface P1StackOptions {
  dir?: string;
  orgId?: string;
  deviceId?: string;
  logger?: Logger;
  agentLogLevel?: 'silent' | 'error' | 'warn' | 'info';
  brokerUrl?: string;
  /** Printer faults from the start (offline, paper-out, never-confirm, …). */
  faults?: Partial<PrinterFaults>;
  /** Tests: what the simulator's servers record through (e.g. a recorder that corrupts or drops bytes). */
  wrapRecorder?: (real: DirJobRecorder) => JobRecorder;
  /** How long the spool waits for the printer's word before a job is `uncertain` (default the role's). */
  confirmTimeoutMs?: number;
}

export interface P1Stack {
  dev: DemoDevice;
  role: P1Role;
  signer: CommandSigner;
  orgId: string;
  deviceId: string;
  /** The simulator's recorder (its files are the evidence) and fault switches. */
  recorder: DirJobRecorder;
  printer: SimPrinterContext;
  raw: StartedServer;
  ca: PrivateCa;
  docs: PrintDocServer;
  close(opts?: { keepDir?: boolean }): Promise<void>;
}

/** Printer simulator + document service + the device with its P1 role, started (the role too). */
export async function startP1Stack(opts: P1StackOptions = {}): Promise<P1Stack> {
  const orgId = opts.orgId ?? 'acme';
  const deviceId = opts.deviceId ?? 'demo-p1-0001';
  const signer = new CommandSigner({ keyId: 'demo-cloud' });
  const undo: (() => Promise<unknown>)[] = [];
  const unwind = async () => {
    for (const f of undo.splice(0).reverse()) await f().catch(() => undefined); // every clean-up must run; the demo's own error is the one to report
  };
  try {
    const ca = await makePrivateCa();
    undo.push(() => ca.cleanup());
    const docs = await PrintDocServer.start({ ca });
    undo.push(() => docs.close());
    // The printer listens before the device starts, so its port can go into the config.
    const outDir = opts.dir ? join(opts.dir, 'printer-out') : mkdtempSync(join(tmpdir(), 'tallybox-p1-printer-'));
    if (!opts.dir) undo.push(() => rm(outDir, { recursive: true, force: true }));
    const recorder = new DirJobRecorder(outDir);
    const ctx = new SimPrinterContext(opts.wrapRecorder ? opts.wrapRecorder(recorder) : recorder, opts.faults ?? {});
    const raw = await startRawServer(ctx, { host: '127.0.0.1', port: 0 });
    undo.push(() => raw.close());
    const dev = await startDemoDevice({
      kind: 'p1',
      deviceId,
      orgId,
      vault: true,
      commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }],
      ...(opts.dir ? { dir: opts.dir } : {}),
      ...(opts.logger ? { logger: opts.logger } : {}),
      logLevel: opts.agentLogLevel ?? 'silent',
      ...(opts.brokerUrl ? { brokerUrl: opts.brokerUrl } : {}),
      config: {
        p1: {
          printers: { [PRINTER]: { url: `raw://127.0.0.1:${raw.port}?pjl=1` } },
          fetch: { caFile: ca.caFile, timeoutMs: 60_000 },
          retry: { minMs: 200, maxMs: 2000 },
          heartbeatMs: 2000,
        },
      },
      roles: { ...(opts.confirmTimeoutMs !== undefined ? { p1: { confirmTimeoutMs: opts.confirmTimeoutMs } } : {}) },
    });
    const role = dev.running?.p1?.role;
    if (!role) {
      await dev.close();
      throw new Error('the p1 role did not start');
    }
    return {
      dev,
      role,
      signer,
      orgId,
      deviceId,
      recorder,
      printer: ctx,
      raw,
      ca,
      docs,
      close: async (c) => {
        await dev.close(c);
        await unwind();
      },
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}

export interface P1DemoOptions {
  json: boolean;
  keepData?: string;
  brokerUrl?: string;
  out?: (line: string) => void;
  /** Jobs to send (default 3: inline, fetched, inline). */
  jobs?: number;
  /** How long to wait for every job to settle (default 120 s). */
  timeoutMs?: number;
  /** Tests: break the printer's recording, or set printer faults. */
  stack?: Pick<P1StackOptions, 'wrapRecorder' | 'faults' | 'confirmTimeoutMs'>;
  /** Tests: what reaches the cloud's check, per result as published (return null to drop it, or changed bytes). */
  interceptResult?: (raw: Buffer, result: CommandResult) => Buffer | null;
}

export async function runP1Demo(opts: P1DemoOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const say = (l: string) => {
    if (!opts.json) out(l);
  };
  const stack = await startP1Stack({
    ...(opts.keepData ? { dir: opts.keepData } : {}),
    ...(opts.brokerUrl ? { brokerUrl: opts.brokerUrl } : {}),
    ...(opts.json ? {} : { logger: createLogger({ level: 'error', base: { deviceId: 'demo-p1-0001' } }) }),
    ...opts.stack,
  });
  const { dev, docs } = stack;
  try {
    if (!dev.publicKeyPem) throw new Error('the device has no provisioned identity key to verify receipts with');
    // The device's public key as provisioning printed it: what the cloud verifies results and receipts with.
    const book = new PrintStatusBook({ deviceKey: createPublicKey(dev.publicKeyPem) });
    say(`Tallybox demo (P1 print box): broker ${dev.broker.url}, device ${stack.deviceId} (org ${stack.orgId})`);
    say(`  printer simulator: raw 9100 + PJL on 127.0.0.1:${stack.raw.port}, recording to ${stack.recorder.dir}`);
    say(`  cloud document service: https://127.0.0.1:${docs.port} (a private CA made for this run; the device trusts only it)\n`);

    const n = Math.max(1, opts.jobs ?? 3);
    const sent: SentJob[] = [];
    const rejectedFor = new Set<string>();
    const shown = new Map<string, string>();
    let seen = 0;
    const intake = () => {
      const all = dev.sink.rawResults();
      for (; seen < all.length; seen++) {
        const { raw: original, result } = all[seen]!;
        const raw = opts.interceptResult ? opts.interceptResult(original, result) : original;
        if (!raw) continue;
        let decoded: CommandResult;
        try {
          decoded = pb.CommandResult.decode(raw);
        } catch {
          book.resultsBad++; // not even a CommandResult: counted as rejected, like a bad signature
          continue;
        }
        const jobId = decoded.printJobStatus?.jobId;
        const bad = book.resultsBad;
        book.add(decoded, raw);
        if (jobId && book.resultsBad > bad) {
          rejectedFor.add(jobId);
          say(`  cloud: a status for ${jobId} does not verify with the device key: rejected`);
        }
        const state = jobId ? book.state(jobId) : undefined;
        if (jobId && state && shown.get(jobId) !== state) {
          shown.set(jobId, state);
          const v = book.jobs.get(jobId)!;
          const receipt = v.receipt ? `; erasure receipt: key destroyed, spool file removed, scan ${v.receipt.scan.hits} hits (${v.receipt.verification})` : v.receiptError ? `; receipt INVALID: ${v.receiptError}` : '';
          say(`  device → cloud: ${jobId} ${state}${v.bytes ? ` (${v.bytes} bytes)` : ''}${v.errorCode ? ` ${v.errorCode}` : ''}${receipt}`);
        }
      }
    };

    for (let i = 0; i < n; i++) {
      const jobId = `demo-job-${i + 1}`;
      const fetched = i % 2 === 1;
      const doc = printerReadyDocument(fetched ? 40 : 4, jobId);
      const sha256 = createHash('sha256').update(doc).digest('hex');
      sent.push({ jobId, source: fetched ? 'fetched' : 'inline', bytes: doc.length, sha256 });
      const served = fetched ? docs.add(jobId, doc) : undefined;
      await dev.sink.sendCommand(stack.signer, stack.orgId, stack.deviceId, printJobBody({ jobId, printer: PRINTER, ...(served ? { fetch: served } : { inline: doc }) }));
      say(`  cloud → device: signed PrintJob ${jobId}: ${fetched ? `fetch ${doc.length} bytes over HTTPS (SHA-256 ${sha256.slice(0, 12)}…)` : `${doc.length} bytes inline`}`);
    }

    const deadline = performance.now() + (opts.timeoutMs ?? 120_000);
    const settled = () => sent.every((s) => SETTLED.has(book.state(s.jobId) ?? '') || rejectedFor.has(s.jobId));
    while (performance.now() < deadline) {
      intake();
      if (settled()) break;
      await sleep(50);
    }
    intake();
    if (!settled())
      say(
        `  (timed out waiting for: ${sent
          .filter((s) => !SETTLED.has(book.state(s.jobId) ?? ''))
          .map((s) => s.jobId)
          .join(', ')})`,
      );
    // A recording still being written is not evidence yet: give the printer a moment to finish its file.
    for (let waited = 0; waited < 5000 && stack.recorder.jobs().some((j) => j.state === 'receiving'); waited += 50) await sleep(50);

    const { jobs, summary } = await checkPrintEvidence({ sent, recorded: stack.recorder.jobs(), recorderDir: stack.recorder.dir, book, orgId: stack.orgId, deviceId: stack.deviceId });
    say("\nEvidence (the printer simulator's recordings, SHA-256 against what the cloud sent; receipts verified with the device's public key):");
    for (const j of jobs) {
      if (opts.json) out(JSON.stringify(j));
      else
        say(
          `  ${j.jobId} (${j.source}): ${j.outcome.toUpperCase()}: ${j.exactCopies} exact cop${j.exactCopies === 1 ? 'y' : 'ies'} of ${j.recordings} recorded; device reported ${j.reported}${j.contradicted ? ' (CONTRADICTED by the evidence)' : ''}; receipt ${j.receipt}`,
        );
    }
    const ok = summaryOk(summary);
    if (opts.json) out(JSON.stringify(summary));
    else {
      say(
        `\nDone: ${summary.sent} jobs sent, ${summary.printed} printed byte for byte, ${summary.failed} failed, ${summary.uncertain} uncertain, ${summary.bytes} bytes, ${summary.receiptsVerified} receipts verified${summary.resultsRejected ? `, ${summary.resultsRejected} results rejected` : ''}${summary.contradicted ? `, ${summary.contradicted} contradicted` : ''}.`,
      );
      if (!ok) say('FAILED: the evidence does not show every job printed exactly once with a verified receipt.');
      if (opts.keepData) say(`Device data left in ${dev.dataDir}`);
    }
    return ok ? 0 : 1;
  } catch (err) {
    if (opts.json) out(JSON.stringify({ error: errorMessage(err) }));
    else say(`demo failed: ${errorMessage(err)}`);
    return 1;
  } finally {
    await stack.close(opts.keepData ? { keepDir: true } : {});
  }
}
