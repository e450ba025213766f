/**
 * `tallybox run` on m1 and m2 configs, as systemd would start it: the agent
 * process opens the simulated module on its pseudo-terminal by path, exactly
 * as it would /dev/ttyS1, and reports it online in its DeviceState.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { startFaceSimulator } from '../../simulators/face/main.js';
import { startFingerprintSimulator } from '../../simulators/fingerprint/simulator.js';
import { AgentProcess, writeConfig } from '../helpers/agent-process.js';
import { freePort, waitUntil } from '../helpers/ports.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function runWith(kind: 'm1' | 'm2', section: Record<string, unknown>, dir: string, extra: Record<string, unknown> = {}) {
  const broker = await startEmbeddedBroker();
  cleanups.push(() => broker.close());
  const dataDir = join(dir, 'data');
  const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
  const apiPort = await freePort();
  const file = writeConfig(dir, {
    version: 1,
    device: { id: `run-${kind}`, kind, orgId: 'org-a' },
    region: 'sg',
    dataDir,
    broker: { url: broker.url, allowLoopback: true },
    vault: { kekFile: keys.kekPath },
    punchApi: { enabled: true, port: apiPort },
    clock: { source: 'assume-synced' },
    [kind]: section,
    ...extra,
  });
  const agent = new AgentProcess(file, apiPort);
  cleanups.push(() => agent.kill('SIGTERM'));
  await agent.start();
  return { agent, apiPort };
}

async function peripherals(port: number): Promise<{ name: string; online: boolean; detail: string }[]> {
  const s = (await (await fetch(`http://127.0.0.1:${port}/v1/state`)).json()) as { peripherals?: { name: string; online: boolean; detail: string }[] };
  return s.peripherals ?? [];
}

describe('tallybox run with a device role', () => {
  it('m1: opens the fingerprint module by path and reports it online', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-run-m1-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sim = await startFingerprintSimulator({ link: join(dir, 'ttyFP') });
    cleanups.push(() => sim.close());
    const { apiPort } = await runWith('m1', { port: join(dir, 'ttyFP') }, dir);
    await waitUntil(async () => (await peripherals(apiPort)).some((p) => p.name === 'fingerprint' && p.online), 15_000, 'fingerprint online');
  });

  it('m2 with a fingerprint module too: opens both by path and reports both online', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-run-m2-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sim = await startFaceSimulator({ link: join(dir, 'ttyFace'), people: 10 });
    cleanups.push(() => sim.close());
    const fp = await startFingerprintSimulator({ link: join(dir, 'ttyFP') });
    cleanups.push(() => fp.close());
    const { apiPort } = await runWith('m2', { bridge: { port: join(dir, 'ttyFace') } }, dir, { m1: { port: join(dir, 'ttyFP') } });
    await waitUntil(async () => (await peripherals(apiPort)).some((p) => p.name === 'face' && p.online), 15_000, 'face module online');
    await waitUntil(async () => (await peripherals(apiPort)).some((p) => p.name === 'fingerprint' && p.online), 15_000, 'fingerprint module online');
    expect((await peripherals(apiPort)).find((p) => p.name === 'face')?.detail ?? '').not.toMatch(/[A-Z][a-z]+ [A-Z][a-z]+/); // no names
  });
});
