/**
 * Test helpers for the IPP suites: a JobRecorder that streams each job to a file in a temp dir (a
 * stand-in for the simulator's recorder where that one is not needed), a live PrinterSimContext, the
 * simulator's IPP server started on a free port, and small document generators.
 */
import { createWriteStream, mkdtempSync, readFileSync, rmSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startIppServer, type IppSimServer } from '../../../simulators/printer/ipp-server.js';
import { NO_FAULTS, type JobRecorder, type PrinterFaults, type PrinterSimContext, type RecordedJob, type RecordedJobState } from '../../../simulators/printer/types.js';

export class TempRecorder implements JobRecorder {
  readonly dir = mkdtempSync(join(tmpdir(), 'tallybox-ipp-rec-'));
  private readonly list: RecordedJob[] = [];

  begin(meta: { protocol: RecordedJob['protocol']; name?: string; format?: string; copies?: number }) {
    const id = this.list.length + 1;
    const job: RecordedJob = { id, protocol: meta.protocol, name: meta.name, format: meta.format, copies: meta.copies ?? 1, bytes: 0, state: 'receiving', file: `job-${id}.bin` };
    this.list.push(job);
    const stream: WriteStream = createWriteStream(join(this.dir, job.file), { mode: 0o600 });
    return {
      id,
      write(chunk: Uint8Array) {
        job.bytes += chunk.length;
        return stream.write(chunk);
      },
      drained: () => (stream.writableNeedDrain ? new Promise<void>((r) => stream.once('drain', () => r())) : Promise.resolve()),
      end: (state: Exclude<RecordedJobState, 'receiving'>) =>
        new Promise<RecordedJob>((resolve) =>
          stream.end(() => {
            job.state = state;
            resolve({ ...job });
          }),
        ),
    };
  }

  jobs(): RecordedJob[] {
    return this.list.map((j) => ({ ...j }));
  }

  bytesOf(job: RecordedJob): Buffer {
    return readFileSync(join(this.dir, job.file));
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface SimHarness {
  ctx: PrinterSimContext;
  faults: PrinterFaults;
  recorder: TempRecorder;
  server: IppSimServer;
  url: string;
  close(): Promise<void>;
}

export async function startSim(faults: Partial<PrinterFaults> = {}): Promise<SimHarness> {
  const recorder = new TempRecorder();
  const f: PrinterFaults = { ...NO_FAULTS, ...faults };
  const ctx: PrinterSimContext = { recorder, faults: f, status: () => ({ state: 'idle', reasons: [] }) };
  const server = await startIppServer(ctx, { host: '127.0.0.1', port: 0 });
  return {
    ctx,
    faults: f,
    recorder,
    server,
    url: `ipp://127.0.0.1:${server.port}/ipp/print`,
    async close() {
      await server.close();
      recorder.cleanup();
    },
  };
}

/** A small but valid one-page PDF (ipptool and ippeveprinter check the magic; nothing renders it here). */
export function tinyPdf(marker = ''): Buffer {
  return Buffer.from(
    `%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\n% ${marker}\ntrailer<</Root 1 0 R>>\n%%EOF\n`,
  );
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
