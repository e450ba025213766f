/**
 * P1: a print box. Its printer is the printer simulator (raw TCP 9100 with
 * PJL status, every job's bytes recorded under the device's directory); the
 * cloud's document service for fetched jobs is an HTTPS server with a private
 * CA made for this device, which the agent's p1.fetch.caFile trusts. Nobody
 * punches here: the lab sends print jobs (signed PrintJob commands) and
 * injects printer faults (offline, paper-out, busy, never-confirm).
 *
 * A job's outcome is evidence, never the agent's word: the recording's
 * SHA-256 against what was sent, and the erasure receipt verified with the
 * device's public key (simulators/printer/evidence.ts, as the demo does).
 */
import { createHash, createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { TallyboxError } from '../../../src/util/errors.js';
import { pb, type CommandResult } from '../../../src/proto/index.js';
import { makePrivateCa, PrintDocServer } from '../../cloud/print-docs.js';
import { PrintStatusBook, printJobBody } from '../../cloud/print-jobs.js';
import { SimPrinterContext } from '../../printer/context.js';
import { checkPrintEvidence, printerReadyDocument, SETTLED_JOB_STATES, type JobEvidence, type SentJob } from '../../printer/evidence.js';
import { startRawServer } from '../../printer/raw-server.js';
import { DirJobRecorder } from '../../printer/recorder.js';
import { methodUnavailable, unknownPeripheral } from './errors.js';
import type { LabDeviceKind, LabPrinter, LabPrinterFault, LabPrintJobView } from './types.js';

const Peripherals = z
  .object({
    printer: z
      .object({
        name: z
          .string()
          .regex(/^[A-Za-z0-9_.-]{1,32}$/, 'must be a printer name (1-32 of A-Z a-z 0-9 _ . -)')
          .default('front'),
      })
      .strict()
      .default({ name: 'front' }),
  })
  .strict();

/** The agent's p1.inlineMaxBytes (its default, set explicitly below): a larger inline job would not even reach the intake. */
const INLINE_MAX_BYTES = 48 * 1024;

/** Paper runs out this far into the next job when the fault is switched on without a byte count. */
const PAPER_OUT_AFTER = 4096;

export const p1Kind: LabDeviceKind = {
  kind: 'p1',
  description: 'print box: a printer simulator (raw 9100 + PJL, jobs recorded), fetched documents over HTTPS under a private CA',
  peripheralsSchema: Peripherals,
  async start({ device, dir }) {
    const p = Peripherals.parse(device.peripherals);
    const peripheral = `printer:${p.printer.name}`; // the agent's supervisor reports it under this name
    const closers: (() => Promise<unknown>)[] = [];
    const close = async () => {
      for (const f of closers.splice(0).reverse()) await f().catch(() => undefined); // each part closes even when another fails
    };
    try {
      const ca = await makePrivateCa();
      closers.push(() => ca.cleanup());
      const docs = await PrintDocServer.start({ ca });
      closers.push(() => docs.close());
      const recorder = new DirJobRecorder(join(dir, 'printer-out'));
      const ctx = new SimPrinterContext(recorder);
      const raw = await startRawServer(ctx, { host: '127.0.0.1', port: 0 });
      closers.push(() => raw.close());

      const sent = new Map<string, SentJob & { pages: number; counter: number }>();
      const listeners = new Set<(jobId: string) => void>();
      const changed = (jobId: string) => {
        for (const fn of listeners) fn(jobId);
      };
      recorder.onEnd((j) => j.name && sent.has(j.name) && changed(j.name));
      let book = new PrintStatusBook();

      const views = async (): Promise<LabPrintJobView[]> => {
        const list = [...sent.values()];
        const { jobs } = await checkPrintEvidence({ sent: list, recorded: recorder.jobs(), recorderDir: recorder.dir, book, orgId: device.org, deviceId: device.name });
        return jobs.map((e: JobEvidence, i) => {
          const s = list[i]!;
          const v = book.jobs.get(s.jobId);
          return {
            jobId: s.jobId,
            source: s.source,
            pages: s.pages,
            bytes: s.bytes,
            counter: s.counter,
            state: e.reported,
            errorCode: v?.errorCode ?? '',
            recordings: e.recordings,
            exactCopies: e.exactCopies,
            // Printed is evidence; a job not printed is uncertain or failed once the device settled it, pending until then.
            outcome: e.outcome === 'printed' ? 'printed' : e.reported === 'uncertain' ? 'uncertain' : SETTLED_JOB_STATES.has(e.reported) ? 'failed' : 'pending',
            receipt: e.receipt,
            contradicted: e.contradicted,
          };
        });
      };

      const printer: LabPrinter = {
        name: p.printer.name,
        trust(publicKeyPem) {
          book = new PrintStatusBook({ deviceKey: createPublicKey(publicKeyPem) });
        },
        validate(req) {
          if (req.source !== 'inline') return;
          const size = printerReadyDocument(req.pages, 'size').length;
          if (size > INLINE_MAX_BYTES)
            throw new TallyboxError('LAB_BAD_REQUEST', `an inline document of ${req.pages} pages is ${size} bytes, more than the print box takes inline (p1.inlineMaxBytes ${INLINE_MAX_BYTES}): send it with source "fetch"`, {
              device: device.name,
            });
        },
        prepare(jobId, req) {
          const doc = printerReadyDocument(req.pages, jobId);
          const served = req.source === 'fetch' ? docs.add(jobId, doc) : undefined;
          return {
            record: (counter: number) => sent.set(jobId, { jobId, source: served ? 'fetched' : 'inline', bytes: doc.length, sha256: createHash('sha256').update(doc).digest('hex'), pages: req.pages, counter }),
            body: printJobBody({ jobId, printer: p.printer.name, copies: 1, ...(served ? { fetch: served } : { inline: doc }) }),
          };
        },
        onResult(raw) {
          let r: CommandResult;
          try {
            r = pb.CommandResult.decode(raw);
          } catch {
            book.resultsBad++; // not a CommandResult: rejected like a bad signature
            return;
          }
          const jobId = r.printJobStatus?.jobId;
          if (!jobId || !sent.has(jobId)) return;
          book.add(r, raw);
          changed(jobId);
        },
        jobs: views,
        async job(jobId) {
          return (await views()).find((j) => j.jobId === jobId);
        },
        view() {
          const s = ctx.status();
          const f = ctx.faults;
          return {
            name: p.printer.name,
            state: s.state,
            reasons: s.reasons,
            faults: { offline: f.offline, busy: f.busy, paperOut: f.paperOutAfterBytes > 0 || ctx.paperOutLatched, neverConfirm: f.neverConfirm },
            recorded: recorder.jobs().length,
            resultsRejected: book.resultsBad,
          };
        },
        setFault(fault: LabPrinterFault, on: boolean, afterBytes?: number) {
          if (fault === 'clear') {
            ctx.setFaults({ offline: false, busy: false, neverConfirm: false, paperOutAfterBytes: 0, slowBytesPerSec: 0, closeAfterBytes: 0 });
            ctx.resume();
          } else if (fault === 'paper-out') {
            ctx.setFaults({ paperOutAfterBytes: on ? (afterBytes ?? PAPER_OUT_AFTER) : 0 });
            if (!on) ctx.resume(); // paper loaded: a job stopped mid-way goes on
          } else ctx.setFaults({ [fault === 'never-confirm' ? 'neverConfirm' : fault]: on });
        },
        onChange(fn) {
          listeners.add(fn);
          return () => listeners.delete(fn);
        },
      };

      return {
        agentConfig: {
          p1: {
            printers: { [p.printer.name]: { url: `raw://127.0.0.1:${raw.port}?pjl=1` } },
            inlineMaxBytes: INLINE_MAX_BYTES,
            fetch: { caFile: ca.caFile, timeoutMs: 60_000 },
            retry: { minMs: 200, maxMs: 2000 },
            heartbeatMs: 2000,
          },
        },
        methods: [],
        printer,
        peripherals: () => {
          const s = ctx.status();
          return [{ name: peripheral, plugged: !ctx.faults.offline, detail: `${s.state}${s.reasons[0] && s.reasons[0] !== 'none' ? ` (${s.reasons.join(', ')})` : ''}, ${recorder.jobs().length} jobs recorded` }];
        },
        async present(_person, method) {
          throw methodUnavailable(device.name, method, []);
        },
        credentials: () => [],
        modalities: () => [],
        enrol: async () => undefined,
        async setPlugged(name, plugged) {
          // Unplugging the printer is switching it off: the port stops answering.
          if (name !== peripheral && name !== 'printer') throw unknownPeripheral(device.name, name, [peripheral]);
          ctx.setFaults({ offline: !plugged });
        },
        close,
      };
    } catch (err) {
      await close();
      throw err;
    }
  },
};
