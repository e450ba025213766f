/**
 * Every rejection path of the command intake, one test each. Each test starts
 * from a device that has already accepted one command, sends one bad command,
 * and checks: the result code and reason, the handler was NOT called, the
 * persisted counter, nonces and journal did not move, the (signed) result was
 * published, and the rejection was logged with code, reason and counter only.
 */
import { generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { Reason, verifyCommandResult } from '../../src/link/commands/index.js';
import { topic } from '../../src/link/topics.js';
import { pb, ResultCode, type CommandResultProps } from '../../src/proto/index.js';
import { bench, CMD_TOPIC, DEVICE, ORG, type Bench } from './helpers.js';

let b: Bench;
let baseline: { lastCounter: number; nonces: number; journal: number };
/** What the checks compare with from here: the persisted state now, nothing recorded yet. */
async function rebase(): Promise<void> {
  b.forget();
  baseline = await b.state();
}

/**
 * The suite runs twice: as the intake was (every org served, no policy), and as the
 * agent runs it now (a served-organisations policy and the default rejection rate limit).
 */
const MODES = [
  { name: 'intake without an org policy', extra: {} },
  { name: 'intake with the served-organisations policy', extra: { orgPolicy: { serves: (o: string) => o === ORG || o === 'org-b', holds: (o: string) => o === ORG || o === 'org-b', operatorOrgId: ORG } } },
] as const;
let mode: (typeof MODES)[number] = MODES[0];

beforeEach(async () => {
  b = await bench(mode.extra);
  expect(b.intake['opts'].orgPolicy === undefined).toBe(mode === MODES[0]);
  const first = await b.intake.handle(CMD_TOPIC, b.cmd());
  expect(first.code).toBe(ResultCode.RESULT_CODE_OK);
  await rebase();
  expect(baseline.lastCounter).toBeGreaterThan(0);
});
afterEach(() => b.cleanup());

/** Re-encode a SignedCommand after changing parts of it. */
function reenvelope(bytes: Uint8Array, change: (m: { body: Uint8Array; signature: Uint8Array; keyId: string }) => void): Buffer {
  const d = pb.SignedCommand.decode(bytes);
  const m = { body: Uint8Array.from(d.body), signature: Uint8Array.from(d.signature), keyId: d.keyId };
  change(m);
  return Buffer.from(pb.SignedCommand.encode(m).finish());
}

function flip(bytes: Uint8Array, i: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  out[i] = (out[i] ?? 0) ^ 0x01;
  return out;
}

/** What every rejection must show. */
async function expectRejected(result: CommandResultProps, code: ResultCode, reason: string, opts: { counterKnown?: boolean } = {}): Promise<void> {
  expect({ code: pb.ResultCode[result.code ?? 0], reason: result.reason }).toEqual({ code: pb.ResultCode[code], reason });
  expect(b.handlers.calls).toEqual([]);
  expect(await b.state()).toEqual(baseline);
  expect(await b.intake.lastCounter()).toBe(baseline.lastCounter);
  if (!opts.counterKnown) expect(result.counter ?? 0).toBe(0);
  expect(result.deviceId).toBe(DEVICE);
  // Published, and signed with the device identity key.
  expect(b.published).toHaveLength(1);
  expect(b.published[0]!.result).toBe(result);
  expect(verifyCommandResult(result, b.identity.publicKey)).toBe(true);
  // Logged: code, reason, counter; nothing else about the command.
  const rej = b.logs.filter((l) => l.event === 'command_rejected');
  expect(rej).toHaveLength(1);
  expect(rej[0]).toMatchObject({ code: pb.ResultCode[code], reason, counter: result.counter ?? 0 });
  expect(Object.keys(rej[0]!).sort()).toEqual(['code', 'counter', 'event', 'level', 'msg', 'reason']);
  expect(JSON.stringify(b.logs)).not.toContain('subj-1');
}

for (const m of MODES) {
  describe(m.name, () => {
    // Entering the suite (before the file-level beforeEach of its first test).
    beforeAll(() => {
      mode = m;
    });
    describe('size and shape', () => {
      it('oversized payload (garbage) → TOO_LARGE payload_too_large', async () => {
        const r = await b.intake.handle(CMD_TOPIC, randomBytes(64 * 1024 + 1));
        await expectRejected(r, ResultCode.RESULT_CODE_TOO_LARGE, Reason.payloadTooLarge);
      });

      it('oversized payload (validly signed command) → TOO_LARGE, checked before anything else', async () => {
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ ping: { note: 'x'.repeat(70_000) } }));
        await expectRejected(r, ResultCode.RESULT_CODE_TOO_LARGE, Reason.payloadTooLarge);
      });

      it('malformed protobuf → MALFORMED decode_failed', async () => {
        const r = await b.intake.handle(CMD_TOPIC, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01]));
        await expectRejected(r, ResultCode.RESULT_CODE_MALFORMED, Reason.decodeFailed);
      });

      it('empty payload → MALFORMED missing_body', async () => {
        const r = await b.intake.handle(CMD_TOPIC, new Uint8Array(0));
        await expectRejected(r, ResultCode.RESULT_CODE_MALFORMED, Reason.missingBody);
      });

      it('missing signature → MALFORMED missing_signature', async () => {
        const r = await b.intake.handle(
          CMD_TOPIC,
          reenvelope(b.cmd(), (m) => (m.signature = new Uint8Array(0))),
        );
        await expectRejected(r, ResultCode.RESULT_CODE_MALFORMED, Reason.missingSignature);
      });

      it('signature not 64 bytes → BAD_SIGNATURE signature_length', async () => {
        const r = await b.intake.handle(
          CMD_TOPIC,
          reenvelope(b.cmd(), (m) => (m.signature = m.signature.subarray(0, 63))),
        );
        await expectRejected(r, ResultCode.RESULT_CODE_BAD_SIGNATURE, Reason.signatureLength);
      });

      it('correctly signed body that is not a CommandBody → MALFORMED body_decode_failed', async () => {
        const r = await b.intake.handle(CMD_TOPIC, b.signer.signBytes(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f])));
        await expectRejected(r, ResultCode.RESULT_CODE_MALFORMED, Reason.bodyDecodeFailed);
      });
    });

    describe('signature', () => {
      it('forged signature (one bit flipped) → BAD_SIGNATURE signature_invalid', async () => {
        const r = await b.intake.handle(
          CMD_TOPIC,
          reenvelope(b.cmd(), (m) => (m.signature = flip(m.signature, 17))),
        );
        await expectRejected(r, ResultCode.RESULT_CODE_BAD_SIGNATURE, Reason.signatureInvalid);
      });

      it('body changed after signing → BAD_SIGNATURE signature_invalid', async () => {
        const good = b.cmd({ subjectErase: { subjectId: 'subj-1' } });
        const tampered = reenvelope(good, (m) => {
          const body = pb.CommandBody.decode(m.body);
          body.subjectErase = { subjectId: 'subj-2' };
          m.body = pb.CommandBody.encode(body).finish();
        });
        const r = await b.intake.handle(CMD_TOPIC, tampered);
        await expectRejected(r, ResultCode.RESULT_CODE_BAD_SIGNATURE, Reason.signatureInvalid);
      });

      it('signed by an untrusted key that claims the pinned key id → BAD_SIGNATURE signature_invalid', async () => {
        const rogue = new CommandSigner({ keyId: b.signer.keyId, startCounter: baseline.lastCounter + 1000 });
        const r = await b.intake.handle(CMD_TOPIC, rogue.sign({ deviceId: DEVICE, orgId: ORG, orgWithdraw: { reason: 'closed' } }));
        await expectRejected(r, ResultCode.RESULT_CODE_BAD_SIGNATURE, Reason.signatureInvalid);
      });

      it('signed by a key id that is not pinned → BAD_SIGNATURE unknown_key_id', async () => {
        const rogue = new CommandSigner({ keyId: 'rogue-1', startCounter: baseline.lastCounter + 1000 });
        const r = await b.intake.handle(CMD_TOPIC, rogue.sign({ deviceId: DEVICE, orgId: ORG, orgWithdraw: { reason: 'closed' } }));
        await expectRejected(r, ResultCode.RESULT_CODE_BAD_SIGNATURE, Reason.unknownKey);
      });

      it('a signature by the pinned key over the bare body (no domain prefix) → BAD_SIGNATURE signature_invalid', async () => {
        const cloudKey = (b.signer as unknown as { privateKey: KeyObject }).privateKey;
        const good = b.cmd({ orgWithdraw: {} });
        const r = await b.intake.handle(
          CMD_TOPIC,
          reenvelope(good, (m) => (m.signature = sign(null, m.body, cloudKey))),
        );
        await expectRejected(r, ResultCode.RESULT_CODE_BAD_SIGNATURE, Reason.signatureInvalid);
      });
    });

    describe('addressing', () => {
      it('body addressed to another device → WRONG_DEVICE device_mismatch', async () => {
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ deviceId: 'dev-2', orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_WRONG_DEVICE, Reason.deviceMismatch, { counterKnown: true });
      });

      it("topic's org differs from the body's org → WRONG_DEVICE topic_mismatch", async () => {
        const r = await b.intake.handle(topic('org-b', DEVICE, 'cmd'), b.cmd({ orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_WRONG_DEVICE, Reason.topicMismatch, { counterKnown: true });
        expect(b.published[0]!.orgId).toBe('org-b');
      });

      it("body's org differs from the topic's org → WRONG_DEVICE topic_mismatch", async () => {
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ orgId: 'org-b', orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_WRONG_DEVICE, Reason.topicMismatch, { counterKnown: true });
      });

      it("topic's device differs → WRONG_DEVICE topic_mismatch (and no result to an unparseable topic)", async () => {
        const r = await b.intake.handle(topic(ORG, 'dev-2', 'cmd'), b.cmd());
        await expectRejected(r, ResultCode.RESULT_CODE_WRONG_DEVICE, Reason.topicMismatch, { counterKnown: true });
      });

      it('not a cmd topic → WRONG_DEVICE topic_mismatch, result not published', async () => {
        const r = await b.intake.handle(topic(ORG, DEVICE, 'state'), b.cmd());
        expect(r.reason).toBe(Reason.topicMismatch);
        expect(b.handlers.calls).toEqual([]);
        expect(await b.state()).toEqual(baseline);
        expect(b.published).toEqual([]);
      });
    });

    describe('time', () => {
      it('expired → EXPIRED expired', async () => {
        const now = Date.now();
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ issuedAtMs: now - 120_000, expiresAtMs: now - 60_000, orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_EXPIRED, Reason.expired, { counterKnown: true });
      });

      it('valid for longer than maxTtl → EXPIRED ttl_too_long', async () => {
        const now = Date.now();
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ issuedAtMs: now, expiresAtMs: now + 25 * 3600_000, orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_EXPIRED, Reason.ttlTooLong, { counterKnown: true });
      });

      it('expires before it was issued → EXPIRED expires_before_issued', async () => {
        const now = Date.now();
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ issuedAtMs: now + 120_000, expiresAtMs: now + 60_000, orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_EXPIRED, Reason.expiresBeforeIssued, { counterKnown: true });
      });

      it('issued beyond the allowed clock skew → NOT_YET_VALID issued_in_future', async () => {
        const now = Date.now();
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ issuedAtMs: now + 6 * 60_000, expiresAtMs: now + 10 * 60_000, orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_NOT_YET_VALID, Reason.issuedInFuture, { counterKnown: true });
      });
    });

    describe('replay and order', () => {
      it('nonce not 16 bytes → MALFORMED nonce_length', async () => {
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ nonce: randomBytes(8), orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_MALFORMED, Reason.nonceLength, { counterKnown: true });
      });

      it('the same command again → REPLAYED nonce_seen', async () => {
        const c = b.cmd({ subjectErase: { subjectId: 'subj-1' } });
        expect((await b.intake.handle(CMD_TOPIC, c)).code).toBe(ResultCode.RESULT_CODE_OK);
        await rebase();
        const r = await b.intake.handle(CMD_TOPIC, c);
        await expectRejected(r, ResultCode.RESULT_CODE_REPLAYED, Reason.nonceSeen, { counterKnown: true });
      });

      it('a seen nonce under a new, higher counter → REPLAYED nonce_seen', async () => {
        const c = b.cmd();
        expect((await b.intake.handle(CMD_TOPIC, c)).code).toBe(ResultCode.RESULT_CODE_OK);
        const nonce = pb.CommandBody.decode(pb.SignedCommand.decode(c).body).nonce;
        await rebase();
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ nonce, orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_REPLAYED, Reason.nonceSeen, { counterKnown: true });
      });

      it('replay after a restart (intake reopened on the same file) → REPLAYED nonce_seen', async () => {
        const c = b.cmd({ orgWithdraw: { reason: 'closed' } });
        expect((await b.intake.handle(CMD_TOPIC, c)).code).toBe(ResultCode.RESULT_CODE_OK);
        await b.reopen();
        await rebase();
        const r = await b.intake.handle(CMD_TOPIC, c);
        await expectRejected(r, ResultCode.RESULT_CODE_REPLAYED, Reason.nonceSeen, { counterKnown: true });
      });

      it('counter equal to the last accepted → STALE_COUNTER counter_not_increasing', async () => {
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ counter: baseline.lastCounter, orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_STALE_COUNTER, Reason.counterNotIncreasing, { counterKnown: true });
      });

      it('counter below the last accepted, after a restart → STALE_COUNTER counter_not_increasing', async () => {
        await b.reopen();
        b.logs.length = 0;
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ counter: baseline.lastCounter - 1, orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_STALE_COUNTER, Reason.counterNotIncreasing, { counterKnown: true });
      });

      it('counter above 2^53 − 1 → MALFORMED counter_out_of_range', async () => {
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({ counter: 2 ** 60, orgWithdraw: {} }));
        await expectRejected(r, ResultCode.RESULT_CODE_MALFORMED, Reason.counterOutOfRange);
      });
    });

    describe('command', () => {
      it('empty oneof → UNKNOWN_COMMAND no_command', async () => {
        const r = await b.intake.handle(CMD_TOPIC, b.cmd({}));
        await expectRejected(r, ResultCode.RESULT_CODE_UNKNOWN_COMMAND, Reason.noCommand, { counterKnown: true });
      });

      it('a command from a newer schema (unknown oneof field 16) → UNKNOWN_COMMAND no_command', async () => {
        const head = pb.CommandBody.encode({ deviceId: DEVICE, orgId: ORG, issuedAtMs: Date.now(), expiresAtMs: Date.now() + 60_000, nonce: randomBytes(16), counter: baseline.lastCounter + 5 }).finish();
        const unknownField = Buffer.from([0x82, 0x01, 0x02, 0x0a, 0x00]); // field 16 (wire type 2, varint tag), a 2-byte message
        const r = await b.intake.handle(CMD_TOPIC, b.signer.signBytes(Buffer.concat([head, unknownField])));
        await expectRejected(r, ResultCode.RESULT_CODE_UNKNOWN_COMMAND, Reason.noCommand, { counterKnown: true });
      });
    });

    describe('results of rejections', () => {
      it('are signed over the exact result bytes; any change breaks the signature', async () => {
        const r = await b.intake.handle(CMD_TOPIC, Buffer.from('garbage'));
        const bytes = pb.CommandResult.encode(r).finish();
        expect(verifyCommandResult(bytes, b.identity.publicKey)).toBe(true);
        expect(verifyCommandResult(bytes, Buffer.from(b.identity.publicKey.export({ format: 'jwk' }).x!, 'base64url'))).toBe(true);
        expect(verifyCommandResult({ ...r, code: ResultCode.RESULT_CODE_OK }, b.identity.publicKey)).toBe(false);
        expect(verifyCommandResult(Buffer.concat([bytes, Buffer.from([0x08, 0x01])]), b.identity.publicKey)).toBe(false);
        const other = generateKeyPairSync('ed25519');
        expect(verifyCommandResult(bytes, other.publicKey)).toBe(false);
      });
    });
  });
}
