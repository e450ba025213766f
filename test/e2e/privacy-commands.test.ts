/**
 * The privacy promise over the real command path (MQTT, signed commands, the
 * agent's vault and purge pipeline), checked from outside the device:
 * - everything on the broker is sniffed: no template byte ever appears, and
 *   nothing the device publishes carries a name or a card number;
 * - a captured command replayed on the broker is refused and changes nothing;
 * - `tallybox purge` erases locally while offline and the signed receipt
 *   reaches the cloud on the next connection;
 * - `tallybox demo --scenario withdraw --json` ends verified.
 */
import { spawnSync } from 'node:child_process';
import { createPublicKey, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { servedVaultView } from '../../src/agent/served-orgs.js';
import { validateConfig } from '../../src/config/load.js';
import { verifyCommandResult } from '../../src/link/commands/index.js';
import { verifyErasureReceipt, type SignedErasureReceipt } from '../../src/privacy/receipt.js';
import { ConsentKind, CredentialKind, Modality, PunchMethod, ResultCode } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';
import { waitUntil } from '../helpers/ports.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Fixture {
  broker: EmbeddedBroker;
  sink: CloudSink;
  signer: CommandSigner;
  agent: Agent;
  dir: string;
  configInput: Parameters<typeof validateConfig>[0];
  publicKeyPem: string;
}

async function setup(): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-privacy-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const broker = await startEmbeddedBroker();
  cleanups.push(() => broker.close());
  const sink = await CloudSink.connect({ url: broker.url });
  cleanups.push(() => sink.close());
  const signer = new CommandSigner({ keyId: 'cloud-test' });
  const dataDir = join(dir, 'data');
  const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
  const configInput = {
    version: 1,
    device: { id: 'dev-p1', kind: 'sim', orgId: 'org-a', servedOrgs: ['org-a', 'org-b'] },
    region: 'sg',
    dataDir,
    broker: { url: broker.url, allowLoopback: true, reconnectMinMs: 50, reconnectMaxMs: 300 },
    vault: { kekFile: keys.kekPath },
    cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
    clock: { source: 'assume-synced' },
    outbox: { backlogRatePerSec: 0 },
    log: { level: 'silent' },
  };
  const agent = await Agent.start({ config: validateConfig(configInput), logger: silentLogger() });
  cleanups.push(() => agent.stop());
  await waitUntil(() => agent.session !== undefined, 10_000, 'online');
  return { broker, sink, signer, agent, dir, configInput, publicKeyPem: keys.publicKeyPem };
}

async function upsert(f: Fixture, orgId: string, subjectId: string, name: string, card: string) {
  const bytes = await f.sink.sendCommand(f.signer, orgId, 'dev-p1', {
    subjectUpsert: { subjectId, displayName: name, minor: false, consents: [{ kind: ConsentKind.CONSENT_KIND_BIOMETRIC }], credentials: [{ kind: CredentialKind.CREDENTIAL_KIND_CARD, value: card }] },
  });
  const { result } = await f.sink.waitForResult(f.signer.lastCounter);
  expect(result.code, result.reason).toBe(ResultCode.RESULT_CODE_OK);
  return bytes;
}

describe('privacy over the command path', () => {
  it('a broker sniffer sees no template byte anywhere, and no name or card number from the device', async () => {
    const f = await setup();
    const seen: { topic: string; payload: Buffer }[] = [];
    const sniffer = await mqtt.connectAsync(f.broker.url, { clientId: 'sniffer', protocolVersion: 4 });
    cleanups.push(() => sniffer.endAsync(true));
    sniffer.on('message', (topic, payload) => seen.push({ topic, payload: Buffer.from(payload) }));
    await sniffer.subscribeAsync('#', { qos: 1 });

    const people = Array.from({ length: 6 }, (_, i) => ({ org: i % 2 ? 'org-a' : 'org-b', id: `s-${i}`, name: `Name-${randomBytes(6).toString('hex')}`, card: String(7_000_000_000 + i * 7919), marker: randomBytes(32) }));
    for (const p of people) {
      await upsert(f, p.org, p.id, p.name, p.card);
      await f.agent.privacy!.vault.enrolTemplate(p.org, p.id, 'fingerprint', 0, Buffer.concat([randomBytes(100), p.marker, randomBytes(100)]));
      await f.agent.punch({ orgId: p.org, subjectId: p.id, method: PunchMethod.PUNCH_METHOD_FINGERPRINT });
    }
    await f.sink.waitForPunches(people.length);
    await f.sink.sendCommand(f.signer, 'org-b', 'dev-p1', { orgWithdraw: {} });
    await f.sink.waitForResult(f.signer.lastCounter, 30_000);
    await waitUntil(() => seen.some((m) => m.topic.endsWith('/result') && m.topic.includes('org-b')), 10_000, 'sniffer saw the receipt');

    expect(seen.filter((m) => m.topic.endsWith('/punch'))).toHaveLength(people.length);
    for (const m of seen) for (const p of people) expect(m.payload.includes(p.marker), `template marker on ${m.topic}`).toBe(false);
    const fromDevice = seen.filter((m) => !m.topic.endsWith('/cmd'));
    expect(fromDevice.length).toBeGreaterThan(people.length);
    for (const m of fromDevice) {
      for (const p of people) {
        expect(m.payload.includes(Buffer.from(p.name)), `name on ${m.topic}`).toBe(false);
        expect(m.payload.includes(Buffer.from(p.card)), `card number on ${m.topic}`).toBe(false);
      }
    }
  });

  it('a captured command replayed on the broker is refused as REPLAYED and changes nothing', async () => {
    const f = await setup();
    const captured = await upsert(f, 'org-a', 's-1', 'Alice Example', '123456789');
    await f.sink.sendCommand(f.signer, 'org-a', 'dev-p1', { subjectErase: { subjectId: 's-1' } });
    const erase = await f.sink.waitForResult(f.signer.lastCounter, 30_000);
    expect(erase.result.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(await f.agent.privacy!.vault.subjectIds('org-a')).toEqual([]);

    const resultsBefore = f.sink.commandResults().length;
    await f.sink.sendRaw('org-a', 'dev-p1', captured); // an attacker on the broker replays the old upsert
    await waitUntil(() => f.sink.commandResults().length > resultsBefore, 10_000, 'result of the replay');
    const replay = f.sink.commandResults().at(-1)!;
    expect(replay.code).toBe(ResultCode.RESULT_CODE_REPLAYED);
    expect(await f.agent.privacy!.vault.subjectIds('org-a')).toEqual([]); // the erased subject did not come back

    // A forged command (signed by someone else's key) is refused too.
    const forger = new CommandSigner({ keyId: 'cloud-test', startCounter: Date.now() * 2 });
    await f.sink.sendCommand(forger, 'org-a', 'dev-p1', { orgWithdraw: {} });
    await waitUntil(() => f.sink.commandResults().length > resultsBefore + 1, 10_000, 'result of the forgery');
    expect(f.sink.commandResults().at(-1)!.code).toBe(ResultCode.RESULT_CODE_BAD_SIGNATURE);
    expect(verifyCommandResult(f.sink.rawResults().at(-1)!.raw, createPublicKey(f.publicKeyPem))).toBe(true);
  });

  it('only served organisations: a signed command for another org creates nothing; ServedOrgsSet retires one, which survives a restart and is erased only by OrgWithdraw', async () => {
    const f = await setup();
    await upsert(f, 'org-b', 'b-1', 'Bea Example', '4000777001');
    // A validly signed command for an org this device does not serve: refused, no key, no data, answered on the operating org.
    await f.sink.sendCommand(f.signer, 'org-c', 'dev-p1', { subjectUpsert: { subjectId: 'c-1', displayName: 'Cy Example', credentials: [{ kind: CredentialKind.CREDENTIAL_KIND_CARD, value: '4000777002' }] } });
    const refused = await f.sink.waitForResult(f.signer.lastCounter);
    expect({ code: refused.result.code, reason: refused.result.reason }).toEqual({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'org_not_served' });
    expect(refused.topic).toBe('tallybox/v1/org-a/dev-p1/result');
    expect(await f.agent.privacy!.vault.orgs()).not.toContain('org-c');
    expect(await f.agent.privacy!.vault.keyVersion('org-c')).toBeUndefined();

    // The operating org drops org-b: its own signed result carries the list now in force.
    await f.sink.sendCommand(f.signer, 'org-a', 'dev-p1', { servedOrgsSet: { orgIds: ['org-a'] } });
    const set = await f.sink.waitForResult(f.signer.lastCounter);
    expect(set.result).toMatchObject({ code: ResultCode.RESULT_CODE_OK, reason: 'served_orgs_set' });
    expect(set.result.servedOrgs).toMatchObject({ served: ['org-a'], retired: ['org-b'] });
    expect(verifyCommandResult(set.raw, createPublicKey(f.publicKeyPem))).toBe(true);
    const view = servedVaultView(f.agent.privacy!.vault, f.agent.servedOrgs);
    expect(await view.identifyCredential('card', '4000777001')).toEqual([]);
    await f.sink.sendCommand(f.signer, 'org-b', 'dev-p1', { subjectUpsert: { subjectId: 'b-2', displayName: 'Bo Example' } });
    expect((await f.sink.waitForResult(f.signer.lastCounter)).result.reason).toBe('org_not_served');
    expect(await f.agent.privacy!.vault.subjectIds('org-b')).toEqual(['b-1']); // kept, unreachable

    // A restart keeps the cloud's list, not the config's [org-a, org-b].
    await f.agent.stop();
    const again = await Agent.start({ config: validateConfig(f.configInput), logger: silentLogger() });
    cleanups.push(() => again.stop());
    expect(again.servedOrgs.snapshot()).toEqual({ served: ['org-a'], retired: ['org-b'] });
    await waitUntil(() => again.session !== undefined, 10_000, 'online again');
    await f.sink.sendCommand(f.signer, 'org-b', 'dev-p1', { orgWithdraw: { reason: 'closed' } });
    const w = await f.sink.waitForResult(f.signer.lastCounter, 30_000);
    expect(w.result).toMatchObject({ code: ResultCode.RESULT_CODE_OK, reason: 'org_withdrawn' });
    expect(w.topic).toBe('tallybox/v1/org-b/dev-p1/result');
    expect(await again.privacy!.vault.orgs()).not.toContain('org-b');
    expect(again.servedOrgs.snapshot()).toEqual({ served: ['org-a'], retired: [] });
  });

  it('tallybox purge erases while offline; the signed receipt reaches the cloud on the next connection', async () => {
    const f = await setup();
    await upsert(f, 'org-a', 's-1', 'Bob Example', '555000111');
    const marker = randomBytes(32);
    await f.agent.privacy!.vault.enrolTemplate('org-a', 's-1', 'fingerprint', 0, Buffer.concat([marker, randomBytes(200)]));
    const file = writeConfig(f.dir, f.configInput as never);

    // Refused while the agent runs on the same data.
    const busy = spawnSync(process.execPath, [CLI, 'purge', '--org', 'org-a', '--config', file, '--yes'], { encoding: 'utf8' });
    expect(busy.status).toBe(1);
    expect(busy.stderr).toMatch(/AGENT_RUNNING/);

    await f.agent.stop();
    const r = spawnSync(process.execPath, [CLI, 'purge', '--org', 'org-a', '--config', file, '--yes'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim()) as { purged: boolean; scanHits: number };
    expect(out).toMatchObject({ purged: true, scanHits: 0 });

    const again = await Agent.start({ config: validateConfig(f.configInput), logger: silentLogger() });
    cleanups.push(() => again.stop());
    expect(await again.privacy!.vault.orgs()).not.toContain('org-a');
    await waitUntil(() => f.sink.commandResults().some((x) => x.reason === 'local_purge'), 15_000, 'queued receipt delivered');
    const delivered = f.sink.rawResults().find((x) => x.result.reason === 'local_purge')!;
    expect(verifyCommandResult(delivered.raw, createPublicKey(f.publicKeyPem))).toBe(true);
    const receipt = verifyErasureReceipt(JSON.parse(Buffer.from(delivered.result.receipt).toString('utf8')) as SignedErasureReceipt, f.publicKeyPem);
    expect(receipt).toMatchObject({ kind: 'org_withdrawal', orgId: 'org-a', ok: true });
    expect(JSON.stringify(receipt)).not.toMatch(/s-1|Bob/);
  });

  it('an enrolment invitation without the needed consent is refused as the command result, with the reason', async () => {
    const f = await setup();
    const invited: string[] = [];
    f.agent.onSubjectChanged((org, id, modalities) => invited.push(`${org}/${id}:${modalities.join(',')}`));
    const cases: [string, Record<string, unknown>, number, string][] = [
      ['s-none', { minor: false, consents: [] }, ResultCode.RESULT_CODE_REFUSED, 'consent_missing'],
      ['s-minor', { minor: true, consents: [{ kind: ConsentKind.CONSENT_KIND_BIOMETRIC }] }, ResultCode.RESULT_CODE_REFUSED, 'guardian_consent_missing'],
      ['s-ok', { minor: true, consents: [{ kind: ConsentKind.CONSENT_KIND_BIOMETRIC }, { kind: ConsentKind.CONSENT_KIND_GUARDIAN }] }, ResultCode.RESULT_CODE_OK, ''],
    ];
    for (const [subjectId, body, code, reason] of cases) {
      await f.sink.sendCommand(f.signer, 'org-a', 'dev-p1', { subjectUpsert: { subjectId, displayName: `Name ${subjectId}`, enrol: [Modality.MODALITY_FINGERPRINT], ...body } });
      const { result } = await f.sink.waitForResult(f.signer.lastCounter);
      expect({ subjectId, code: result.code, reason: result.reason }).toEqual({ subjectId, code, reason });
    }
    // Only the consented subject was handed to the device roles for enrolment.
    expect(invited).toEqual(['org-a/s-ok:fingerprint']);
  });

  it('tallybox provision creates 0600 keys once and refuses to overwrite them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-prov-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = writeConfig(dir, {
      version: 1,
      device: { id: 'd-prov', kind: 'm1', orgId: 'o' },
      region: 'cn',
      dataDir: join(dir, 'data'),
      broker: { url: 'mqtts://mqtt.cn.tallybox.cloud:8883' },
      vault: { kekFile: join(dir, 'keys', 'tallybox.kek') },
    });
    const first = spawnSync(process.execPath, [CLI, 'provision', '--config', file], { encoding: 'utf8' });
    expect(first.status, first.stderr).toBe(0);
    const info = JSON.parse(first.stdout) as { keyId: string; publicKeyPem: string; kekFile: string; identityFile: string };
    expect(info.publicKeyPem).toMatch(/BEGIN PUBLIC KEY/);
    expect(statSync(info.kekFile).mode & 0o777).toBe(0o600);
    expect(statSync(info.identityFile).mode & 0o777).toBe(0o600);
    const second = spawnSync(process.execPath, [CLI, 'provision', '--config', file], { encoding: 'utf8' });
    expect(second.status).toBe(78); // a key error is a configuration error (issue 8 §5)
    expect(second.stderr).toMatch(/KEY_FILE_EXISTS/);
  });

  it('demo --scenario withdraw --json ends with a verified receipt, zero scan hits and the other org intact', () => {
    const r = spawnSync(process.execPath, [CLI, 'demo', '--scenario', 'withdraw', '--json'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
    expect(summary).toMatchObject({ receiptVerified: true, resultVerified: true, scanHits: 0, otherOrgIntact: true });
  }, 60_000);
});
