/**
 * Resume checks the SIGKILL suite found (in-process, each broken on purpose): a spooled document
 * that is gone from disk fails its job as P1_SPOOL_CORRUPT (it was taken for the printer going
 * away, ENOENT, and retried for ever); an orphan spool file left by a crash is swept when the
 * spool opens, while a job's own file is kept.
 */
import { readdir, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pb, type PrintJob } from '../../src/proto/index.js';
import { printJobBody } from '../../simulators/cloud/print-jobs.js';
import type { CommandContext } from '../../src/link/commands/index.js';
import { document, p1Bench, type P1Bench } from './helpers/harness.js';

const ORG = 'org-a';
let counter = 0;
const ctx = (): CommandContext => ({ counter: ++counter, nonce: Buffer.alloc(16), issuedAtMs: Date.now(), expiresAtMs: Date.now() + 60_000, keyId: 'cloud-1' });
const job = (spec: Parameters<typeof printJobBody>[0]): PrintJob => pb.PrintJob.fromObject(printJobBody(spec).printJob as Record<string, unknown>);

let b: P1Bench | undefined;
afterEach(async () => {
  await b?.cleanup();
  b = undefined;
});

describe('P1 resume checks', () => {
  it('a spool file gone from disk fails its job as P1_SPOOL_CORRUPT; the printer is not faulted and prints the next job', async () => {
    b = await p1Bench();
    // Held until the file is gone, however slow the machine: a print-after time (already passed) is
    // never compared with an unsynchronised clock; the hold is re-checked once the clock is synced.
    b.clock.synced = false;
    await b.role.printJob(ORG, job({ jobId: 'gone', printer: 'front', inline: document(5000, 3), printAfterMs: Date.now() }), ctx());
    const [file] = await readdir(b.spoolDir);
    await unlink(join(b.spoolDir, file!));
    expect(await b.role.spool.store.get(ORG, 'gone')).toMatchObject({ state: 'ready', file });
    b.clock.synced = true;
    await b.waitState('gone', 'failed');
    expect(b.book.jobs.get('gone')).toMatchObject({ stateName: 'failed', errorCode: 'P1_SPOOL_CORRUPT' });
    expect(b.role.printers.get('front')!.supervisor.usable).toBe(true);
    const doc = document(3000, 4);
    await b.role.printJob(ORG, job({ jobId: 'next', printer: 'front', inline: doc }), ctx());
    await b.waitState('next', 'confirmed');
    expect(b.printer.completed('next')).toBe(1);
  });

  it('an orphan spool file (no row) is swept when the spool opens; a held job keeps its file', async () => {
    b = await p1Bench();
    await b.role.printJob(ORG, job({ jobId: 'held', printer: 'front', inline: document(4000, 5), printAfterMs: Date.now() + 3_600_000 }), ctx());
    await writeFile(join(b.spoolDir, 'deadbeef.spool'), Buffer.alloc(100, 1), { mode: 0o600 });
    expect(await readdir(b.spoolDir)).toHaveLength(2);
    await b.restart();
    const left = await readdir(b.spoolDir);
    expect(left).toHaveLength(1);
    expect(left).not.toContain('deadbeef.spool');
    expect((await b.role.spool.store.get(ORG, 'held'))?.file).toBe(left[0]);
  });
});
