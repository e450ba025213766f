/**
 * The P1 spool end to end inside one process: signed-command handlers → real
 * SQLite spool → AES-GCM chunked spool files → a real TCP printer writing to
 * files; documents fetched over HTTPS from the cloud emulator's document
 * server (its own CA, trusted by config). After every job: the printer got
 * exactly the document, the spool directory and every database file hold no
 * sampled fragment of it, the job's key row is gone, and the erasure receipt
 * verifies against the device identity.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { pb, PrintJobState, type PrintJob } from '../../src/proto/index.js';
import { scanForSamples } from '../../src/privacy/scan.js';
import { printJobBody } from '../../simulators/cloud/print-jobs.js';
import type { CommandContext } from '../../src/link/commands/index.js';
import { waitUntil } from '../helpers/ports.js';
import { copyFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { spoolErasureParticipant } from '../../src/roles/p1/withdraw.js';
import { dataFiles, document, p1Bench, printed, type P1Bench } from './helpers/harness.js';

const ORG = 'org-a';
let counter = 0;
const ctx = (): CommandContext => ({ counter: ++counter, nonce: Buffer.alloc(16), issuedAtMs: Date.now(), expiresAtMs: Date.now() + 60_000, keyId: 'cloud-1' });
const job = (spec: Parameters<typeof printJobBody>[0]): PrintJob => pb.PrintJob.fromObject(printJobBody(spec).printJob as Record<string, unknown>);

let b: P1Bench | undefined;
afterEach(async () => {
  await b?.cleanup();
  b = undefined;
});

/** The scan of the spool dir and every database file for fragments sampled from the document. */
async function assertShredded(bench: P1Bench, jobId: string, doc: Buffer): Promise<void> {
  const samples = [0, Math.floor(doc.length / 2), doc.length - 32].filter((at) => at >= 0 && at + 32 <= doc.length).map((at) => ({ bytes: doc.subarray(at, at + 32), label: 'ciphertext' as const, scope: 'all' as const }));
  const scan = await scanForSamples(
    (await dataFiles(bench)).map((path) => ({ path, scope: 'store' as const })),
    samples,
  );
  expect(scan.hits).toBe(0);
  expect(await bench.spoolFiles()).toEqual([]);
  expect(await bench.role.spool.store.get(ORG, jobId)).toBeUndefined();
  const v = bench.book.jobs.get(jobId);
  expect(v?.receipt).toMatchObject({ kind: 'print_job', orgId: ORG, requestRef: `print:${jobId}`, ok: true, verification: 'verified' });
  expect(v?.receipt?.scan.hits).toBe(0);
}

describe('P1 spool', () => {
  it('inline job: printed once, byte for byte; then key, file and row are gone and the receipt verifies', async () => {
    b = await p1Bench();
    const doc = document(20_000, 7);
    const out = await b.role.printJob(ORG, job({ jobId: 'inl-1', printer: 'front', inline: Buffer.from(doc) }), ctx());
    expect(out).toMatchObject({ code: 1, reason: 'job_queued', printJobStatus: { jobId: 'inl-1' } });
    // An idle printer starts it straight from the command (sending); one still being probed queues it (ready).
    expect([PrintJobState.PRINT_JOB_STATE_READY, PrintJobState.PRINT_JOB_STATE_SENDING]).toContain(out.printJobStatus?.state);
    await b.waitState('inl-1', 'confirmed');
    await b.role.spool.settled();
    expect(await printed(b, 'inl-1')).toEqual([doc]);
    await assertShredded(b, 'inl-1', doc);
    expect(b.book.receiptsBad).toBe(0);
    expect(b.book.resultsBad).toBe(0);
  });

  it('the same job id again is never queued twice: its status is answered', async () => {
    b = await p1Bench();
    const doc = document(5000, 2);
    await b.role.printJob(ORG, job({ jobId: 'dup', printer: 'front', inline: Buffer.from(doc) }), ctx());
    await b.waitState('dup', 'confirmed');
    const again = await b.role.printJob(ORG, job({ jobId: 'dup', printer: 'front', inline: Buffer.from(doc) }), ctx());
    expect(again).toMatchObject({ code: 1, reason: 'job_known', printJobStatus: { state: PrintJobState.PRINT_JOB_STATE_CONFIRMED } });
    await b.role.spool.settled();
    expect(b.printer.completed('dup')).toBe(1);
  });

  it('fetched job (hash ok) over HTTPS from the cloud emulator, trusted through its CA only', async () => {
    b = await p1Bench();
    const doc = document(300_000, 3);
    const served = b.docs.add('doc-ok', doc);
    const out = await b.role.printJob(ORG, job({ jobId: 'f-ok', printer: 'front', fetch: served }), ctx());
    expect(out).toMatchObject({ code: 1, reason: 'job_queued' });
    await b.waitState('f-ok', 'confirmed');
    await b.role.spool.settled();
    expect(await printed(b, 'f-ok')).toEqual([doc]);
    await assertShredded(b, 'f-ok', doc);
  });

  it('fetched job with the wrong hash: rejected, nothing printed, nothing left on disk', async () => {
    b = await p1Bench();
    const doc = document(100_000, 4);
    const served = b.docs.add('doc-bad', doc);
    await b.role.printJob(ORG, job({ jobId: 'f-bad', printer: 'front', fetch: { ...served, sha256: Buffer.alloc(32, 1) } }), ctx());
    await b.waitState('f-bad', 'failed');
    await b.role.spool.settled();
    expect(b.book.jobs.get('f-bad')?.errorCode).toBe('FETCH_HASH_MISMATCH');
    expect(b.printer.jobs).toEqual([]);
    expect(await b.spoolFiles()).toEqual([]);
    expect(await b.role.spool.store.get(ORG, 'f-bad')).toBeUndefined();
  });

  it('a server the CA does not vouch for is refused (no fallback to unverified TLS)', async () => {
    b = await p1Bench({ config: { fetch: { timeoutMs: 5000 } } }); // no caFile: the system CAs only
    const served = b.docs.add('doc-x', document(1000, 5));
    await b.role.printJob(ORG, job({ jobId: 'f-ca', printer: 'front', fetch: served }), ctx());
    await b.waitState('f-ca', 'failed', 30_000);
    expect(b.book.jobs.get('f-ca')?.errorCode).toBe('FETCH_FAILED');
    expect(b.printer.jobs).toEqual([]);
  });

  it('bad commands are refused and change nothing: unknown printer, inline too large, http URL, bad job id', async () => {
    b = await p1Bench({ config: { inlineMaxBytes: 1000 } });
    expect(await b.role.printJob(ORG, job({ jobId: 'x1', printer: 'nope', inline: Buffer.alloc(10) }), ctx())).toMatchObject({ code: 10, reason: 'unknown_printer' });
    expect(await b.role.printJob(ORG, job({ jobId: 'x2', printer: 'front', inline: Buffer.alloc(1001) }), ctx())).toMatchObject({ code: 10, reason: 'inline_too_large' });
    expect(await b.role.printJob(ORG, job({ jobId: 'x3', printer: 'front', fetch: { url: 'http://127.0.0.1/x', sha256: Buffer.alloc(32), size: 1 } }), ctx())).toMatchObject({ code: 10, reason: 'bad_url' });
    expect(await b.role.printJob(ORG, job({ jobId: 'bad/id', printer: 'front', inline: Buffer.alloc(1) }), ctx())).toMatchObject({ code: 10, reason: 'bad_job_id' });
    expect(await b.role.spool.store.all()).toEqual([]);
    expect(await b.spoolFiles()).toEqual([]);
  });

  it('cancel before sending (printer offline): cancelled, shredded, never printed', async () => {
    b = await p1Bench();
    await b.printer.stop();
    const doc = document(8000, 6);
    await b.role.printJob(ORG, job({ jobId: 'c-before', printer: 'front', inline: Buffer.from(doc) }), ctx());
    const out = await b.role.cancelJob(ORG, pb.CancelJob.create({ jobId: 'c-before' }));
    expect(out).toMatchObject({ code: 1, reason: 'job_cancelled' });
    await b.waitState('c-before', 'cancelled');
    await b.role.spool.settled();
    await assertShredded(b, 'c-before', doc);
    await b.printer.start();
    await new Promise((r) => setTimeout(r, 500));
    expect(b.printer.jobs).toEqual([]);
  });

  it('cancel during sending (slow printer): the transfer stops, the job is cancelled and shredded', async () => {
    b = await p1Bench();
    b.printer.faults.slowBps = 20_000;
    const doc = document(200_000, 8);
    await b.role.printJob(ORG, job({ jobId: 'c-during', printer: 'front', inline: Buffer.from(doc) }), ctx());
    await waitUntil(() => (b?.printer.jobs[0]?.bytes ?? 0) > 1000, 20_000, 'the printer receiving');
    const out = await b.role.cancelJob(ORG, pb.CancelJob.create({ jobId: 'c-during' }));
    expect(out).toMatchObject({ code: 1, reason: 'job_cancelled' });
    await b.waitState('c-during', 'cancelled');
    await b.role.spool.settled();
    expect(b.printer.completed('c-during')).toBe(0);
    await assertShredded(b, 'c-during', doc);
  });

  it('printer offline, then back: the job stays queued, DeviceState says offline, then it prints once', async () => {
    b = await p1Bench();
    await b.printer.stop();
    await waitUntil(() => b?.peripherals.some((p) => p.name === 'printer:front' && !p.online) ?? false, 20_000, 'printer reported offline');
    const doc = document(30_000, 9);
    await b.role.printJob(ORG, job({ jobId: 'off', printer: 'front', inline: Buffer.from(doc) }), ctx());
    await new Promise((r) => setTimeout(r, 600));
    expect((await b.role.spool.store.get(ORG, 'off'))?.state).toBe('ready');
    await b.printer.start();
    await b.waitState('off', 'confirmed', 30_000);
    await b.role.spool.settled();
    expect(await printed(b, 'off')).toEqual([doc]);
    expect(b.peripherals.some((p) => p.name === 'printer:front' && p.online)).toBe(true);
  });

  it('paper out mid-job: uncertain (never re-sent on its own); a signed ReprintJob prints it once', async () => {
    b = await p1Bench();
    b.printer.faults.paperOutAfter = 50_000;
    const doc = document(150_000, 10);
    await b.role.printJob(ORG, job({ jobId: 'paper', printer: 'front', inline: Buffer.from(doc) }), ctx());
    await b.waitState('paper', 'uncertain', 30_000);
    await new Promise((r) => setTimeout(r, 800));
    expect(b.printer.jobs.filter((j) => j.name === 'paper')).toHaveLength(1);
    expect(b.printer.completed('paper')).toBe(0);
    // Paper loaded again; the cloud decides to reprint.
    b.printer.faults.paperOutAfter = 0;
    b.printer.paperOut = false;
    expect(await b.role.reprintJob(ORG, pb.ReprintJob.create({ jobId: 'paper' }))).toMatchObject({ code: 1, reason: 'job_reprint' });
    await b.waitState('paper', 'confirmed', 30_000);
    await b.role.spool.settled();
    expect(await printed(b, 'paper')).toEqual([doc]);
    await assertShredded(b, 'paper', doc);
  });

  it('ReprintJob for a job that is not uncertain is refused', async () => {
    b = await p1Bench();
    await b.printer.stop();
    await b.role.printJob(ORG, job({ jobId: 'rp', printer: 'front', inline: Buffer.alloc(100, 1) }), ctx());
    expect(await b.role.reprintJob(ORG, pb.ReprintJob.create({ jobId: 'rp' }))).toMatchObject({ code: 10, reason: 'not_uncertain' });
    expect(await b.role.reprintJob(ORG, pb.ReprintJob.create({ jobId: 'nobody' }))).toMatchObject({ code: 10, reason: 'unknown_job' });
  });

  it('a printer that never confirms: the job ends uncertain and is held (document still encrypted), a CancelJob shreds it', async () => {
    b = await p1Bench();
    b.printer.faults.neverConfirm = true;
    const doc = document(10_000, 11);
    await b.role.printJob(ORG, job({ jobId: 'nc', printer: 'front', inline: Buffer.from(doc) }), ctx());
    await b.waitState('nc', 'uncertain', 30_000);
    expect(await b.spoolFiles()).toHaveLength(1);
    expect(b.printer.jobs).toHaveLength(1);
    await b.role.cancelJob(ORG, pb.CancelJob.create({ jobId: 'nc' }));
    await b.waitState('nc', 'cancelled');
    await b.role.spool.settled();
    await assertShredded(b, 'nc', doc);
    expect(b.printer.jobs).toHaveLength(1);
  });

  it('print-after: held while the clock is unsynchronised, printed once it is synchronised', async () => {
    b = await p1Bench();
    b.clock.synced = false;
    await b.role.printJob(ORG, job({ jobId: 'pa', printer: 'front', inline: Buffer.alloc(500, 2), printAfterMs: Date.now() - 1000 }), ctx());
    await new Promise((r) => setTimeout(r, 800));
    expect(b.printer.jobs).toEqual([]);
    b.clock.synced = true;
    await b.waitState('pa', 'confirmed', 30_000);
  });

  it("org withdrawal shreds the org's queued jobs", async () => {
    b = await p1Bench();
    await b.printer.stop();
    const doc = document(9000, 12);
    await b.role.printJob(ORG, job({ jobId: 'w1', printer: 'front', inline: Buffer.from(doc) }), ctx());
    await b.role.printJob('org-b', job({ jobId: 'w2', printer: 'front', inline: Buffer.alloc(100, 3) }), ctx());
    const r = await b.role.eraseOrg(ORG);
    expect(r).toMatchObject({ ok: true, counts: { printJobs: 1 } });
    expect(await b.role.spool.store.get(ORG, 'w1')).toBeUndefined();
    expect((await b.role.spool.store.get('org-b', 'w2'))?.state).toBe('ready');
    expect(await b.spoolFiles()).toHaveLength(1);
  });

  it("the spool's withdrawal participant works with the role stopped (a purge resumed before it starts), and a call after a failed one still scans for what that one found", async () => {
    b = await p1Bench();
    await b.printer.stop();
    const doc = document(9000, 13);
    await b.role.printJob(ORG, job({ jobId: 'o1', printer: 'front', inline: Buffer.from(doc) }), ctx());
    await b.role.printJob(ORG, job({ jobId: 'o2', printer: 'front', inline: Buffer.alloc(3000, 5) }), ctx());
    await b.role.printJob('org-b', job({ jobId: 'o3', printer: 'front', inline: Buffer.alloc(100, 3) }), ctx());
    const files = readdirSync(b.spoolDir);
    expect(files).toHaveLength(3);
    await b.role.stop();
    // Broken cleanup: a stray copy of every spool file, under names no row has.
    for (const [i, f] of files.entries()) copyFileSync(join(b.spoolDir, f), join(b.spoolDir, `${'b'.repeat(23)}${i}.spool`));
    const p = spoolErasureParticipant({ dataDir: b.sb.dataDir });
    const first = await p.eraseOrg(ORG);
    expect(first).toMatchObject({ ok: false, counts: { printJobs: 2, printKeysDestroyed: 2, printFilesRemoved: 2 } });
    expect(first.counts.printScanHits).toBeGreaterThan(0);
    // The retry finds no rows left, but scans for the first call's samples: still not ok while the copies are there.
    const again = await p.eraseOrg(ORG);
    expect(again.ok).toBe(false);
    expect(again.counts).toMatchObject({ printJobs: 2, printKeysDestroyed: 2 });
    for (const f of readdirSync(b.spoolDir)) if (f.startsWith('bbb')) rmSync(join(b.spoolDir, f));
    const done = await p.eraseOrg(ORG);
    expect(done).toMatchObject({ ok: true, counts: { printJobs: 2, printKeysDestroyed: 2, printFilesRemoved: 2, printScanHits: 0 } });
    expect(done.counts.printScanHitsEarlier).toBeGreaterThan(0);
    // The other org's job is untouched; a spool never created holds nothing.
    expect(readdirSync(b.spoolDir)).toHaveLength(1);
    expect(await spoolErasureParticipant({ dataDir: join(b.sb.dataDir, 'none') }).eraseOrg(ORG)).toEqual({ ok: true, counts: { printJobs: 0 } });
  });
});
