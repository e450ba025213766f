/**
 * The cloud emulator's print hook as a developer uses it: `tallybox-sim cloud --print-docs
 * --device-key ID=PEM` (its own process, on the test's broker) signs and sends print jobs posted to
 * POST /api/print (inline, or a file it serves over HTTPS with its own CA) to a real `tallybox run`
 * print box, and GET /api/print shows each job's newest status with its erasure receipt verified.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { writeConfig } from '../helpers/agent-process.js';
import { freePort, waitUntil } from '../helpers/ports.js';
import { DEVICE, document, ORG, p1World, SIM_CLI, type P1World } from './e2e/world.js';

let w: P1World;
let cloud: ChildProcess | undefined;
let api = '';
beforeAll(async () => {
  const { privateKey } = generateKeyPairSync('ed25519');
  w = await p1World({ signer: new CommandSigner({ keyId: 'cloud-sim', privateKey }) });
  const keyFile = join(w.dir, 'cloud.key');
  writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const devKey = join(w.dir, 'device.pub.pem');
  writeFileSync(devKey, w.deviceKey.export({ type: 'spki', format: 'pem' }));
  const httpPort = await freePort();
  cloud = spawn(process.execPath, [SIM_CLI, 'cloud', '--broker-url', w.broker.url, '--http-port', String(httpPort), '--key-file', keyFile, '--print-docs', '--device-key', `${DEVICE}=${devKey}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  const caFile = await new Promise<string>((res, rej) => {
    const t = setTimeout(() => rej(new Error('cloud emulator did not start')), 60_000);
    createInterface({ input: cloud!.stderr! }).on('line', (l) => {
      const m = /p1\.fetch\.caFile: (\S+)/.exec(l);
      if (m) {
        clearTimeout(t);
        res(m[1]!);
      }
    });
  });
  api = `http://127.0.0.1:${httpPort}`;
  await waitUntil(async () => (await fetch(`${api}/api/print`).catch(() => undefined))?.ok === true, 60_000, 'cloud emulator HTTP');
  // The device trusts the emulator's document CA.
  const c = w.configInput as unknown as { p1: { fetch: Record<string, unknown> } };
  writeConfig(w.dir, { ...w.configInput, p1: { ...c.p1, fetch: { ...c.p1.fetch, caFile } } } as never);
  await w.agent.start();
  await w.commandsReady();
}, 180_000);
afterAll(async () => {
  if (cloud && cloud.exitCode === null) await new Promise<void>((r) => (cloud!.once('exit', () => r()), cloud!.kill('SIGTERM')));
  await w?.cleanup();
}, 60_000);

interface View {
  jobId: string;
  stateName: string;
  receipt?: { ok: boolean; verification: string };
}
const jobsView = async (): Promise<View[]> => ((await (await fetch(`${api}/api/print`)).json()) as { devices: Record<string, { jobs: View[] }> }).devices[DEVICE]?.jobs ?? [];
const post = async (path: string, body: unknown) => {
  const r = await fetch(api + path, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
};

describe('tallybox-sim cloud: the print hook', () => {
  it('POST /api/print sends an inline and a fetched job; both print once; GET /api/print shows them confirmed with verified receipts', async () => {
    const inline = document(8000);
    const file = join(w.dir, 'doc.bin');
    const fetched = document(200_000);
    writeFileSync(file, fetched);
    expect((await post('/api/print', { orgId: ORG, deviceId: DEVICE, jobId: 'cli-inline', printer: 'front', inline: inline.toString('base64') })).status).toBe(202);
    const f = await post('/api/print', { orgId: ORG, deviceId: DEVICE, jobId: 'cli-fetched', printer: 'front', file });
    expect(f.status).toBe(202);
    expect(f.body.fetch).toMatchObject({ size: fetched.length });
    await waitUntil(async () => (await jobsView()).filter((j) => j.stateName === 'confirmed').length === 2, 120_000, 'both confirmed');
    for (const j of await jobsView()) expect(j.receipt).toMatchObject({ ok: true, verification: 'verified' });
    expect(w.printer.printed('cli-inline').map((b) => b.equals(inline))).toEqual([true]);
    expect(w.printer.printed('cli-fetched').map((b) => b.equals(fetched))).toEqual([true]);
    // Bad requests are answered, not sent.
    expect((await post('/api/print', { orgId: ORG, deviceId: DEVICE, jobId: 'x', printer: 'front' })).status).toBe(400);
    expect((await post('/api/print/cancel', { orgId: ORG, deviceId: DEVICE, jobId: 'cli-inline' })).status).toBe(202);
  }, 240_000);
});
