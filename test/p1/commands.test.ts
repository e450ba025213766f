/**
 * Print commands through the real signed-command intake (the command
 * verifier's test bench: real SQLite state, the cloud emulator's signer, a
 * device identity) into a real P1 role: a good PrintJob prints once and its
 * result carries the job's status; a forged, replayed, misaddressed or
 * not-served one is rejected before any handler runs and nothing is spooled.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { pb, PrintJobState, ResultCode } from '../../src/proto/index.js';
import { cancelJobBody, printJobBody } from '../../simulators/cloud/print-jobs.js';
import { Reason } from '../../src/link/commands/index.js';
import { bench, CMD_TOPIC, DEVICE, ORG, type Bench } from '../commands/helpers.js';
import { document, p1Bench, printed, type P1Bench } from './helpers/harness.js';

let p: P1Bench | undefined;
let c: Bench | undefined;
afterEach(async () => {
  await c?.cleanup();
  await p?.cleanup();
  c = undefined;
  p = undefined;
});

async function setup(extra: Parameters<typeof bench>[0] = {}): Promise<{ p: P1Bench; c: Bench }> {
  p = await p1Bench();
  const role = p.role;
  c = await bench({ orgPolicy: { serves: (o) => o === ORG, holds: (o) => o === ORG, operatorOrgId: ORG }, ...extra });
  Object.assign(c.handlers, { printJob: role.printJob.bind(role), cancelJob: role.cancelJob.bind(role), reprintJob: role.reprintJob.bind(role) });
  return { p, c };
}

function flip(bytes: Uint8Array, i: number): Buffer {
  const out = Buffer.from(bytes);
  out[i] = (out[i] ?? 0) ^ 1;
  return out;
}

describe('print commands through the signed-command intake', () => {
  it('a signed PrintJob is accepted, its result carries the job status, it prints once; its replay is REPLAYED and prints nothing', async () => {
    const { p, c } = await setup();
    const doc = document(6000, 21);
    const cmd = c.cmd(printJobBody({ jobId: 'sig-1', printer: 'front', inline: doc }));
    // A copy: once spooled, the role zeroes the document inside the received packet (the only copy left is encrypted).
    const r = await c.intake.handle(CMD_TOPIC, Buffer.from(cmd));
    expect(r).toMatchObject({ code: ResultCode.RESULT_CODE_OK, reason: 'job_queued', printJobStatus: { jobId: 'sig-1' } });
    // An idle printer starts it straight from the command (sending); one still being probed queues it (ready).
    expect([PrintJobState.PRINT_JOB_STATE_READY, PrintJobState.PRINT_JOB_STATE_SENDING]).toContain(r.printJobStatus?.state);
    await p.waitState('sig-1', 'confirmed');
    const again = await c.intake.handle(CMD_TOPIC, cmd);
    expect(again).toMatchObject({ code: ResultCode.RESULT_CODE_REPLAYED, reason: Reason.nonceSeen });
    await p.role.spool.settled();
    expect(await printed(p, 'sig-1')).toEqual([doc]);
    // The same job re-signed (a new nonce and counter): answered with its status, not printed again.
    const resent = await c.intake.handle(CMD_TOPIC, c.cmd(printJobBody({ jobId: 'sig-1', printer: 'front', inline: doc })));
    expect(resent).toMatchObject({ code: ResultCode.RESULT_CODE_OK, reason: 'job_known', printJobStatus: { state: PrintJobState.PRINT_JOB_STATE_CONFIRMED } });
    await p.role.spool.settled();
    expect(p.printer.completed('sig-1')).toBe(1);
  });

  it('forged (signature bit flipped, body altered), wrong device, org not served: rejected, no handler, nothing spooled', async () => {
    const { p, c } = await setup();
    const body = printJobBody({ jobId: 'forged', printer: 'front', inline: Buffer.alloc(100, 1) });
    const good = c.cmd(body);
    const d = pb.SignedCommand.decode(good);
    const badSig = Buffer.from(pb.SignedCommand.encode({ body: d.body, signature: flip(d.signature, 5), keyId: d.keyId }).finish());
    const badBody = Buffer.from(pb.SignedCommand.encode({ body: flip(d.body, d.body.length - 3), signature: d.signature, keyId: d.keyId }).finish());
    expect(await c.intake.handle(CMD_TOPIC, badSig)).toMatchObject({ code: ResultCode.RESULT_CODE_BAD_SIGNATURE, reason: Reason.signatureInvalid });
    expect(await c.intake.handle(CMD_TOPIC, badBody)).toMatchObject({ code: ResultCode.RESULT_CODE_BAD_SIGNATURE, reason: Reason.signatureInvalid });
    const otherDevice = c.signer.sign({ deviceId: 'someone-else', orgId: ORG, ...body });
    expect(await c.intake.handle(CMD_TOPIC, otherDevice)).toMatchObject({ code: ResultCode.RESULT_CODE_WRONG_DEVICE });
    const otherOrg = c.signer.sign({ deviceId: DEVICE, orgId: 'org-z', ...body });
    expect(await c.intake.handle(`tallybox/v1/org-z/${DEVICE}/cmd`, otherOrg)).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason: Reason.orgNotServed });
    const cancelOther = c.signer.sign({ deviceId: DEVICE, orgId: 'org-z', ...cancelJobBody('forged') });
    expect(await c.intake.handle(`tallybox/v1/org-z/${DEVICE}/cmd`, cancelOther)).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason: Reason.orgNotServed });
    expect(c.handlers.calls).toEqual([]);
    expect(await p.role.spool.store.all()).toEqual([]);
    expect(await p.spoolFiles()).toEqual([]);
    expect(p.printer.jobs).toEqual([]);
  });

  it('a device that is not a print box answers UNKNOWN_COMMAND', async () => {
    c = await bench();
    const r = await c.intake.handle(CMD_TOPIC, c.cmd(printJobBody({ jobId: 'np', printer: 'front', inline: Buffer.alloc(10) })));
    expect(r).toMatchObject({ code: ResultCode.RESULT_CODE_UNKNOWN_COMMAND, reason: Reason.noCommand });
  });
});
