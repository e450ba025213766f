/**
 * The fast start of an inline job (spool.ts #startDirect): with the printer idle, the document's
 * first FIRST_CHUNK_BYTES go to the printer from the command's own bytes while the spool file is
 * written and fsynced; nothing more leaves until the job's row is committed in `sending` with the
 * printer's acceptance, and from then on the document comes from the encrypted spool. Watched from
 * inside the transport: at every chunk the printer pulls, what the database and the disk say.
 * A spool write that fails leaves no job: the intake is told, the printer got at most the first byte.
 */
import { mkdir, rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { Printer, PrintSubmission } from '../../firmware-bridge/devices.js';
import { pb, PrintJobState, type PrintJob } from '../../src/proto/index.js';
import { FIRST_CHUNK_BYTES } from '../../src/roles/p1/spool.js';
import { printJobBody } from '../../simulators/cloud/print-jobs.js';
import type { CommandContext } from '../../src/link/commands/index.js';
import { document, p1Bench, printed, type P1Bench } from './helpers/harness.js';
import { TestPrinter } from './helpers/tcp-printer.js';
import { waitUntil } from '../helpers/ports.js';

const ORG = 'org-a';
let counter = 0;
const ctx = (): CommandContext => ({ counter: ++counter, nonce: Buffer.alloc(16), issuedAtMs: Date.now(), expiresAtMs: Date.now() + 60_000, keyId: 'cloud-1' });
const job = (spec: Parameters<typeof printJobBody>[0]): PrintJob => pb.PrintJob.fromObject(printJobBody(spec).printJob as Record<string, unknown>);

interface Pull {
  bytes: number;
  row: { state: string; accepted: boolean } | undefined;
  spoolFiles: number;
}

let b: P1Bench | undefined;
afterEach(async () => {
  await b?.cleanup();
  b = undefined;
});

/** The test printer, with every chunk the transport pulls noted with the row's state at that moment. */
class WatchedPrinter implements Printer {
  readonly protocol = 'raw9100' as const;
  readonly description = 'watched test printer';
  #inner: TestPrinter | undefined;
  constructor(readonly pulls: Pull[]) {}
  get inner(): TestPrinter {
    this.#inner ??= new TestPrinter(b!.printer);
    return this.#inner;
  }
  probe() {
    return this.inner.probe();
  }
  jobState(ref: string) {
    return this.inner.jobState!(ref);
  }
  send(job: PrintSubmission) {
    const src = job.document;
    const pulls = this.pulls;
    async function* watched(): AsyncGenerator<Uint8Array> {
      for await (const chunk of src) {
        const r = await b!.role.spool.store.get(ORG, job.jobName);
        pulls.push({ bytes: chunk.length, row: r && { state: r.state, accepted: r.accepted }, spoolFiles: (await b!.spoolFiles()).length });
        yield chunk;
      }
    }
    return this.inner.send({ ...job, document: watched() });
  }
}

describe('P1 inline job started straight from the command', () => {
  it('only the first byte goes before the row (sending, accepted) is committed; the rest comes from the spool; printed once', async () => {
    const pulls: Pull[] = [];
    b = await p1Bench({ openPrinter: () => new WatchedPrinter(pulls) });
    await waitUntil(() => b!.role.printers.get('front')!.supervisor.usable, 30_000, 'printer usable');
    const doc = document(300_000, 11);
    const out = await b.role.printJob(ORG, job({ jobId: 'direct', printer: 'front', inline: Buffer.from(doc) }), ctx());
    expect(out).toMatchObject({ code: 1, reason: 'job_queued', printJobStatus: { jobId: 'direct', state: PrintJobState.PRINT_JOB_STATE_SENDING } });
    await b.waitState('direct', 'confirmed', 60_000);
    await b.role.spool.settled();
    expect(await printed(b, 'direct')).toEqual([doc]);
    expect(pulls[0]!.bytes).toBe(FIRST_CHUNK_BYTES);
    // Every later chunk: the row is on disk, in sending, with the printer's acceptance recorded.
    for (const [i, pull] of pulls.slice(1).entries()) expect(pull.row, `chunk ${i + 1}`).toEqual({ state: 'sending', accepted: true });
    expect(pulls.slice(1).every((p) => p.spoolFiles === 1)).toBe(true);
    expect(pulls.reduce((n, p) => n + p.bytes, 0)).toBe(doc.length);
    expect(await b.spoolFiles()).toEqual([]);
  }, 90_000);

  it('a busy printer queue takes the spooled path (ready, then sent in order); a held job is never started directly', async () => {
    b = await p1Bench();
    b.printer.faults.slowBps = 200_000;
    const d1 = document(200_000, 12);
    const d2 = document(10_000, 13);
    const first = await b.role.printJob(ORG, job({ jobId: 'q1', printer: 'front', inline: Buffer.from(d1) }), ctx());
    const second = await b.role.printJob(ORG, job({ jobId: 'q2', printer: 'front', inline: Buffer.from(d2) }), ctx());
    const held = await b.role.printJob(ORG, job({ jobId: 'q3', printer: 'front', inline: Buffer.from(d2), printAfterMs: Date.now() + 3_600_000 }), ctx());
    expect([PrintJobState.PRINT_JOB_STATE_READY, PrintJobState.PRINT_JOB_STATE_SENDING]).toContain(first.printJobStatus?.state);
    expect(second.printJobStatus?.state).toBe(PrintJobState.PRINT_JOB_STATE_READY);
    expect(held.printJobStatus?.state).toBe(PrintJobState.PRINT_JOB_STATE_READY);
    await b.waitState('q2', 'confirmed', 60_000);
    expect(b.printer.jobs.filter((j) => j.state === 'completed').map((j) => j.name)).toEqual(['q1', 'q2']);
    expect(await b.role.spool.store.get(ORG, 'q3')).toMatchObject({ state: 'ready' });
  }, 90_000);

  it('a spool write that fails leaves no job: the intake gets the error, no row, no file, at most the first byte at the printer', async () => {
    b = await p1Bench();
    await waitUntil(() => b!.role.printers.get('front')!.supervisor.usable, 30_000, 'printer usable');
    const doc = document(50_000, 14);
    // The spool directory is gone (a broken disk, a careless clean-up): the spool file cannot be created.
    await rm(b.spoolDir, { recursive: true });
    await expect(b.role.printJob(ORG, job({ jobId: 'nowrite', printer: 'front', inline: Buffer.from(doc) }), ctx())).rejects.toThrow(/ENOENT/);
    await b.role.spool.settled();
    expect(await b.role.spool.store.get(ORG, 'nowrite')).toBeUndefined();
    await waitUntil(() => b!.printer.jobs.every((j) => j.state !== 'receiving'), 30_000, 'printer connection closed');
    for (const j of b.printer.jobs) expect(j.bytes).toBeLessThanOrEqual(FIRST_CHUNK_BYTES);
    expect(b.results).toEqual([]);
    // The next job (its directory back) prints normally.
    await mkdir(b.spoolDir, { mode: 0o700 });
    await b.role.printJob(ORG, job({ jobId: 'after', printer: 'front', inline: Buffer.from(doc) }), ctx());
    await b.waitState('after', 'confirmed', 60_000);
    expect(await printed(b, 'after')).toEqual([doc]);
  }, 90_000);
});
