/**
 * The P1 role against the real raw 9100 transport with PJL (openPrinter) and
 * the printer simulator's raw server and job recorder: an inline and a
 * fetched job are each recorded exactly once, byte for byte, and confirmed by
 * the printer's own PJL USTATUS JOB END.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openPrinter } from '../../firmware-bridge/printer/index.js';
import { SimPrinterContext } from '../../simulators/printer/context.js';
import { DirJobRecorder } from '../../simulators/printer/recorder.js';
import { startRawServer } from '../../simulators/printer/raw-server.js';
import type { StartedServer } from '../../simulators/printer/types.js';
import { pb } from '../../src/proto/index.js';
import { printJobBody } from '../../simulators/cloud/print-jobs.js';
import { document, p1Bench, type P1Bench } from './helpers/harness.js';

let b: P1Bench | undefined;
let srv: StartedServer | undefined;
let dir: string | undefined;
afterEach(async () => {
  await b?.cleanup();
  await srv?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  b = undefined;
  srv = undefined;
  dir = undefined;
});

describe('P1 with the raw 9100 + PJL transport and the printer simulator', () => {
  it('inline and fetched jobs: recorded once each, byte for byte, confirmed by PJL', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tbx-p1-sim-'));
    const recorder = new DirJobRecorder(join(dir, 'out'));
    const ctx = new SimPrinterContext(recorder);
    srv = await startRawServer(ctx, { host: '127.0.0.1', port: 0 });
    const url = `raw://127.0.0.1:${srv.port}?pjl=1`;
    b = await p1Bench({ config: { printers: { front: { url } } }, openPrinter: (u) => openPrinter(u) });
    const inline = document(40_000, 31);
    const fetched = document(250_000, 32);
    const served = b.docs.add('sim-f', fetched);
    let n = 0;
    const ctxOf = () => ({ counter: ++n, nonce: Buffer.alloc(16), issuedAtMs: Date.now(), expiresAtMs: Date.now() + 60_000, keyId: 'k' });
    await b.role.printJob('org-a', pb.PrintJob.fromObject(printJobBody({ jobId: 'sim-i', printer: 'front', inline: Buffer.from(inline) }).printJob as Record<string, unknown>), ctxOf());
    await b.role.printJob('org-a', pb.PrintJob.fromObject(printJobBody({ jobId: 'sim-f', printer: 'front', fetch: served }).printJob as Record<string, unknown>), ctxOf());
    await b.waitState('sim-i', 'confirmed', 60_000);
    await b.waitState('sim-f', 'confirmed', 60_000);
    await b.role.spool.settled();
    const jobs = recorder.jobs().filter((j) => j.state === 'completed');
    expect(jobs.map((j) => j.name).sort()).toEqual(['sim-f', 'sim-i']);
    for (const j of jobs) {
      const got = await readFile(j.file.startsWith('/') ? j.file : join(recorder.dir, j.file));
      expect(got.equals(j.name === 'sim-i' ? inline : fetched)).toBe(true);
    }
    expect(await b.spoolFiles()).toEqual([]);
  });
});
