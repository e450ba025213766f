/**
 * P1 end to end, as in the field: a real `tallybox run` (dist binary, device.kind p1) prints to a
 * `tallybox-sim printer` child over raw 9100 + PJL; the cloud emulator sends signed PrintJob /
 * CancelJob / ReprintJob over MQTT (embedded aedes) and reads the signed PrintJobStatus results and
 * erasure receipts, verified against the device's identity key. After every job that ends: the
 * printer got the document byte for byte exactly once (or not at all), the spool directory and every
 * database file hold no fragment of it (sampled before the job), the job's row and key are gone.
 * DeviceState shows the printer's state (offline, stopped with its reasons, back online).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pb, PrintJobState, ResultCode, type CommandResult, type DeviceState } from '../../src/proto/index.js';
import { verifyCommandResult } from '../../src/link/commands/result.js';
import { printJobBody } from '../../simulators/cloud/print-jobs.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { waitUntil } from '../helpers/ports.js';
import { DEVICE, document, fragmentHits, ORG, startedP1World, type P1World } from './e2e/world.js';

let w: P1World;
beforeAll(async () => {
  w = await startedP1World();
}, 180_000);
afterAll(async () => {
  await w?.cleanup();
}, 60_000);

const LONG = 120_000;

/** Send a print command until the agent's print role answers (it refuses while it starts). */
async function command(orgId: string, body: Parameters<P1World['cloud']['send']>[1]): Promise<CommandResult> {
  for (let i = 0; ; i++) {
    const counter = await w.cloud.send(orgId, body);
    const r = await w.result(counter);
    if (r.reason !== 'print_role_not_started' || i > 50) return r;
    await new Promise((res) => setTimeout(res, 200));
  }
}

/** The job ended: printed `times` times byte for byte, no fragment on disk, row and key gone, receipt verified. */
async function assertEnded(jobId: string, doc: Buffer, end: string, times: number): Promise<void> {
  await w.waitJob(jobId, end, LONG);
  const v = w.cloud.job(jobId)!;
  expect(v.receipt, v.receiptError).toMatchObject({ kind: 'print_job', orgId: ORG, requestRef: `print:${jobId}`, ok: true, verification: 'verified' });
  expect(v.receipt!.scan.hits).toBe(0);
  expect(JSON.stringify(v.receipt)).not.toContain(doc.subarray(0, 16).toString('base64'));
  const printed = w.printer.printed(jobId);
  expect(printed.length).toBe(times);
  for (const p of printed) expect(p.equals(doc)).toBe(true);
  // The status and receipt are queued before the row goes (a crash between them re-runs the shred): the row follows.
  await waitUntil(async () => (await w.jobRow(jobId)) === undefined, LONG, `row of ${jobId} deleted`);
  expect(w.spoolFiles()).toEqual([]);
  expect(await fragmentHits(w, [doc])).toBe(0);
  expect(w.cloud.book.resultsBad).toBe(0);
  expect(w.cloud.book.receiptsBad).toBe(0);
}

function printerSummary(s: DeviceState | undefined) {
  return s?.printers.find((p) => p.name === 'front');
}
function printerPeripheral(s: DeviceState | undefined) {
  return s?.peripherals.find((p) => p.name === 'printer:front');
}

describe('P1 end to end: tallybox run + tallybox-sim printer over MQTT', () => {
  it('inline job: accepted, printed once byte for byte, shredded with a verified receipt', async () => {
    const doc = document(30_000);
    const r = await command(ORG, printJobBody({ jobId: 'e2e-inline', printer: 'front', inline: doc }));
    expect({ code: r.code, reason: r.reason }).toEqual({ code: ResultCode.RESULT_CODE_OK, reason: 'job_queued' });
    await assertEnded('e2e-inline', doc, 'confirmed', 1);
    // DeviceState carries the printer: online, idle, nothing waiting.
    await waitUntil(() => printerSummary(w.state())?.state === 'idle' && printerSummary(w.state())?.jobsWaiting === 0, LONG, 'printer idle in DeviceState');
    expect(printerPeripheral(w.state())?.online).toBe(true);
  }, 180_000);

  it('fetched job over HTTPS (hash ok): fetched once, printed once, shredded', async () => {
    const doc = document(300_000);
    const served = w.docs.add('fetch-ok', doc);
    const r = await command(ORG, printJobBody({ jobId: 'e2e-fetch', printer: 'front', fetch: served }));
    expect(r.reason).toBe('job_queued');
    await assertEnded('e2e-fetch', doc, 'confirmed', 1);
    expect(w.docs.requests.get('fetch-ok')).toBe(1);
  }, 180_000);

  it("a job's states reach the cloud in order (queued → … → sending → … → confirmed, at most one a second), signed, without content", async () => {
    // Slowed so that sending lasts seconds: intermediate states are rate-limited to one per second per job.
    await w.printer.faults({ slowBytesPerSec: 100_000 });
    try {
      const doc = document(300_000);
      const served = w.docs.add('states', doc);
      const r = await command(ORG, printJobBody({ jobId: 'e2e-states', printer: 'front', fetch: served }));
      expect({ reason: r.reason, state: r.printJobStatus?.state }).toEqual({ reason: 'job_queued', state: PrintJobState.PRINT_JOB_STATE_QUEUED });
      await assertEnded('e2e-states', doc, 'confirmed', 1);
      const all = w.sink.rawResults().filter((x) => x.result.printJobStatus?.jobId === 'e2e-states');
      // The answer (queued, the job's first status) and then, as they arrived, its published states.
      const answer = all.filter((x) => x.result.reason === 'job_queued');
      expect(answer.length).toBe(1);
      const seen = [...answer, ...all.filter((x) => x.result.reason === 'print_job_status')];
      const names = seen.map((x) => (PrintJobState[x.result.printJobStatus?.state ?? 0] ?? '').replace('PRINT_JOB_STATE_', '').toLowerCase());
      const order = ['queued', 'fetching', 'ready', 'sending', 'sent', 'confirmed'];
      // In order (each state's place never goes back), by the status sequence numbers too; every one signed by the device.
      expect(names[0], names.join(' → ')).toBe('queued');
      expect(names.at(-1), names.join(' → ')).toBe('confirmed');
      // Sending lasts seconds here, so it is published; a shorter state may be folded into the next (rate limit).
      expect(names, names.join(' → ')).toContain('sending');
      for (let i = 1; i < names.length; i++) expect(order.indexOf(names[i]!), names.join(' → ')).toBeGreaterThan(order.indexOf(names[i - 1]!));
      const seqs = seen.map((x) => Number(x.result.printJobStatus!.seq ?? 0));
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]!).toBeGreaterThan(seqs[i - 1]!);
      expect(seen.every((x) => verifyCommandResult(x.raw, w.deviceKey))).toBe(true);
      // Nothing of the document or its URL in any status.
      for (const x of seen) {
        const text = JSON.stringify(x.result.printJobStatus);
        expect(text).not.toContain(served.url);
        expect(Buffer.from(x.raw).includes(doc.subarray(1000, 1032))).toBe(false);
      }
    } finally {
      await w.printer.clear();
    }
  }, 180_000);

  it('fetched job whose bytes do not match the hash: rejected (failed, FETCH_HASH_MISMATCH), nothing spooled or printed', async () => {
    const doc = document(100_000);
    const served = w.docs.add('fetch-bad', doc);
    const wrong = { ...served, sha256: Buffer.from(served.sha256).fill(7, 0, 4) };
    const before = w.printer.jobs().length;
    const r = await command(ORG, printJobBody({ jobId: 'e2e-badhash', printer: 'front', fetch: wrong }));
    expect(r.reason).toBe('job_queued');
    await assertEnded('e2e-badhash', doc, 'failed', 0);
    expect(w.cloud.job('e2e-badhash')!.errorCode).toBe('FETCH_HASH_MISMATCH');
    expect(w.printer.jobs().length).toBe(before);
  }, 180_000);

  it('cancelled before sending (held by a print-after time): cancelled, never printed, shredded', async () => {
    const doc = document(20_000);
    const r = await command(ORG, printJobBody({ jobId: 'e2e-cancel-held', printer: 'front', inline: doc, printAfterMs: Date.now() + 3_600_000 }));
    expect(r.reason).toBe('job_queued');
    await w.waitJob('e2e-cancel-held', 'ready');
    expect((await w.jobRow('e2e-cancel-held'))?.hasKey).toBe(true);
    const c = await command(ORG, { cancelJob: { jobId: 'e2e-cancel-held' } });
    expect({ code: c.code, reason: c.reason }).toEqual({ code: ResultCode.RESULT_CODE_OK, reason: 'job_cancelled' });
    await assertEnded('e2e-cancel-held', doc, 'cancelled', 0);
  }, 180_000);

  it('cancelled while sending (a slow printer): the transfer stops, the job is cancelled and shredded, not printed whole', async () => {
    await w.printer.faults({ slowBytesPerSec: 20_000 }); // 400 kB: twenty seconds, ample for the CancelJob's round trip on a loaded machine
    try {
      const doc = document(400_000);
      const served = w.docs.add('slow', doc);
      const sending = new Promise<void>((res) => {
        const off = w.agent.onLine((l) => {
          if (l.event === 'p1_job_state' && l.jobId === 'e2e-cancel-sending' && l.to === 'sending') {
            off();
            res();
          }
        });
      });
      expect((await command(ORG, printJobBody({ jobId: 'e2e-cancel-sending', printer: 'front', fetch: served }))).reason).toBe('job_queued');
      await sending;
      await waitUntil(async () => (await w.printer.status()).state === 'processing', LONG, 'printer receiving');
      const c = await command(ORG, { cancelJob: { jobId: 'e2e-cancel-sending' } });
      expect({ code: c.code, reason: c.reason }).toEqual({ code: ResultCode.RESULT_CODE_OK, reason: 'job_cancelled' });
      await assertEnded('e2e-cancel-sending', doc, 'cancelled', 0);
      const got = w.printer.jobs().filter((j) => j.name === 'e2e-cancel-sending');
      expect(got.length).toBe(1);
      expect(got[0]!.bytes).toBeLessThan(doc.length);
    } finally {
      await w.printer.clear();
    }
  }, 180_000);

  it('printer offline, then back: DeviceState shows it offline, the job waits, then prints once', async () => {
    await w.printer.faults({ offline: true });
    await waitUntil(() => printerPeripheral(w.state())?.online === false, LONG, 'printer offline in DeviceState');
    const doc = document(25_000);
    expect((await command(ORG, printJobBody({ jobId: 'e2e-offline', printer: 'front', inline: doc }))).reason).toBe('job_queued');
    await waitUntil(() => printerSummary(w.state())?.state === 'unreachable' && printerSummary(w.state())?.jobsWaiting === 1, LONG, 'printer unreachable with a job waiting');
    expect(w.cloud.job('e2e-offline')?.stateName).toBe('ready');
    expect(w.printer.printed('e2e-offline')).toEqual([]);
    await w.printer.clear();
    await assertEnded('e2e-offline', doc, 'confirmed', 1);
    await waitUntil(() => printerPeripheral(w.state())?.online === true && printerSummary(w.state())?.state === 'idle', LONG, 'printer back in DeviceState');
  }, 180_000);

  it('paper out mid-job: uncertain (held, reason media-empty in DeviceState); paper loaded, a signed ReprintJob prints it once', async () => {
    await w.printer.faults({ paperOutAfterBytes: 50_000 });
    const doc = document(200_000);
    const served = w.docs.add('paper', doc);
    expect((await command(ORG, printJobBody({ jobId: 'e2e-paper', printer: 'front', fetch: served }))).reason).toBe('job_queued');
    await w.waitJob('e2e-paper', 'uncertain', LONG);
    // One DeviceState showing all three (two reads of the newest state could straddle a newer one).
    await waitUntil(
      () => {
        const p = printerSummary(w.state());
        return p?.reasons?.includes('media-empty') === true && p.jobsUncertain === 1 && p.state === 'stopped';
      },
      LONG,
      'stopped, media-empty, one job uncertain in DeviceState',
    );
    expect(await w.jobRow('e2e-paper')).toEqual({ state: 'uncertain', hasKey: true });
    expect(w.printer.printed('e2e-paper').filter((p) => p.equals(doc))).toEqual([]);
    await w.printer.clear();
    await waitUntil(() => printerSummary(w.state())?.state === 'idle', LONG, 'printer idle again in DeviceState');
    // Not re-sent on its own.
    expect(w.cloud.job('e2e-paper')?.stateName).toBe('uncertain');
    // What `uncertain` means: the printer may print the job anyway. When the agent had written the
    // whole document and its EOJ into the socket before the paper-out status reached it (the socket
    // buffers hold all 200 kB; on a loaded machine the status is read late), the printer holds the
    // complete job and, paper loaded, prints it: one full copy before any reprint (a CI failure was
    // exactly this: two copies after the reprint). So wait until the printer has finished with the
    // first attempt (recorded aborted, or completed) and count its copies; the ReprintJob must then
    // add exactly one. The agent itself never re-sent it: one attempt so far.
    const attempts = () => w.printer.jobs().filter((j) => j.name === 'e2e-paper');
    await waitUntil(() => attempts().length === 1 && attempts()[0]!.state !== 'receiving', LONG, 'the printer done with the first attempt');
    const before = w.printer.printed('e2e-paper').filter((p) => p.equals(doc)).length;
    expect(before).toBeLessThanOrEqual(1);
    const r = await command(ORG, { reprintJob: { jobId: 'e2e-paper' } });
    expect({ code: r.code, reason: r.reason }).toEqual({ code: ResultCode.RESULT_CODE_OK, reason: 'job_reprint' });
    await w.waitJob('e2e-paper', 'confirmed', LONG);
    const full = w.printer.printed('e2e-paper').filter((p) => p.equals(doc));
    expect(full.length).toBe(before + 1);
    expect(attempts().length).toBe(2);
    const v = w.cloud.job('e2e-paper')!;
    expect(v.receipt).toMatchObject({ ok: true, verification: 'verified' });
    await waitUntil(async () => (await w.jobRow('e2e-paper')) === undefined, LONG, 'row of e2e-paper deleted');
    expect(w.spoolFiles()).toEqual([]);
    expect(await fragmentHits(w, [doc])).toBe(0);
  }, 240_000);

  it('forged, replayed and misaddressed print commands over MQTT are rejected; nothing is spooled or printed', async () => {
    const doc = document(5000);
    const body = printJobBody({ jobId: 'e2e-forged', printer: 'front', inline: doc });
    const printedBefore = w.printer.jobs().length;
    // Command answers only: a job's later statuses (print_job_status) come in between.
    const answers = () => w.sink.rawResults().filter((x) => x.result.reason !== 'print_job_status');
    const results = () => answers().length;
    const next = async (send: () => Promise<void>) => {
      const n = results();
      await send();
      await waitUntil(() => results() > n, LONG, 'a result');
      return answers()[n]!.result;
    };
    // Forged: another key under the pinned key id; a flipped signature bit; an altered body.
    const forger = new CommandSigner({ keyId: w.signer.keyId, startCounter: w.signer.lastCounter + 1000 });
    expect((await next(() => w.sink.sendCommand(forger, ORG, DEVICE, body).then(() => undefined))).code).toBe(ResultCode.RESULT_CODE_BAD_SIGNATURE);
    const good = w.signer.sign({ deviceId: DEVICE, orgId: ORG, ...body });
    const d = pb.SignedCommand.decode(good);
    const sig = Buffer.from(d.signature);
    sig[3] = (sig[3] ?? 0) ^ 1;
    const flippedSig = Buffer.from(pb.SignedCommand.encode({ body: d.body, signature: sig, keyId: d.keyId }).finish());
    expect((await next(() => w.sink.sendRaw(ORG, DEVICE, flippedSig))).code).toBe(ResultCode.RESULT_CODE_BAD_SIGNATURE);
    const altered = Buffer.from(d.body);
    altered[altered.length - 5] = (altered[altered.length - 5] ?? 0) ^ 1;
    expect((await next(() => w.sink.sendRaw(ORG, DEVICE, Buffer.from(pb.SignedCommand.encode({ body: altered, signature: d.signature, keyId: d.keyId }).finish())))).code).toBe(ResultCode.RESULT_CODE_BAD_SIGNATURE);
    // Misaddressed: signed for another device, published on this device's topic; an org it does not serve.
    const other = w.signer.sign({ deviceId: 'someone-else', orgId: ORG, ...body });
    expect((await next(() => w.sink.sendRaw(ORG, DEVICE, other))).code).toBe(ResultCode.RESULT_CODE_WRONG_DEVICE);
    const notServed = await next(() => w.sink.sendCommand(w.signer, 'org-z', DEVICE, body).then(() => undefined));
    expect({ code: notServed.code, reason: notServed.reason }).toEqual({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'org_not_served' });
    expect(await w.jobRow('e2e-forged')).toBeUndefined();
    // Replayed: a good command prints once; the captured bytes again are REPLAYED and print nothing.
    const captured = w.signer.sign({ deviceId: DEVICE, orgId: ORG, ...printJobBody({ jobId: 'e2e-replayed', printer: 'front', inline: doc }) });
    const first = await next(() => w.sink.sendRaw(ORG, DEVICE, captured));
    expect(first.reason).toBe('job_queued');
    await w.waitJob('e2e-replayed', 'confirmed', LONG);
    expect((await next(() => w.sink.sendRaw(ORG, DEVICE, captured))).code).toBe(ResultCode.RESULT_CODE_REPLAYED);
    // Re-signed with the same job id (a cloud retry): answered with its status, never queued again.
    const again = await command(ORG, printJobBody({ jobId: 'e2e-replayed', printer: 'front', inline: doc }));
    expect(again.reason).toBe('job_known');
    await waitUntil(async () => (await w.printer.status()).state === 'idle', LONG, 'printer idle');
    expect(w.printer.printed('e2e-replayed').length).toBe(1);
    expect(w.printer.printed('e2e-forged')).toEqual([]);
    expect(w.printer.jobs().length).toBe(printedBefore + 1);
    expect(w.spoolFiles()).toEqual([]);
  }, 240_000);
});
