/**
 * Accepted commands: routing to the handler, the counter on disk before the
 * handler runs (checked from inside the handler, and by SIGKILLing a child
 * process mid-handler), one at a time in arrival order, handler failures,
 * signed results.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CommandIntake, Reason, verifyCommandResult, type HandlerOutcome } from '../../src/link/commands/index.js';
import { ConsentKind, CredentialKind, pb, ResultCode, type CommandBodyProps, type ConfigPatch, type SubjectUpsert } from '../../src/proto/index.js';
import { TallyboxError } from '../../src/util/errors.js';
import { bench, CMD_TOPIC, DEVICE, ORG, silentLogger, type Bench } from './helpers.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';

let b: Bench;
beforeEach(async () => {
  b = await bench();
});
afterEach(() => b.cleanup());

function bodyOf(c: Uint8Array) {
  return pb.CommandBody.decode(pb.SignedCommand.decode(c).body);
}

describe('routing', () => {
  it('SubjectUpsert reaches its handler with the org, the decoded command and the context', async () => {
    const c = b.cmd({
      subjectUpsert: {
        subjectId: 'subj-1',
        displayName: 'Ada Lovelace',
        minor: true,
        consents: [
          { kind: ConsentKind.CONSENT_KIND_BIOMETRIC, grantedAtMs: 1_700_000_000_000, evidence: 'ev-1' },
          { kind: ConsentKind.CONSENT_KIND_GUARDIAN, grantedAtMs: 1_700_000_000_001, evidence: 'ev-2' },
        ],
        credentials: [{ kind: CredentialKind.CREDENTIAL_KIND_CARD, value: '0004123456' }],
      },
    });
    const body = bodyOf(c);
    const r = await b.intake.handle(CMD_TOPIC, c);
    expect(r.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(b.handlers.calls).toHaveLength(1);
    const call = b.handlers.calls[0]!;
    expect(call.kind).toBe('subjectUpsert');
    expect(call.orgId).toBe(ORG);
    const cmd = call.cmd as SubjectUpsert;
    expect(cmd.displayName).toBe('Ada Lovelace');
    expect(cmd.minor).toBe(true);
    expect(cmd.consents.map((x) => x.kind)).toEqual([ConsentKind.CONSENT_KIND_BIOMETRIC, ConsentKind.CONSENT_KIND_GUARDIAN]);
    expect(cmd.credentials[0]).toMatchObject({ kind: CredentialKind.CREDENTIAL_KIND_CARD, value: '0004123456' });
    expect(call.ctx).toEqual({ counter: body.counter, nonce: body.nonce, issuedAtMs: body.issuedAtMs, expiresAtMs: body.expiresAtMs, keyId: 'cloud-1' });
    expect(r.counter).toBe(body.counter);
    expect(Buffer.from(r.nonce!)).toEqual(Buffer.from(body.nonce));
    expect(r.keyId).toBe(b.identity.keyId);
    expect(b.published).toEqual([{ orgId: ORG, result: r }]);
    // Nothing personal in the logs.
    const logText = JSON.stringify(b.logs);
    for (const pii of ['Ada', 'Lovelace', '0004123456', 'subj-1', 'ev-1']) expect(logText).not.toContain(pii);
  });

  it.each([
    ['subjectErase', { subjectErase: { subjectId: 's-9' } }],
    ['orgWithdraw', { orgWithdraw: { reason: 'account_closed' } }],
    ['rosterSync', { rosterSync: { subjectIds: ['s-1', 's-2'] } }],
    ['configPatch', { configPatch: { retentionDays: 30, logLevel: 'debug' } }],
  ] as Array<[string, CommandBodyProps]>)('%s reaches its handler', async (kind, body) => {
    const r = await b.intake.handle(CMD_TOPIC, b.cmd(body));
    expect(r.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(b.handlers.calls.map((c) => c.kind)).toEqual([kind]);
    expect(b.handlers.calls[0]!.cmd).toMatchObject(Object.values(body)[0]!);
  });

  it('ConfigPatch keeps unset optional fields unset (presence is visible to the handler)', async () => {
    await b.intake.handle(CMD_TOPIC, b.cmd({ configPatch: { retentionDays: 0 } }));
    const cmd = b.handlers.calls[0]!.cmd as ConfigPatch;
    expect(Object.prototype.hasOwnProperty.call(cmd, 'retentionDays')).toBe(true);
    expect(cmd.retentionDays).toBe(0);
    expect(Object.prototype.hasOwnProperty.call(cmd, 'repeatWindowSec')).toBe(false);
  });

  it('Ping is answered by the intake (OK pong) and consumes its counter', async () => {
    const c = b.cmd({ ping: { note: 'hi' } });
    const r = await b.intake.handle(CMD_TOPIC, c);
    expect({ code: r.code, reason: r.reason }).toEqual({ code: ResultCode.RESULT_CODE_OK, reason: Reason.pong });
    expect(b.handlers.calls).toEqual([]);
    expect((await b.state()).lastCounter).toBe(bodyOf(c).counter);
  });

  it("the handler's outcome (REFUSED + reason, receipt) is carried into the signed result", async () => {
    const receipt = Buffer.from(JSON.stringify({ alg: 'Ed25519', keyId: 'k', body: '{}', signature: 'AA==' }), 'utf8');
    b.handlers.impl.subjectUpsert = async () => ({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'consent_missing', detail: 'no consent recorded' });
    b.handlers.impl.orgWithdraw = async () => ({ code: ResultCode.RESULT_CODE_OK, receipt });
    const refused = await b.intake.handle(CMD_TOPIC, b.cmd({ subjectUpsert: { subjectId: 's-1' } }));
    expect(refused).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'consent_missing', detail: 'no consent recorded' });
    const done = await b.intake.handle(CMD_TOPIC, b.cmd({ orgWithdraw: {} }));
    expect(Buffer.from(done.receipt!)).toEqual(receipt);
    for (const r of [refused, done]) {
      expect(verifyCommandResult(r, b.identity.publicKey)).toBe(true);
      expect(verifyCommandResult(pb.CommandResult.encode(r).finish(), b.identity.publicKey)).toBe(true);
    }
    // The receipt is covered by the result signature.
    expect(verifyCommandResult({ ...done, receipt: Buffer.from('{}') }, b.identity.publicKey)).toBe(false);
    expect((await b.intake.journal()).map((j) => [j.kind, j.code, j.reason])).toEqual([
      ['orgWithdraw', ResultCode.RESULT_CODE_OK, ''],
      ['subjectUpsert', ResultCode.RESULT_CODE_REFUSED, 'consent_missing'],
    ]);
  });

  it('results are unsigned (and carry no key id) when no signer is configured', async () => {
    await b.reopen({ signResult: undefined, resultKeyId: undefined });
    const r = await b.intake.handle(CMD_TOPIC, b.cmd());
    expect(r.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(r.signature).toBeUndefined();
    expect(r.keyId).toBeUndefined();
    expect(verifyCommandResult(r, b.identity.publicKey)).toBe(false);
  });
});

describe('persist before effect', () => {
  it('the counter, nonce and journal entry are on disk when the handler runs', async () => {
    const c = b.cmd({ orgWithdraw: {} });
    const { counter } = bodyOf(c);
    let seen: Awaited<ReturnType<Bench['state']>> | undefined;
    let journal: Awaited<ReturnType<CommandIntake['journal']>> | undefined;
    b.handlers.impl.orgWithdraw = async () => {
      seen = await b.state(); // a separate connection: only committed data is visible
      journal = await b.intake.journal();
      return { code: ResultCode.RESULT_CODE_OK };
    };
    await b.intake.handle(CMD_TOPIC, c);
    expect(seen).toEqual({ lastCounter: counter, nonces: 1, journal: 1 });
    expect(journal?.[0]).toMatchObject({ counter, orgId: ORG, kind: 'orgWithdraw', finishedAtMs: null });
  });

  it('a handler that throws → FAILED with the error code as reason; the command stays consumed', async () => {
    b.handlers.impl.subjectErase = async () => {
      throw new TallyboxError('VAULT_CLOSED', 'VAULT_CLOSED: cannot erase Ada Lovelace (subj-1)');
    };
    const c = b.cmd({ subjectErase: { subjectId: 'subj-1' } });
    const r = await b.intake.handle(CMD_TOPIC, c);
    expect(r).toMatchObject({ code: ResultCode.RESULT_CODE_FAILED, reason: 'VAULT_CLOSED' });
    expect(r.detail).not.toMatch(/Ada|subj-1/);
    expect(JSON.stringify(b.logs)).not.toMatch(/Ada|subj-1/);
    expect((await b.state()).lastCounter).toBe(bodyOf(c).counter);
    // The cloud must send a new command (new counter, new nonce) to retry.
    b.handlers.calls.length = 0;
    expect((await b.intake.handle(CMD_TOPIC, c)).code).toBe(ResultCode.RESULT_CODE_REPLAYED);
    expect(b.handlers.calls).toEqual([]);
  });

  it('a handler that throws a non-error or returns garbage → FAILED handler_failed / handler_bad_outcome', async () => {
    b.handlers.impl.subjectErase = async () => {
      throw 'boom'; // eslint-disable-line @typescript-eslint/only-throw-error
    };
    b.handlers.impl.orgWithdraw = async () => undefined as unknown as HandlerOutcome;
    expect((await b.intake.handle(CMD_TOPIC, b.cmd({ subjectErase: {} }))).reason).toBe(Reason.handlerFailed);
    expect((await b.intake.handle(CMD_TOPIC, b.cmd({ orgWithdraw: {} }))).reason).toBe(Reason.handlerBadOutcome);
  });

  it('SIGKILL during the handler: after restart the command is consumed, reported interrupted, and a replay is refused', async () => {
    const build = await buildChild(b.dir);
    await b.intake.close();
    const c = b.cmd({ orgWithdraw: { reason: 'closed' } });
    const { counter } = bodyOf(c);
    const out = await runChildUntilHandlerThenKill(build, b.dbPath, b.signer.publicKeyBase64(), c);
    expect(out).toBe('killed');
    const intake = await b.reopen({ describeInterrupted: (e) => `the agent stopped while the ${e.kind} command was running; test says what was done` });
    expect(intake.interruptedAtOpen.map((e) => [e.counter, e.kind])).toEqual([[counter, 'orgWithdraw']]);
    expect(await intake.lastCounter()).toBe(counter);
    // Issue 8 §2: the interrupted command gets its one result at open, signed, with its counter and nonce.
    expect(b.published).toHaveLength(1);
    const interrupted = b.published[0]!.result;
    expect(interrupted).toMatchObject({ counter, code: ResultCode.RESULT_CODE_INTERRUPTED, reason: Reason.interrupted, detail: expect.stringMatching(/test says what was done/) as string });
    expect(Buffer.from(interrupted.nonce!).equals(Buffer.from(bodyOf(c).nonce))).toBe(true);
    expect(verifyCommandResult(interrupted, b.identity.publicKey)).toBe(true);
    expect((await intake.journal())[0]).toMatchObject({ counter, code: ResultCode.RESULT_CODE_INTERRUPTED, queued: true });
    const r = await intake.handle(CMD_TOPIC, c);
    expect(r.code).toBe(ResultCode.RESULT_CODE_REPLAYED);
    expect(r.firstCounter).toBe(counter);
    expect(b.handlers.calls).toEqual([]);
    // A second restart does not answer it again.
    b.published.length = 0;
    await b.reopen();
    expect(b.published).toEqual([]);
  }, 30_000);
});

describe('ordering', () => {
  it('processes commands one at a time, in arrival order', async () => {
    const events: string[] = [];
    b.handlers.impl.subjectErase = async (_o, _c, ctx) => {
      events.push(`start ${ctx.counter}`);
      await new Promise((r) => setTimeout(r, 5));
      events.push(`end ${ctx.counter}`);
      return { code: ResultCode.RESULT_CODE_OK };
    };
    const cmds = Array.from({ length: 5 }, () => b.cmd({ subjectErase: { subjectId: 's' } }));
    const counters = cmds.map((c) => bodyOf(c).counter);
    const results = await Promise.all(cmds.map((c) => b.intake.handle(CMD_TOPIC, c)));
    expect(results.map((r) => r.code)).toEqual(Array(5).fill(ResultCode.RESULT_CODE_OK));
    expect(events).toEqual(counters.flatMap((n) => [`start ${n}`, `end ${n}`]));
    expect(b.published.map((p) => p.result.counter)).toEqual(counters);
  });

  it('a lower counter arriving after a higher one is stale', async () => {
    const first = b.cmd();
    const second = b.cmd();
    const [r2, r1] = await Promise.all([b.intake.handle(CMD_TOPIC, second), b.intake.handle(CMD_TOPIC, first)]);
    expect(r2.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(r1.code).toBe(ResultCode.RESULT_CODE_STALE_COUNTER);
    expect(b.handlers.calls).toHaveLength(1);
  });
});

describe('robustness', () => {
  it('a publish failure is logged; handle() still resolves with the result', async () => {
    await b.reopen({ publishResult: async () => Promise.reject(Object.assign(new Error('offline'), { code: 'MQTT_OFFLINE' })) });
    const r = await b.intake.handle(CMD_TOPIC, b.cmd());
    expect(r.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(b.logs.some((l) => l.event === 'command_result_publish_failed' && l.errorCode === 'MQTT_OFFLINE')).toBe(true);
  });

  it('a result whose handover failed (disk full) is handed over later — the same signed bytes, once', async () => {
    let fail = true;
    const handed: Array<{ orgId: string; result: unknown }> = [];
    const publishResult = async (orgId: string, result: unknown) => {
      if (fail) throw Object.assign(new Error('full'), { code: 'DISK_FULL' });
      handed.push({ orgId, result });
    };
    await b.reopen({ publishResult });
    const r = await b.intake.handle(CMD_TOPIC, b.cmd());
    expect(r.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(handed).toEqual([]);
    expect((await b.intake.journal())[0]).toMatchObject({ queued: false });
    fail = false;
    b.intake.resumeResults(); // the link came back
    await waitFor(() => handed.length === 1);
    expect(pb.CommandResult.encode(handed[0]!.result as object).finish()).toEqual(pb.CommandResult.encode(r).finish());
    expect((await b.intake.journal())[0]).toMatchObject({ queued: true });
    await b.reopen({ publishResult });
    b.intake.resumeResults();
    await new Promise((res) => setTimeout(res, 50));
    expect(handed).toHaveLength(1);
  });

  it('after close(), handle() resolves FAILED intake_closed without touching state', async () => {
    await b.intake.close();
    const r = await b.intake.handle(CMD_TOPIC, b.cmd());
    expect(r).toMatchObject({ code: ResultCode.RESULT_CODE_FAILED, reason: Reason.intakeClosed });
    expect(b.handlers.calls).toEqual([]);
  });

  it('nonces are pruned once their command has expired (plus skew)', async () => {
    let now = Date.now();
    await b.reopen({ now: () => now, maxSkewMs: 1000 });
    expect((await b.intake.handle(CMD_TOPIC, b.cmd({ issuedAtMs: now, expiresAtMs: now + 1000, orgWithdraw: {} }))).code).toBe(ResultCode.RESULT_CODE_OK);
    expect((await b.intake.handle(CMD_TOPIC, b.cmd({ issuedAtMs: now, expiresAtMs: now + 5000, orgWithdraw: {} }))).code).toBe(ResultCode.RESULT_CODE_OK);
    expect((await b.state()).nonces).toBe(2);
    now += 2500; // the first is past expiry + skew, the second is not
    expect((await b.intake.handle(CMD_TOPIC, b.cmd({ issuedAtMs: now, expiresAtMs: now + 60_000, orgWithdraw: {} }))).code).toBe(ResultCode.RESULT_CODE_OK);
    expect((await b.state()).nonces).toBe(2);
  });

  it('the state file and its WAL are readable and writable by the agent only', async () => {
    await b.intake.handle(CMD_TOPIC, b.cmd());
    for (const f of [b.dbPath, `${b.dbPath}-wal`]) expect((await stat(f)).mode & 0o777).toBe(0o600);
  });

  it('open() refuses bad pinned keys and device ids with CONFIG_INVALID', async () => {
    const base = { dbPath: b.dbPath + '.x', deviceId: DEVICE, handlers: b.handlers, publishResult: async () => undefined, logger: silentLogger() };
    for (const bad of [
      { trustedKeys: [] },
      { trustedKeys: [{ id: 'k', publicKey: 'not base64!' }] },
      { trustedKeys: [{ id: 'k', publicKey: Buffer.alloc(31).toString('base64') }] },
      { trustedKeys: [{ id: '', publicKey: b.signer.publicKeyBase64() }] },
      {
        trustedKeys: [
          { id: 'k', publicKey: b.signer.publicKeyBase64() },
          { id: 'k', publicKey: b.signer.publicKeyBase64() },
        ],
      },
      { trustedKeys: [{ id: 'k', publicKey: b.signer.publicKeyBase64() }], deviceId: 'a/b' },
    ]) {
      await expect(CommandIntake.open({ ...base, ...bad })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    }
  });

  it('accepts commands from any pinned key (rotation)', async () => {
    const next = new CommandSigner({ keyId: 'cloud-2', startCounter: Date.now() + 10_000_000 });
    await b.reopen({
      trustedKeys: [
        { id: 'cloud-1', publicKey: b.signer.publicKeyBase64() },
        { id: 'cloud-2', publicKey: next.publicKeyBase64() },
      ],
    });
    expect((await b.intake.handle(CMD_TOPIC, b.cmd())).code).toBe(ResultCode.RESULT_CODE_OK);
    const r = await b.intake.handle(CMD_TOPIC, next.sign({ deviceId: DEVICE, orgId: ORG, orgWithdraw: {} }));
    expect(r.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(b.handlers.calls.at(-1)!.ctx.keyId).toBe('cloud-2');
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---- child process for the SIGKILL test ---------------------------------------------------------

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

async function transpileTree(dir: string, outRoot: string): Promise<void> {
  for (const ent of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) await transpileTree(p, outRoot);
    else if (ent.name.endsWith('.ts') && !ent.name.endsWith('.test.ts') && !ent.name.endsWith('.d.ts')) {
      const out = ts.transpileModule(await readFile(p, 'utf8'), { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true } });
      const dest = join(outRoot, relative(repo, p)).replace(/\.ts$/, '.js');
      await mkdir(dirname(dest), { recursive: true });
      await writeFile(dest, out.outputText);
    }
  }
}

const CHILD = `
import { CommandIntake } from './src/link/commands/index.js';
import { silentLogger } from './src/util/log.js';
const [dbPath, pub, cmdB64, topic] = process.argv.slice(2);
const hang = () => { process.stdout.write('in-handler\\n'); return new Promise(() => setInterval(() => {}, 1000)); };
const handlers = { subjectUpsert: hang, subjectErase: hang, orgWithdraw: hang, rosterSync: hang, configPatch: hang };
const intake = await CommandIntake.open({ dbPath, deviceId: '${DEVICE}', trustedKeys: [{ id: 'cloud-1', publicKey: pub }], handlers, publishResult: async () => {}, logger: silentLogger() });
await intake.handle(topic, Buffer.from(cmdB64, 'base64'));
`;

async function buildChild(dir: string): Promise<string> {
  const out = join(dir, 'build');
  for (const d of ['src/link', 'src/proto', 'src/store', 'src/util']) await transpileTree(join(repo, d), out);
  await mkdir(join(out, 'src/gen'), { recursive: true });
  await copyFile(join(repo, 'src/gen/tallybox.js'), join(out, 'src/gen/tallybox.js'));
  await writeFile(join(out, 'package.json'), '{"type":"module"}');
  await symlink(join(repo, 'node_modules'), join(out, 'node_modules'));
  await writeFile(join(out, 'child.mjs'), CHILD);
  return out;
}

function runChildUntilHandlerThenKill(build: string, dbPath: string, pub: string, cmd: Uint8Array): Promise<'killed' | 'finished'> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [join(build, 'child.mjs'), dbPath, pub, Buffer.from(cmd).toString('base64'), CMD_TOPIC], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('in-handler')) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolveRun('killed');
      else if (code === 0) resolveRun('finished');
      else reject(new Error(`child exited ${code}: ${err}`));
    });
  });
}
