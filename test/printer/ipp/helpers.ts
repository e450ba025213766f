/**
 * Test helpers for the IPP suites: the simulator's IPP server on a free port with the simulator's own
 * recorder (DirJobRecorder, in a temp dir) and shared context (SimPrinterContext), as `tallybox-sim
 * printer` composes them; and small document generators.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SimPrinterContext } from '../../../simulators/printer/context.js';
import { startIppServer, type IppSimServer } from '../../../simulators/printer/ipp-server.js';
import { DirJobRecorder } from '../../../simulators/printer/recorder.js';
import type { PrinterFaults, RecordedJob } from '../../../simulators/printer/types.js';

/** The recorder in a fresh temp dir, with the bytes of a recorded job at hand. */
export function tempRecorder(): { recorder: DirJobRecorder; bytesOf(job: RecordedJob): Buffer; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'tallybox-ipp-rec-'));
  const recorder = new DirJobRecorder(dir);
  return { recorder, bytesOf: (job) => readFileSync(join(dir, job.file)), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface SimHarness {
  ctx: SimPrinterContext;
  /** The live switches (ctx.faults): a test may flip one directly or through ctx.setFaults. */
  faults: PrinterFaults;
  recorder: DirJobRecorder;
  bytesOf(job: RecordedJob): Buffer;
  server: IppSimServer;
  url: string;
  close(): Promise<void>;
}

export async function startSim(faults: Partial<PrinterFaults> = {}): Promise<SimHarness> {
  const rec = tempRecorder();
  const ctx = new SimPrinterContext(rec.recorder, faults);
  const server = await startIppServer(ctx, { host: '127.0.0.1', port: 0 });
  return {
    ctx,
    faults: ctx.faults,
    recorder: rec.recorder,
    bytesOf: rec.bytesOf,
    server,
    url: `ipp://127.0.0.1:${server.port}/ipp/print`,
    async close() {
      await server.close();
      rec.cleanup();
    },
  };
}

/** A small but valid one-page PDF (ipptool and ippeveprinter check the magic; nothing renders it here). */
export function tinyPdf(marker = ''): Buffer {
  return Buffer.from(`%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\n% ${marker}\ntrailer<</Root 1 0 R>>\n%%EOF\n`);
}

/** Random bytes of a given size, produced in chunks, as an async iterable (and the whole, to compare). */
export function randomDocument(size: number, chunk = 64 * 1024): { bytes: Buffer; iterable: () => AsyncIterable<Uint8Array> } {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 2654435761) >>> 24;
  return {
    bytes,
    iterable: async function* () {
      for (let o = 0; o < size; o += chunk) yield bytes.subarray(o, Math.min(size, o + chunk));
    },
  };
}

export async function* once(b: Uint8Array): AsyncIterable<Uint8Array> {
  yield b;
}
