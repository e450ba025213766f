/**
 * Issue 14 §1, the signed DeviceDecommission command end to end through a
 * broker, against a real `tallybox run` process: a forged one and one from an
 * organisation that does not operate the device are refused and change
 * nothing; the real one is answered with the ONE decommission receipt in its
 * signed result, then the process stops, the keys are gone, and `tallybox
 * run` refuses. Re-provisioned, the device refuses the captured command
 * replayed on the broker (it cannot wipe the device again).
 */
import { spawnSync } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { receiptFilePath } from '../../src/decommission/engine.js';
import { verifyDecommissionReceipt } from '../../src/decommission/receipt.js';
import { readDecommission } from '../../src/decommission/state.js';
import { verifyCommandResult } from '../../src/link/commands/index.js';
import type { SignedErasureReceipt } from '../../src/privacy/receipt.js';
import { ResultCode } from '../../src/proto/index.js';
import { DEFAULT_IDENTITY_FILE, provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { AgentProcess, CLI, writeConfig } from '../helpers/agent-process.js';
import { freePort, waitUntil } from '../helpers/ports.js';
import { enrol, open } from '../privacy/helpers.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('DeviceDecommission over the broker', () => {
  it('forged and misaddressed refused; the real one answers with the receipt, then the device is decommissioned; a replay after re-provisioning is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-decom-cmd-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const broker = await startEmbeddedBroker();
    cleanups.push(() => broker.close());
    const sink = await CloudSink.connect({ url: broker.url });
    cleanups.push(() => sink.close());
    const signer = new CommandSigner({ keyId: 'cloud-test' });
    const dataDir = join(dir, 'data');
    const kekFile = join(dir, 'keys', 'tallybox.kek');
    const keys = await provisionKeyFiles({ kekPath: kekFile, dataDir });
    const apiPort = await freePort();
    const input: ConfigInput = {
      version: 1,
      device: { id: 'dev-decom-cmd', kind: 'sim', orgId: 'org-a', servedOrgs: ['org-a', 'org-b'] },
      region: 'sg',
      dataDir,
      broker: { url: broker.url, allowLoopback: true, reconnectMinMs: 50, reconnectMaxMs: 300 },
      vault: { kekFile },
      cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
      clock: { source: 'assume-synced' },
      punchApi: { enabled: true, port: apiPort },
      decommission: { deliverTimeoutSec: 20 },
      log: { level: 'info' },
    };
    const configFile = writeConfig(dir, input);
    const d = { root: dir, dataDir, configInput: input, config: validateConfig(input), configFile, cleanup: async () => undefined };
    const o = await open(d);
    await enrol(o.privacy, 'org-a', 3);
    await enrol(o.privacy, 'org-b', 2);
    await o.close();

    const agent = new AgentProcess(configFile, apiPort);
    cleanups.push(() => agent.kill());
    await agent.start();
    await waitUntil(() => sink.state('dev-decom-cmd') !== undefined, 20_000, 'device online');

    const forger = new CommandSigner({ keyId: 'cloud-test', startCounter: Date.now() * 2 });
    await sink.sendCommand(forger, 'org-a', 'dev-decom-cmd', { deviceDecommission: { note: 'forged' } });
    await waitUntil(() => sink.commandResults().some((r) => r.code === ResultCode.RESULT_CODE_BAD_SIGNATURE), 15_000, 'forgery refused');
    await sink.sendCommand(signer, 'org-b', 'dev-decom-cmd', { deviceDecommission: {} });
    const misaddressed = await sink.waitForResult(signer.lastCounter, 15_000);
    expect(misaddressed.result.code).toBe(ResultCode.RESULT_CODE_REFUSED);
    expect(readDecommission(dataDir)).toBeUndefined();
    expect(existsSync(kekFile)).toBe(true);

    const captured = await sink.sendCommand(signer, 'org-a', 'dev-decom-cmd', { deviceDecommission: { note: 'retired' } });
    const { result, raw } = await sink.waitForResult(signer.lastCounter, 60_000);
    expect(result.code, result.detail).toBe(ResultCode.RESULT_CODE_OK);
    expect(verifyCommandResult(raw, createPublicKey(keys.publicKeyPem))).toBe(true);
    const signed = JSON.parse(Buffer.from(result.receipt).toString('utf8')) as SignedErasureReceipt;
    const receipt = verifyDecommissionReceipt(signed, keys.publicKeyPem);
    expect(receipt).toMatchObject({ ok: true, verification: 'verified', deviceId: 'dev-decom-cmd', requestRef: `cmd:${signer.lastCounter}` });
    expect(receipt.orgs.map((x) => x.orgId)).toEqual(['org-a', 'org-b']);

    // The process finishes (keys destroyed) and exits on its own.
    await waitUntil(() => !agent.running, 60_000, 'agent exited after the decommission');
    const s = readDecommission(dataDir)!;
    expect(s).toMatchObject({ phase: 'done', receiptId: receipt.receiptId, delivered: true, kek: 'destroyed', identity: 'destroyed' });
    expect(existsSync(kekFile)).toBe(false);
    expect(existsSync(join(dir, 'keys', DEFAULT_IDENTITY_FILE))).toBe(false);
    const file = JSON.parse(readFileSync(receiptFilePath(dataDir), 'utf8')) as { signed: SignedErasureReceipt };
    expect(file.signed).toEqual(signed); // the same receipt, not another signature
    // The operator's check: verify-receipt with the public key the cloud pinned at provisioning.
    writeFileSync(join(dir, 'pub.pem'), keys.publicKeyPem);
    const vr = spawnSync(process.execPath, [CLI, 'verify-receipt', receiptFilePath(dataDir), '--pubkey', join(dir, 'pub.pem')], { encoding: 'utf8' });
    expect(vr.status, vr.stderr).toBe(0);
    expect(JSON.parse(vr.stdout)).toMatchObject({ valid: true, receiptId: receipt.receiptId, verification: 'verified' });
    const tampered = join(dir, 'tampered.json');
    writeFileSync(tampered, JSON.stringify({ signed: { ...signed, body: signed.body.replace('"orgs":[', '"orgs":[ ') } }));
    const bad = spawnSync(process.execPath, [CLI, 'verify-receipt', tampered, '--pubkey', join(dir, 'pub.pem')], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^tallybox: RECEIPT_INVALID: /m);
    const run = spawnSync(process.execPath, [CLI, 'run', '--config', configFile], { encoding: 'utf8', timeout: 60_000 });
    expect(run.status).toBe(78);
    expect(run.stderr).toMatch(/^tallybox: DECOMMISSIONED: /m);

    // Re-provisioned: it runs again, and the captured command replayed on the broker is refused.
    const prov = spawnSync(process.execPath, [CLI, 'provision', '--config', configFile], { encoding: 'utf8', timeout: 60_000 });
    expect(prov.status, prov.stderr).toBe(0);
    const publicKeyPem = (JSON.parse(prov.stdout.trim()) as { publicKeyPem: string }).publicKeyPem;
    expect(readDecommission(dataDir)).toBeUndefined();
    const again = new AgentProcess(configFile, apiPort);
    cleanups.push(() => again.kill());
    await again.start();
    // Online again (a ping answered) before the replay goes out.
    for (let i = 0; ; i++) {
      await sink.sendCommand(signer, 'org-a', 'dev-decom-cmd', { ping: { note: 'up?' } });
      const up = await sink.waitForResult(signer.lastCounter, 3000).then(
        () => true,
        () => false,
      );
      if (up) break;
      if (i > 20) throw new Error('the re-provisioned device never answered');
    }
    const before = sink.commandResults().length;
    await sink.sendRaw('org-a', 'dev-decom-cmd', captured);
    await waitUntil(() => sink.commandResults().length > before, 20_000, 'result of the replay');
    const replay = sink.commandResults().at(-1)!;
    expect([ResultCode.RESULT_CODE_REPLAYED, ResultCode.RESULT_CODE_STALE_COUNTER]).toContain(replay.code);
    expect(verifyCommandResult(sink.rawResults().at(-1)!.raw, createPublicKey(publicKeyPem))).toBe(true);
    expect(readDecommission(dataDir)).toBeUndefined();
    expect(again.running).toBe(true);
  }, 300_000);
});
