/**
 * Tamper zeroisation: the device key is destroyed (every sealed record is
 * unreadable for good), the agent stays up without its vault — delivering the
 * punches it had accepted, identifying nobody, raising the TAMPER alarm — the
 * same after a restart, until IT re-provisions (new key, new identity, old
 * vault removed).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { AlarmCode, PunchMethod, ResultCode } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { startFaceSimulator } from '../../simulators/face/main.js';
import { BlackholeProxy } from '../../simulators/lib/tcp-proxy.js';
import { AgentProcess, CLI, writeConfig } from '../helpers/agent-process.js';
import { freePort, waitUntil } from '../helpers/ports.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function runCli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => execFile(process.execPath, [CLI, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })));
}

describe('tamper zeroisation', () => {
  it('destroys the key, keeps delivering accepted punches, survives a restart, and ends with re-provisioning', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-zero-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const broker = await startEmbeddedBroker();
    cleanups.push(() => broker.close());
    const uplink = await BlackholeProxy.start(broker.port);
    cleanups.push(() => uplink.close());
    const sink = await CloudSink.connect({ url: broker.url });
    cleanups.push(() => sink.close());
    const signer = new CommandSigner({ keyId: 'cloud-z' });
    const dataDir = join(dir, 'data');
    const kekFile = join(dir, 'keys', 'tallybox.kek');
    const first = await provisionKeyFiles({ kekPath: kekFile, dataDir });
    const input = {
      version: 1,
      device: { id: 'dev-z', kind: 'sim', orgId: 'org-a' },
      region: 'sg',
      dataDir,
      broker: { url: uplink.url, allowLoopback: true, reconnectMinMs: 50, reconnectMaxMs: 300 },
      vault: { kekFile },
      cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
      clock: { source: 'assume-synced' },
      outbox: { backlogRatePerSec: 0 },
      log: { level: 'silent' },
    };
    let agent = await Agent.start({ config: validateConfig(input), logger: silentLogger() });
    await agent.privacy!.vault.upsertSubject('org-a', { subjectId: 's-1', displayName: 'Zed Example', minor: false, consents: [{ kind: 'biometric' }] });
    await agent.privacy!.vault.enrolTemplate('org-a', 's-1', 'fingerprint', 0, Buffer.alloc(300, 0x42));
    uplink.cut(true); // offline: these punches are only in the outbox when the tamper happens
    const queued = await Promise.all([1, 2, 3].map(() => agent.punch({ orgId: 'org-a', subjectId: 's-1', method: PunchMethod.PUNCH_METHOD_FINGERPRINT })));

    await agent.zeroise('test: case opened');
    expect(existsSync(kekFile)).toBe(false);
    expect(agent.privacy).toBeUndefined();
    expect(agent.state().alarms?.map((a) => a.code)).toContain(AlarmCode.ALARM_CODE_TAMPER);

    uplink.cut(false);
    await waitUntil(() => queued.every((q) => sink.has(q.eventId)), 15_000, 'punches accepted before the tamper delivered');
    // The cloud sees the alarm in the device state.
    await waitUntil(() => (sink.state('dev-z')?.alarms ?? []).some((a) => a.code === AlarmCode.ALARM_CODE_TAMPER), 10_000, 'TAMPER alarm at the cloud');

    // A restart comes up the same way: no vault, alarm raised, commands needing the vault refused.
    await agent.stop();
    agent = await Agent.start({ config: validateConfig(input), logger: silentLogger() });
    cleanups.push(() => agent.stop());
    expect(agent.zeroised?.reason).toBe('test: case opened');
    expect(agent.privacy).toBeUndefined();
    await waitUntil(() => agent.session !== undefined, 10_000, 'online after restart');
    await sink.sendCommand(signer, 'org-a', 'dev-z', { subjectUpsert: { subjectId: 's-2', displayName: 'Amy' } });
    const { result } = await sink.waitForResult(signer.lastCounter);
    expect(result).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'no_vault' });
    await agent.stop();

    // Re-provisioning: a new key and a new identity; the old vault is gone.
    const file = writeConfig(dir, input as never);
    const r = await runCli(['provision', '--config', file]);
    expect(r.status, r.stderr).toBe(0);
    const again = JSON.parse(r.stdout) as { keyId: string; reprovisionedAfterZeroise: boolean };
    expect(again.reprovisionedAfterZeroise).toBe(true);
    expect(again.keyId).not.toBe(first.keyId);
    agent = await Agent.start({ config: validateConfig(input), logger: silentLogger() });
    expect(agent.zeroised).toBeUndefined();
    expect(await agent.privacy!.vault.orgs()).toEqual([]);
  });

  it('an M2 terminal with tamperResponse zeroise: opening the case destroys the key (tallybox run)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-zero-m2-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const broker = await startEmbeddedBroker();
    cleanups.push(() => broker.close());
    const face = await startFaceSimulator({ link: join(dir, 'ttyFace'), people: 10 });
    cleanups.push(() => face.close());
    const dataDir = join(dir, 'data');
    const kekFile = join(dir, 'keys', 'tallybox.kek');
    await provisionKeyFiles({ kekPath: kekFile, dataDir });
    const apiPort = await freePort();
    const file = writeConfig(dir, {
      version: 1,
      device: { id: 'dev-m2z', kind: 'm2', orgId: 'org-a' },
      region: 'sg',
      dataDir,
      broker: { url: broker.url, allowLoopback: true },
      vault: { kekFile },
      punchApi: { enabled: true, port: apiPort },
      clock: { source: 'assume-synced' },
      m2: { bridge: { port: join(dir, 'ttyFace') }, tamperResponse: 'zeroise' },
    });
    const agent = new AgentProcess(file, apiPort);
    cleanups.push(() => agent.kill('SIGTERM'));
    await agent.start();
    const state = async () => (await (await fetch(`http://127.0.0.1:${apiPort}/v1/state`)).json()) as { peripherals?: { name: string; online: boolean }[]; alarms?: { code: string }[] };
    await waitUntil(async () => (await state()).peripherals?.some((p) => p.name === 'face' && p.online) ?? false, 15_000, 'face module online');
    await fetch(`${face.controlUrl}/tamper`, { method: 'POST', body: JSON.stringify({ open: true }), headers: { 'content-type': 'application/json' } });
    await waitUntil(() => !existsSync(kekFile), 10_000, 'key file destroyed');
    await waitUntil(async () => (await state()).alarms?.some((a) => a.code === 'ALARM_CODE_TAMPER') ?? false, 10_000, 'TAMPER alarm');
  });
});
