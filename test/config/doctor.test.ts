/** `tallybox doctor`: each problem IT can meet is named, with the fix. */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';

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
  afterAll(async () => {
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function setup(name: string) {
    const base = join(dir, name);
    const dataDir = join(base, 'data');
    mkdirSync(dataDir, { recursive: true });
    const keys = await provisionKeyFiles({ kekPath: join(base, 'keys', 'tallybox.kek'), dataDir });
    const file = writeConfig(base, { version: 1, device: { id: 'doc-1', kind: 'm1', orgId: 'o' }, region: 'sg', dataDir, broker: { url: broker.url, allowLoopback: true }, vault: { kekFile: keys.kekPath }, clock: { source: 'assume-synced' } });
    return { file, dataDir, keys };
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
});
