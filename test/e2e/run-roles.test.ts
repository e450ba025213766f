/**
 * `tallybox run` on m1 and m2 configs, as systemd would start it: the agent
 * process opens the simulated module on its pseudo-terminal by path, exactly
 * as it would /dev/ttyS1, and reports it online in its DeviceState.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { keyProviderFor } from '../../src/agent/privacy.js';
import { PunchMethod } from '../../src/proto/index.js';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { Vault } from '../../src/vault/vault.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { startFaceSimulator } from '../../simulators/face/main.js';
import { startFingerprintSimulator } from '../../simulators/fingerprint/simulator.js';
import { AgentProcess, writeConfig } from '../helpers/agent-process.js';
import { freePort, waitUntil } from '../helpers/ports.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function runWith(kind: 'm1' | 'm2', section: Record<string, unknown>, dir: string, extra: Record<string, unknown> = {}, before?: (vault: Vault) => Promise<void>) {
  const broker = await startEmbeddedBroker();
  cleanups.push(() => broker.close());
  const sink = await CloudSink.connect({ url: broker.url });
  cleanups.push(() => sink.close());
  const dataDir = join(dir, 'data');
  const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
  if (before) {
    // What a SubjectUpsert would have stored, written before the agent owns the vault.
    const vault = await Vault.open({ dataDir, keyProvider: keyProviderFor({ keyProvider: 'file', kekFile: keys.kekPath } as Parameters<typeof keyProviderFor>[0]) });
    try {
      await before(vault);
    } finally {
      await vault.close();
    }
  }
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
  return { agent, apiPort, sink };
}

const SIM_CLI = resolve(import.meta.dirname, '../../dist/simulators/cli.js');

/** `tallybox-sim card --serve PATH` in its own process; resolves with its control URL. */
async function cardSimulator(socket: string): Promise<{ control: (path: string, body?: unknown) => Promise<Record<string, unknown>> }> {
  const child = spawn(process.execPath, [SIM_CLI, 'card', '--serve', socket], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => new Promise<void>((r) => (child.exitCode !== null ? r() : (child.once('exit', () => r()), child.kill('SIGTERM')))));
  const line = await new Promise<string>((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', res);
    child.once('exit', (code) => rej(new Error(`card simulator exited with ${code}`)));
  });
  const ready = JSON.parse(line) as { ready: boolean; socket: string; control: string };
  return {
    control: async (path, body) => (await (await fetch(ready.control + path, { method: path === '/state' ? 'GET' : 'POST', ...(body ? { body: JSON.stringify(body) } : {}) })).json()) as Record<string, unknown>,
  };
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

  it('m2 card reader in another process (tallybox-sim card --serve): swipes punch; unplug and hang go offline, replug comes back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-run-card-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const socket = join(dir, 'card.sock');
    const sim = await cardSimulator(socket);
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    const CARD = '0004211234';
    const { apiPort, sink } = await runWith(
      'm2',
      // No face module on this terminal's port: the face peripheral is offline, the card reader works on its own.
      { bridge: { port: join(dir, 'no-face-module') }, cardReader: { device: socket }, repeatWindowSec: 0, backoff: { minMs: 50, maxMs: 300 }, heartbeatMs: 200 },
      dir,
      {},
      async (vault) => {
        await vault.upsertSubject('org-a', { subjectId: 'sub-card', displayName: 'Card Holder', minor: false, consents: [] });
        await vault.putCredential('org-a', 'card', CARD, 'sub-card');
      },
    );
    // GET /v1/state leaves out false fields today (issue 8 §5): offline is "not online".
    const reader = async () => (await peripherals(apiPort)).find((p) => p.name === 'card-reader');
    await waitUntil(async () => (await reader())?.online === true, 15_000, 'card reader online');
    expect((await reader())!.detail).toBe(`hid-socket:${socket}`);
    const cardPunches = () => sink.punches().filter((p) => p.method === PunchMethod.PUNCH_METHOD_CARD).length;

    expect(await sim.control('/swipe', { card: CARD })).toMatchObject({ ok: true });
    await waitUntil(() => cardPunches() === 1, 10_000, 'a CARD punch at the cloud');

    await sim.control('/unplug');
    await waitUntil(async () => (await reader())?.online !== true, 10_000, 'card reader offline after unplug');
    await sim.control('/replug');
    await waitUntil(async () => (await reader())?.online === true, 10_000, 'card reader online after replug');
    await sim.control('/swipe', { card: CARD });
    await waitUntil(() => cardPunches() === 2, 10_000, 'a second CARD punch');

    await sim.control('/hang');
    await waitUntil(async () => (await reader())?.online !== true, 10_000, 'card reader offline after a silent loss (heartbeat)');
    await sim.control('/replug');
    await waitUntil(async () => (await reader())?.online === true, 10_000, 'card reader online again');
    await sim.control('/swipe', { card: CARD });
    await waitUntil(() => cardPunches() === 3, 10_000, 'a third CARD punch');
    expect(sink.punches().every((p) => p.subjectId === 'sub-card')).toBe(true);
  });
});
