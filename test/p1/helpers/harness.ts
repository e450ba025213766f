/**
 * P1 role bench for integration tests: a real vault (key files, vault.db), the
 * real P1 role and spool (SQLite, encrypted spool files), a real TCP test
 * printer writing jobs to files, and an HTTPS document server with its own CA.
 * Results go into a PrintStatusBook that verifies signatures and receipts.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { P1ConfigSchema, type P1Config } from '../../../src/roles/p1/config.js';
import { P1Role } from '../../../src/roles/p1/role.js';
import { pb, type CommandResultProps, type PrinterSummaryProps } from '../../../src/proto/index.js';
import { Vault } from '../../../src/vault/vault.js';
import { makePrivateCa, PrintDocServer, type PrivateCa } from '../../../simulators/cloud/print-docs.js';
import { PrintStatusBook } from '../../../simulators/cloud/print-jobs.js';
import { sandbox, type Sandbox } from '../../vault/helpers.js';
import { TestPrinter, TestPrinterServer } from './tcp-printer.js';
import { waitUntil } from '../../helpers/ports.js';

export interface P1Bench {
  sb: Sandbox;
  vault: Vault;
  role: P1Role;
  printer: TestPrinterServer;
  ca: PrivateCa;
  docs: PrintDocServer;
  book: PrintStatusBook;
  results: CommandResultProps[];
  peripherals: Array<{ name: string; online: boolean; detail: string }>;
  summaries: PrinterSummaryProps[][];
  spoolDir: string;
  config: P1Config;
  clock: { synced: boolean };
  restart(): Promise<void>;
  waitState(jobId: string, state: string, timeoutMs?: number): Promise<void>;
  spoolFiles(): Promise<string[]>;
  cleanup(): Promise<void>;
}

export async function p1Bench(opts: { config?: Record<string, unknown>; canQuery?: boolean; ca?: PrivateCa; openPrinter?: (url: string) => import('../../../firmware-bridge/devices.js').Printer } = {}): Promise<P1Bench> {
  const sb = await sandbox();
  const printerDir = join(sb.root, 'printer');
  await mkdir(printerDir, { recursive: true });
  const printer = new TestPrinterServer(printerDir);
  await printer.start();
  const ca = opts.ca ?? (await makePrivateCa());
  const docs = await PrintDocServer.start({ ca });
  const config = P1ConfigSchema.parse({
    printers: { front: { url: `raw://127.0.0.1:${printer.port}` } },
    fetch: { caFile: ca.caFile, timeoutMs: 20_000 },
    chunkBytes: 4096,
    inlineMaxBytes: 1024 * 1024,
    retry: { minMs: 50, maxMs: 300 },
    heartbeatMs: 200,
    ...opts.config,
  });
  const vault = await Vault.open({ dataDir: sb.dataDir, keyProvider: sb.provider });
  const book = new PrintStatusBook({ deviceKey: vault.identity.publicKey });
  const results: CommandResultProps[] = [];
  const peripherals: P1Bench['peripherals'] = [];
  const summaries: PrinterSummaryProps[][] = [];
  const clock = { synced: true };
  const make = () =>
    P1Role.create({
      config,
      dataDir: sb.dataDir,
      deviceId: 'p1-test',
      keys: vault,
      identity: vault.identity,
      enqueueResult: async (_org, r) => {
        results.push(r);
        const raw = pb.CommandResult.encode(pb.CommandResult.fromObject(r)).finish();
        book.add(pb.CommandResult.decode(raw), raw);
      },
      sink: { setPeripheral: (name, online, detail = '') => void peripherals.push({ name, online, detail }), setPrinters: (p) => void summaries.push(p) },
      clockSynced: () => clock.synced,
      openPrinter: opts.openPrinter ?? (() => new TestPrinter(printer, { canQuery: opts.canQuery !== false })),
      supervisorBackoff: { minMs: 50, maxMs: 300 },
      confirmTimeoutMs: 3000,
    });
  const spoolDir = join(sb.dataDir, 'spool');
  const b: P1Bench = {
    sb,
    vault,
    role: await make(),
    printer,
    ca,
    docs,
    book,
    results,
    peripherals,
    summaries,
    spoolDir,
    config,
    clock,
    async restart() {
      await b.role.stop();
      b.role = await make();
      await b.role.start();
    },
    waitState: (jobId, state, timeoutMs = 20_000) => waitUntil(() => book.state(jobId) === state, timeoutMs, `job ${jobId} ${state} (is ${book.state(jobId)})`),
    spoolFiles: async () => readdir(spoolDir).catch(() => []),
    async cleanup() {
      await b.role.stop().catch(() => undefined);
      await vault.close().catch(() => undefined);
      await printer.stop();
      await docs.close();
      if (!opts.ca) await ca.cleanup();
      await sb.cleanup();
    },
  };
  await b.role.start();
  return b;
}

/** A document with a recognisable random body (samples for the fragment scan). */
export function document(bytes: number, seed = 1): Buffer {
  const b = Buffer.alloc(bytes);
  let x = seed * 2654435761;
  for (let i = 0; i < bytes; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

export async function printed(b: P1Bench, jobId: string): Promise<Buffer[]> {
  return Promise.all(b.printer.jobs.filter((j) => j.name === jobId && j.state === 'completed').map((j) => readFile(j.file)));
}

/** Files that may hold a job's traces: everything in the spool dir, every database file of the data dir. */
export async function dataFiles(b: P1Bench): Promise<string[]> {
  const spool = (await readdir(b.spoolDir).catch(() => [])).map((n) => join(b.spoolDir, n));
  const data = (await readdir(b.sb.dataDir)).filter((n) => /\.db(-wal|-shm|-journal)?$/.test(n)).map((n) => join(b.sb.dataDir, n));
  return [...spool, ...data];
}
