import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SimPrinterContext } from '../../simulators/printer/context.js';
import { startRawServer } from '../../simulators/printer/raw-server.js';
import { DirJobRecorder } from '../../simulators/printer/recorder.js';
import type { PrinterFaults, RecordedJob, StartedServer } from '../../simulators/printer/types.js';

/** Deterministic document bytes: chunk i of a seeded stream (SHA-256 counter mode), generated, never held whole. */
export function docChunk(seed: string, i: number, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let off = 0, n = 0; off < size; off += 32, n++)
    createHash('sha256')
      .update(`${seed}:${i}:${n}`)
      .digest()
      .copy(out, off, 0, Math.min(32, size - off));
  return out;
}

export async function* document(seed: string, totalBytes: number, chunkSize = 64 * 1024): AsyncGenerator<Buffer> {
  for (let i = 0, sent = 0; sent < totalBytes; i++) {
    const n = Math.min(chunkSize, totalBytes - sent);
    yield docChunk(seed, i, n);
    sent += n;
  }
}

/** SHA-256 of the first `bytes` of a generated document (or all of it). */
export async function documentHash(seed: string, totalBytes: number, chunkSize = 64 * 1024, firstBytes = totalBytes): Promise<string> {
  const h = createHash('sha256');
  let left = firstBytes;
  for await (const c of document(seed, totalBytes, chunkSize)) {
    if (left <= 0) break;
    h.update(c.subarray(0, Math.min(c.length, left)));
    left -= c.length;
  }
  return h.digest('hex');
}

export async function fileHash(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

export interface Sim {
  dir: string;
  ctx: SimPrinterContext;
  recorder: DirJobRecorder;
  server: StartedServer;
  port: number;
  /** Resolves with the next job that ends (or one already ended with this id). */
  ended(id: number): Promise<RecordedJob>;
  close(): Promise<void>;
}

export async function startSim(faults: Partial<PrinterFaults> = {}): Promise<Sim> {
  const dir = mkdtempSync(join(tmpdir(), 'tallybox-printer-'));
  const recorder = new DirJobRecorder(join(dir, 'out'));
  const ctx = new SimPrinterContext(recorder, faults);
  const server = await startRawServer(ctx, { host: '127.0.0.1', port: 0 });
  return {
    dir,
    ctx,
    recorder,
    server,
    port: server.port,
    ended: (id) =>
      new Promise((resolve) => {
        const done = recorder.jobs().find((j) => j.id === id && j.state !== 'receiving');
        if (done) return resolve(done);
        const off = recorder.onEnd((j) => {
          if (j.id === id) {
            off();
            resolve(j);
          }
        });
      }),
    async close() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
