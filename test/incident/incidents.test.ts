/**
 * Issue 14 §2: each incident kind — PURGE_INCOMPLETE, AUTH_FAILURES,
 * KEY_FILE_CHANGED, STORAGE_LOST, TAMPER, KEY_FILE_MISSING — produces exactly
 * one durable record, which survives restarts (the same condition seen again
 * is the same record), is re-sent on the incident topic at every connection
 * until the cloud acknowledges it with a signed IncidentAck, and is listed by
 * `tallybox doctor` while open.
 */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig, type Config } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { IncidentStore, type IncidentKindName } from '../../src/incident/store.js';
import { IncidentKind, ResultCode } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { DEFAULT_IDENTITY_FILE, provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { IncidentDesk } from '../../simulators/cloud/incidents.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';
import { waitUntil } from '../helpers/ports.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function fixture() {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-incident-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const broker = await startEmbeddedBroker();
  cleanups.push(() => broker.close());
  const signer = new CommandSigner({ keyId: 'cloud-test' });
  const sink = await CloudSink.connect({ url: broker.url });
  cleanups.push(() => sink.close());
  const desk = await IncidentDesk.connect({ url: broker.url, sink, signer });
  cleanups.push(() => desk.close());
  const dataDir = join(dir, 'data');
  const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
  const input: ConfigInput = {
    version: 1,
    device: { id: 'dev-inc', kind: 'sim', orgId: 'org-a', servedOrgs: ['org-a', 'org-b'] },
    region: 'sg',
    dataDir,
    broker: { url: broker.url, allowLoopback: true, reconnectMinMs: 50, reconnectMaxMs: 300 },
    vault: { kekFile: keys.kekPath },
    cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
    clock: { source: 'assume-synced' },
    privacy: { purgeRetryMinSec: 0.2, purgeRetryMaxSec: 1 },
    incidents: { authFailures: 5, authWindowSec: 600, resendSec: 1, checkSec: 0.1 },
    log: { level: 'silent' },
  };
  const config: Config = validateConfig(input);
  let running: Agent | undefined;
  const start = async () => {
    running = await Agent.start({ config, logger: silentLogger() });
    const a = running;
    cleanups.push(() => a.stop());
    await waitUntil(() => a.session !== undefined, 15_000, 'online');
    return a;
  };
  const records = async () => {
    const s = await IncidentStore.open(dataDir);
    try {
      return await s.all();
    } finally {
      await s.close();
    }
  };
  const kinds = async () => (await records()).map((r) => r.kind).sort();
  return { dir, dataDir, broker, signer, sink, desk, config, input, keys, start, records, kinds, agent: () => running! };
}

const KIND: Record<string, IncidentKindName> = {
  [IncidentKind.INCIDENT_KIND_TAMPER]: 'TAMPER',
  [IncidentKind.INCIDENT_KIND_STORAGE_LOST]: 'STORAGE_LOST',
  [IncidentKind.INCIDENT_KIND_KEY_FILE_CHANGED]: 'KEY_FILE_CHANGED',
  [IncidentKind.INCIDENT_KIND_AUTH_FAILURES]: 'AUTH_FAILURES',
  [IncidentKind.INCIDENT_KIND_PURGE_INCOMPLETE]: 'PURGE_INCOMPLETE',
};

describe('incident records', () => {
  it('one durable record per occurrence of each kind, re-sent until acknowledged, listed by doctor', async () => {
    const f = await fixture();
    let a = await f.start();

    // PURGE_INCOMPLETE: a participant that cannot erase; the retries (same purge job) add no record.
    a.registerErasureParticipant({ name: 'stuck-flash', eraseOrg: async () => ({ ok: false, counts: {} }), eraseSubject: async () => ({ ok: false, counts: {} }) });
    await a.privacy!.vault.upsertSubject('org-b', { subjectId: 'sub-1', displayName: 'Someone', minor: false, consents: [] });
    const o = await a.privacy!.purger.withdrawOrg('org-b');
    expect(o.ok).toBe(false);
    await waitUntil(async () => (await f.kinds()).includes('PURGE_INCOMPLETE'), 10_000, 'PURGE_INCOMPLETE recorded');

    // AUTH_FAILURES: forged commands (another key under the pinned key id); a burst is one record.
    const forger = new CommandSigner({ keyId: 'cloud-test', startCounter: Date.now() * 2 });
    for (let i = 0; i < 8; i++) await f.sink.sendCommand(forger, 'org-a', 'dev-inc', { ping: { note: 'x' } });
    await waitUntil(async () => (await f.kinds()).includes('AUTH_FAILURES'), 15_000, 'AUTH_FAILURES recorded');
    await waitUntil(() => f.desk.incidents().length >= 2, 10_000, 'both reported on the incident topic');
    await a.punch({ orgId: 'org-a', subjectId: 'p', method: 1 });
    await a.stop();

    // KEY_FILE_CHANGED: the identity key replaced behind the agent's back. STORAGE_LOST: the outbox file lost.
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(f.dir, 'keys', DEFAULT_IDENTITY_FILE), privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600 });
    for (const s of ['', '-wal', '-shm']) rmSync(join(f.dataDir, `outbox.db${s}`), { force: true });
    a = await f.start();
    await waitUntil(async () => (await f.kinds()).includes('KEY_FILE_CHANGED'), 10_000, 'KEY_FILE_CHANGED recorded');
    await waitUntil(async () => (await f.kinds()).includes('STORAGE_LOST'), 10_000, 'STORAGE_LOST recorded');

    // TAMPER.
    await a.zeroise('case opened');
    await waitUntil(async () => (await f.kinds()).includes('TAMPER'), 10_000, 'TAMPER recorded');
    await a.stop();

    // Restart: every condition still there (zeroised, loss range, purge) is the same record, and all are re-sent.
    const before = new Map(f.desk.incidents().map((i) => [i.incidentId, i.received]));
    a = await f.start();
    await new Promise((r) => setTimeout(r, 500));
    const kinds = await f.kinds();
    expect(kinds).toEqual(['AUTH_FAILURES', 'KEY_FILE_CHANGED', 'PURGE_INCOMPLETE', 'STORAGE_LOST', 'TAMPER']);
    const recs = await f.records();
    expect(new Set(recs.map((r) => r.seq)).size).toBe(recs.length);
    for (const r of recs) expect(JSON.stringify(r)).not.toMatch(/sub-1|Someone/); // counts and org ids only
    expect(recs.find((r) => r.kind === 'PURGE_INCOMPLETE')!.orgIds).toEqual(['org-b']);
    await waitUntil(() => recs.every((r) => (f.desk.incidents().find((i) => i.incidentId === r.id)?.received ?? 0) > (before.get(r.id) ?? 0)), 15_000, 're-sent after the restart');
    for (const i of f.desk.incidents()) expect(KIND[i.kind]).toBe(recs.find((r) => r.id === i.incidentId)!.kind);

    // Doctor lists the open ones.
    const cfgFile = writeConfig(f.dir, f.input);
    const doc = spawnSync(process.execPath, [CLI, 'doctor', '--config', cfgFile, '--json'], { encoding: 'utf8', timeout: 60_000 });
    const listed = (JSON.parse(doc.stdout) as { checks: Array<{ name: string; detail: string }> }).checks.filter((c) => c.name === 'incident');
    expect(listed).toHaveLength(recs.length);
    for (const r of recs) expect(listed.some((c) => c.detail.includes(r.id) && c.detail.includes(r.kind))).toBe(true);

    // Acknowledged (signed IncidentAck): closed, durably, and no longer sent.
    await f.desk.ack('org-a', 'dev-inc');
    const ack = await f.sink.waitForResult(f.signer.lastCounter, 15_000);
    expect(ack.result.code, ack.result.detail).toBe(ResultCode.RESULT_CODE_OK);
    await waitUntil(async () => (await f.records()).every((r) => r.ackedAtMs !== null), 10_000, 'all acknowledged');
    await a.stop();
    a = await f.start();
    const after = new Map(f.desk.incidents().map((i) => [i.incidentId, i.received]));
    await new Promise((r) => setTimeout(r, 2500)); // longer than resendSec: an open record would have come again
    for (const i of f.desk.incidents()) expect(i.received).toBe(after.get(i.incidentId));
    const doc2 = spawnSync(process.execPath, [CLI, 'doctor', '--config', cfgFile, '--json'], { encoding: 'utf8', timeout: 60_000 });
    expect((JSON.parse(doc2.stdout) as { checks: Array<{ name: string }> }).checks.filter((c) => c.name === 'incident')).toHaveLength(0);
  }, 240_000);

  it('KEY_FILE_MISSING: a vanished key file is recorded even though the start then fails, once across restarts', async () => {
    const f = await fixture();
    const a = await f.start();
    await a.stop();
    rmSync(join(f.dir, 'keys', DEFAULT_IDENTITY_FILE));
    await expect(Agent.start({ config: f.config, logger: silentLogger() })).rejects.toThrow();
    await expect(Agent.start({ config: f.config, logger: silentLogger() })).rejects.toThrow();
    expect(await f.kinds()).toEqual(['KEY_FILE_MISSING']);
  }, 120_000);
});
