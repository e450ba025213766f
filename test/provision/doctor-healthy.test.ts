/**
 * `tallybox doctor` on a healthy device made the way IT makes one (issue 11 §4):
 * provisioned by claim, run, a punch delivered. Every check must then be
 * truthful: no failure, no "undefined" or empty detail, each database
 * quick_check'd ok, the keys read, the pinned command key counted, the broker
 * reached, the running agent's pid named — and the clock reported as what it
 * is on this machine (synchronised only if timesyncd says so).
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { ClaimService } from '../../simulators/cloud/claims.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { provisionByClaim } from '../../src/provision/claim.js';
import { AgentProcess, CLI, postPunch } from '../helpers/agent-process.js';
import { freePort, waitUntil } from '../helpers/ports.js';

interface Report {
  ok: boolean;
  checks: { name: string; verdict: 'ok' | 'warn' | 'fail'; detail: string }[];
}
/** Asynchronous: the broker runs in this process, and a blocking spawn would stop it answering. */
const doctor = (config: string): Promise<{ status: number | null; report: Report }> =>
  new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'doctor', '--config', config, '--json'], { encoding: 'utf8', timeout: 60_000 }, (err, stdout) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, report: JSON.parse(stdout) as Report });
    });
  });

describe('doctor on a healthy device provisioned by claim', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-doctor-claim-'));
  let broker: EmbeddedBroker;
  let service: ClaimService;
  let sink: CloudSink;
  beforeAll(async () => {
    broker = await startEmbeddedBroker();
    service = new ClaimService({ privateKey: generateKeyPairSync('ed25519').privateKey, keyId: 'cloud-sim' });
    await service.connect(broker.url);
    sink = await CloudSink.connect({ url: broker.url });
  });
  afterAll(async () => {
    await sink.close();
    await service.close();
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports no failure and nothing untrue, while the agent runs and after it stopped', async () => {
    const issued = service.issue({ deviceId: 'dev-healthy', kind: 'sim', region: 'sg', servedOrgs: ['org-a'] });
    const [id, publicKey] = issued.cloudKey.split(':') as [string, string];
    const apiPort = await freePort();
    const p = await provisionByClaim({ claimCode: issued.code, region: 'sg', brokerUrl: broker.url, allowLoopback: true, outDir: join(dir, 'etc'), dataDir: join(dir, 'data'), cloudKey: { id, publicKey }, punchApiPort: apiPort });

    const agent = new AgentProcess(p.configFile, apiPort);
    await agent.start();
    let running: Report;
    try {
      const punch = await postPunch(apiPort, { orgId: 'org-a', subjectId: 's-1', method: 'PIN' });
      expect(punch.status).toBe('accepted');
      await waitUntil(() => sink.stats().received >= 1, 15_000, 'punch delivered');
      const d = await doctor(p.configFile);
      running = d.report;
      expect(d.status, JSON.stringify(running.checks)).toBe(0);
    } finally {
      await agent.kill('SIGTERM');
    }
    const stopped = await doctor(p.configFile);
    expect(stopped.status, JSON.stringify(stopped.report.checks)).toBe(0);

    for (const report of [running, stopped.report]) {
      expect(report.ok).toBe(true);
      for (const c of report.checks) {
        expect(c.verdict, `${c.name}: ${c.detail}`).not.toBe('fail');
        expect(c.detail, c.name).not.toMatch(/undefined|NaN|\[object/);
        expect(c.detail.length, c.name).toBeGreaterThan(5);
      }
      const by = new Map(report.checks.map((c) => [c.name, c]));
      expect(by.get('config')?.detail).toMatch(/valid \(device dev-healthy, sim, region sg\)/);
      // Every database the agent made is checked, and each passes.
      const dbs = ['outbox.db', 'vault.db', 'commands.db'].filter((f) => existsSync(join(dir, 'data', f)));
      expect(dbs).toContain('outbox.db');
      for (const db of dbs) expect(by.get(db), db).toEqual({ name: db, verdict: 'ok', detail: 'readable, quick_check ok' });
      expect(by.get('keys')).toMatchObject({ verdict: 'ok', detail: `KEK and identity readable, permissions ok; identity ${p.keyId}` });
      expect(by.get('commands')).toMatchObject({ verdict: 'ok', detail: '1 cloud command key(s) pinned' });
      expect(by.get('broker')).toMatchObject({ verdict: 'ok' });
      expect(by.get('broker-tls')).toMatchObject({ verdict: 'ok' });
      expect(by.get('data-dir-perms')).toMatchObject({ verdict: 'ok' });
      expect(by.get('file-perms')).toMatchObject({ verdict: 'ok' });
      expect(by.get('disk')?.verdict).not.toBe('fail');
      // The clock as it is here: synchronised only when systemd-timesyncd has said so.
      const synced = existsSync('/run/systemd/timesync/synchronized');
      expect(by.get('clock')?.verdict).toBe(synced ? 'ok' : 'warn');
    }
    expect(new Map(running.checks.map((c) => [c.name, c])).get('agent')?.detail).toMatch(/^running \(pid \d+\)$/);
    expect(new Map(stopped.report.checks.map((c) => [c.name, c])).get('agent')?.detail).toBe('not running');
  }, 90_000);
});

describe('doctor and systemd credentials (the packaged device)', () => {
  it('outside the unit: keys not checked, said as a warning, not a failure; inside (CREDENTIALS_DIRECTORY): checked', async () => {
    const { mkdirSync, copyFileSync, writeFileSync } = await import('node:fs');
    const { dump } = await import('js-yaml');
    const { provisionKeyFiles } = await import('../../src/vault/keys.js');
    const dir = mkdtempSync(join(tmpdir(), 'tbx-doctor-creds-'));
    try {
      const keys = await provisionKeyFiles({ kekPath: join(dir, 'etc', 'tallybox.kek'), dataDir: join(dir, 'data') });
      const config = join(dir, 'etc', 'tallybox.yaml');
      writeFileSync(
        config,
        dump({
          version: 1,
          device: { id: 'dev-c', kind: 'sim', orgId: 'org-a' },
          region: 'sg',
          dataDir: join(dir, 'data'),
          broker: { url: 'mqtt://127.0.0.1:1', allowLoopback: true, connectTimeoutMs: 300 },
          vault: { keyProvider: 'systemd-credentials' },
        }),
      );
      const run = (env: NodeJS.ProcessEnv) => new Promise<Report>((resolve) => execFile(process.execPath, [CLI, 'doctor', '--config', config, '--json'], { encoding: 'utf8', env }, (_e, out) => resolve(JSON.parse(out) as Report)));
      const { CREDENTIALS_DIRECTORY: _c, ...env } = process.env;
      const outside = (await run(env)).checks.find((c) => c.name === 'keys');
      expect(outside).toMatchObject({ verdict: 'warn', detail: expect.stringMatching(/visible only inside the service/) });
      // As systemd lays them out: a private directory holding tallybox-kek and tallybox-identity.
      const creds = join(dir, 'creds');
      mkdirSync(creds, { mode: 0o700 });
      copyFileSync(keys.kekPath, join(creds, 'tallybox-kek'));
      copyFileSync(keys.identityPath, join(creds, 'tallybox-identity'));
      const inside = (await run({ ...env, CREDENTIALS_DIRECTORY: creds })).checks.find((c) => c.name === 'keys');
      expect(inside).toEqual({ name: 'keys', verdict: 'ok', detail: `KEK and identity readable, permissions ok; identity ${keys.keyId}` });
      // And a missing credential inside the unit is a failure.
      rmSync(join(creds, 'tallybox-kek'));
      const missing = (await run({ ...env, CREDENTIALS_DIRECTORY: creds })).checks.find((c) => c.name === 'keys');
      expect(missing).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/^KEY_FILE_MISSING: /) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
