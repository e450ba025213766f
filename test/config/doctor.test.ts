/** `tallybox doctor`: each problem IT can meet is named, with the fix. */
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { loadConfigFile } from '../../src/config/load.js';
import { silentLogger } from '../../src/util/log.js';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';
import { freePort } from '../helpers/ports.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

interface Report {
  ok: boolean;
  checks: { name: string; verdict: string; detail: string }[];
}

describe('tallybox doctor', () => {
  let broker: EmbeddedBroker;
  const dir = mkdtempSync(join(tmpdir(), 'tbx-doctor-'));
  beforeAll(async () => {
    broker = await startEmbeddedBroker();
  });
  // A real full disk: a 1 MiB tmpfs (needs root for the mount, as CI runs; skipped elsewhere).
  const full = mountTmpfs('tbx-doctor-full-', '1m');
  const mnt = full.dir;
  const mounted = full.mounted;
  afterAll(async () => {
    await full.dispose();
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const signer = new CommandSigner({ keyId: 'cloud-doc' });
  async function setup(name: string, opts: { dataDir?: string; brokerUrl?: string } = {}) {
    const base = join(dir, name);
    const dataDir = opts.dataDir ?? join(base, 'data');
    mkdirSync(dataDir, { recursive: true });
    const keys = await provisionKeyFiles({ kekPath: join(base, 'keys', 'tallybox.kek'), dataDir });
    const file = writeConfig(base, {
      version: 1,
      device: { id: 'doc-1', kind: 'm1', orgId: 'o' },
      region: 'sg',
      dataDir,
      broker: { url: opts.brokerUrl ?? broker.url, allowLoopback: true },
      vault: { kekFile: keys.kekPath },
      cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
      clock: { source: 'assume-synced' },
    });
    return { base, file, dataDir, keys };
  }
  /** A device that has run: outbox.db, vault.db and commands.db exist (with their -wal/-shm until checkpointed). */
  async function runOnce(file: string) {
    const agent = await Agent.start({ config: loadConfigFile(file), logger: silentLogger() });
    await agent.stop();
  }
  // Asynchronous on purpose: the broker lives in this process and must keep answering.
  const run = (file: string) =>
    new Promise<{ status: number; report: Report }>((resolve) => {
      execFile(process.execPath, [CLI, 'doctor', '--config', file, '--json'], { encoding: 'utf8', timeout: 30_000 }, (err, stdout) => {
        resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, report: JSON.parse(stdout) as Report });
      });
    });
  const verdict = (r: Report, name: string) => r.checks.find((c) => c.name === name);

  it('a healthy device: exit 0, broker connected, keys fine', async () => {
    const { file } = await setup('healthy');
    const { status, report } = await run(file);
    expect(status).toBe(0);
    expect(verdict(report, 'broker')).toMatchObject({ verdict: 'ok' });
    expect(verdict(report, 'keys')).toMatchObject({ verdict: 'ok' });
    expect(verdict(report, 'disk')).toMatchObject({ verdict: 'ok' });
  });

  it('a healthy device that has run (databases present): no failure at all, every database quick_check ok', async () => {
    const { file } = await setup('healthy-ran');
    await runOnce(file);
    const { status, report } = await run(file);
    expect(report.checks.filter((c) => c.verdict === 'fail')).toEqual([]);
    expect(status).toBe(0);
    for (const db of ['outbox.db', 'vault.db', 'commands.db']) expect(verdict(report, db), db).toMatchObject({ verdict: 'ok', detail: 'readable, quick_check ok' });
    expect(verdict(report, 'data-dir-perms')).toMatchObject({ verdict: 'ok' });
    expect(verdict(report, 'file-perms')).toMatchObject({ verdict: 'ok' });
  });

  it('a missing key file: fail, named, with how to create it', async () => {
    const { file, keys } = await setup('nokey');
    rmSync(keys.kekPath);
    const { status, report } = await run(file);
    expect(status).toBe(1);
    expect(verdict(report, 'keys')).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/^KEY_FILE_MISSING: key file .*tallybox\.kek does not exist; run `tallybox provision`/) });
  });

  it('the broker down: fail, named', async () => {
    const { file } = await setup('nobroker', { brokerUrl: `mqtt://127.0.0.1:${await freePort()}` });
    const { status, report } = await run(file);
    expect(status).toBe(1);
    expect(verdict(report, 'broker')).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/ECONNREFUSED|check the URL/) });
  });

  it('each unsafe file setting is reported: loose data directory and outbox (fixed at start), a symlink and a loose key directory (refused)', async () => {
    const { base, file, dataDir, keys } = await setup('unsafe');
    await runOnce(file);
    chmodSync(dataDir, 0o777);
    chmodSync(join(dataDir, 'outbox.db'), 0o644);
    symlinkSync(join(base, 'elsewhere'), join(dataDir, 'agent.pid'));
    chmodSync(join(base, 'keys'), 0o777);
    const { status, report } = await run(file);
    expect(status).toBe(1);
    expect(verdict(report, 'data-dir-perms')).toMatchObject({ verdict: 'warn', detail: expect.stringMatching(/mode 0777.*changes it to 0700 at start/) });
    const files = report.checks.filter((c) => c.name === 'file-perms');
    expect(files).toContainEqual({ name: 'file-perms', verdict: 'warn', detail: expect.stringMatching(/outbox\.db has mode 0644.*0600 at start/) });
    expect(files).toContainEqual({ name: 'file-perms', verdict: 'fail', detail: expect.stringMatching(/agent\.pid is a symbolic link.*refuses to start/) });
    expect(verdict(report, 'keys')).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/^KEY_FILE_INSECURE: the directory .*keys holding key file .*tallybox\.kek has mode 0777: others can replace the key/) });
    // doctor only looks: nothing was fixed
    expect(statSync(dataDir).mode & 0o777).toBe(0o777);
    expect(keys.kekPath).toBeTruthy();
  });

  it.runIf(process.getuid?.() === 0)('a file in the data directory owned by another user: fail (the agent refuses it)', async () => {
    const { file, dataDir } = await setup('foreign');
    await runOnce(file);
    chownSync(join(dataDir, 'outbox.db'), 54321, 54321);
    const { report } = await run(file);
    expect(report.checks).toContainEqual({ name: 'file-perms', verdict: 'fail', detail: expect.stringMatching(/outbox\.db is owned by uid 54321/) });
  });

  it('a corrupt tamper marker and a corrupt settings file: each a failure', async () => {
    const { file, dataDir } = await setup('state');
    writeFileSync(join(dataDir, 'zeroised.json'), 'garbage', { mode: 0o600 });
    writeFileSync(join(dataDir, 'settings.json'), '{', { mode: 0o600 });
    const { report } = await run(file);
    expect(verdict(report, 'tamper')).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/tamper marker corrupt/) });
    expect(verdict(report, 'settings')).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/^SETTINGS_CORRUPT: /) });
  });

  it('a key file others can read, and a corrupt database: each named with the fix', async () => {
    const { file, keys, dataDir } = await setup('broken');
    chmodSync(keys.kekPath, 0o644);
    writeFileSync(join(dataDir, 'outbox.db'), Buffer.alloc(4096, 7));
    const { status, report } = await run(file);
    expect(status).toBe(1);
    expect(verdict(report, 'keys')).toMatchObject({ verdict: 'fail' });
    expect(verdict(report, 'keys')!.detail).toMatch(/chmod 600/);
    expect(verdict(report, 'outbox.db')).toMatchObject({ verdict: 'fail' });
  });

  it('a broker outside the region is a failure before any connection', async () => {
    const { file } = await setup('region');
    const text = (await import('node:fs')).readFileSync(file, 'utf8').replace(/url: .*/, 'url: mqtts://mqtt.cn.tallybox.cloud:8883');
    writeFileSync(file, text);
    const { status, report } = await run(file);
    expect(status).toBe(1);
    expect(verdict(report, 'broker')!.detail).toMatch(/REGION|region/);
  });

  it.runIf(mounted)('a full disk: fail, with what happens to punches', async () => {
    const { file, dataDir } = await setup('full', { dataDir: join(mnt, 'data') });
    const free = Number(spawnSync('df', ['--output=avail', '-B1', mnt], { encoding: 'utf8' }).stdout.trim().split('\n').at(-1));
    writeFileSync(join(mnt, 'filler'), Buffer.alloc(Math.max(0, free - 4096)));
    const { status, report } = await run(file);
    expect(status).toBe(1);
    expect(verdict(report, 'disk')).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/MB free on .*DISK_FULL/) });
    expect(dataDir).toBeTruthy();
  });
});
