/**
 * A job's intermediate states as the cloud gets them (PrintJobStatus results under the PrintJob's
 * counter): each state change is published, at most one per STATUS_MIN_INTERVAL_MS per job (the
 * newest state then), so a printer that keeps refusing (the queue flapping ready ↔ sending on every
 * retry) does not flood the result queue; the end state follows at once with its receipt.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Printer, PrintSubmission } from '../../firmware-bridge/devices.js';
import { TallyboxError } from '../../src/util/errors.js';
import { TestPrinter } from './helpers/tcp-printer.js';
import { pb, PrintJobState, type PrintJob } from '../../src/proto/index.js';
import { STATUS_MIN_INTERVAL_MS } from '../../src/roles/p1/spool.js';
import { printJobBody } from '../../simulators/cloud/print-jobs.js';
import type { CommandContext } from '../../src/link/commands/index.js';
import { sleep, waitUntil } from '../helpers/ports.js';
import { document, p1Bench, type P1Bench } from './helpers/harness.js';

const ORG = 'org-a';
let counter = 0;
const ctx = (): CommandContext => ({ counter: ++counter, nonce: Buffer.alloc(16), issuedAtMs: Date.now(), expiresAtMs: Date.now() + 60_000, keyId: 'cloud-1' });
const job = (spec: Parameters<typeof printJobBody>[0]): PrintJob => pb.PrintJob.fromObject(printJobBody(spec).printJob as Record<string, unknown>);

let b: P1Bench | undefined;
const refuse = { on: false };

/** The test printer, except that while `refuse.on` it turns every job away before taking it (busy); its probe says idle. */
class RefusingPrinter implements Printer {
  readonly protocol = 'raw9100' as const;
  readonly description = 'refusing test printer';
  #inner: TestPrinter | undefined;
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
  async send(job: PrintSubmission) {
    if (refuse.on) throw new TallyboxError('PRINTER_BUSY', 'PRINTER_BUSY: printing another job');
    return this.inner.send(job);
  }
}
afterEach(async () => {
  await b?.cleanup();
  b = undefined;
});

describe('P1 job status publishing', () => {
  it('a printer refusing every attempt: many ready ↔ sending changes, at most one status a second; then printed, confirmed at once', async () => {
    b = await p1Bench({ openPrinter: () => new RefusingPrinter() });
    refuse.on = true;
    const changes: string[] = [];
    b.role.spool.on('state', (id, st) => id === 'flap' && changes.push(st));
    const t0 = performance.now();
    await b.role.printJob(ORG, job({ jobId: 'flap', printer: 'front', inline: document(8000, 5) }), ctx());
    await waitUntil(() => changes.filter((c) => c === 'sending').length >= 6, 60_000, 'six refused attempts');
    await sleep(STATUS_MIN_INTERVAL_MS + 200); // the last pending status goes out
    const elapsed = performance.now() - t0;
    const published = () => b!.results.filter((r) => r.printJobStatus?.jobId === 'flap');
    expect(published().length).toBeGreaterThan(0);
    expect(published().length).toBeLessThanOrEqual(Math.ceil(elapsed / STATUS_MIN_INTERVAL_MS) + 1);
    expect(published().length).toBeLessThan(changes.length);
    for (const r of published()) expect([PrintJobState.PRINT_JOB_STATE_READY, PrintJobState.PRINT_JOB_STATE_SENDING]).toContain(r.printJobStatus?.state);
    const seqs = published().map((r) => Number(r.printJobStatus?.seq ?? 0));
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
    refuse.on = false;
    await b.waitState('flap', 'confirmed', 60_000);
    expect(published().at(-1)?.receipt?.length).toBeGreaterThan(0);
    // Nothing but the job's id, state, counts and error code.
    for (const r of published()) expect(Object.keys(r.printJobStatus ?? {}).every((k) => ['jobId', 'state', 'bytes', 'pages', 'errorCode', 'seq', 'printerReasons'].includes(k))).toBe(true);
  }, 120_000);
});
