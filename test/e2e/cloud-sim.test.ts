/**
 * `tallybox-sim cloud` as a developer uses it: a separate process with its own
 * broker, its JSON API and event stream, driving a real agent.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { testConfig } from '../helpers/agent-config.js';
import { freePort, waitUntil } from '../helpers/ports.js';

const SIM = resolve(import.meta.dirname, '../../dist/simulators/cli.js');

describe('tallybox-sim cloud', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-cloudsim-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('receives punches from an agent and sends it signed commands through its HTTP API', async () => {
    const [port, http] = [await freePort(), await freePort()];
    const proc = spawn(process.execPath, [SIM, 'cloud', '--port', String(port), '--http-port', String(http)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    try {
      const api = `http://127.0.0.1:${http}`;
      await waitUntil(async () => (await fetch(`${api}/api/key`).catch(() => undefined))?.ok === true, 10_000, 'cloud emulator up');
      const key = (await (await fetch(`${api}/api/key`)).json()) as { id: string; publicKey: string };
      const config = validateConfig({ ...testConfig({ dataDir: join(dir, 'data'), brokerUrl: `mqtt://127.0.0.1:${port}`, deviceId: 'dev-sim-1' }), cloud: { commandKeys: [key] } });
      const agent = await Agent.start({ config, logger: silentLogger() });
      try {
        await waitUntil(() => agent.session !== undefined, 10_000, 'agent online');
        const p = await agent.punch({ orgId: 'org-a', subjectId: 's-1', method: PunchMethod.PUNCH_METHOD_PIN });
        const r = await fetch(`${api}/api/commands`, { method: 'POST', body: JSON.stringify({ orgId: 'org-a', deviceId: 'dev-sim-1', command: { ping: { note: 'hello' } } }), headers: { 'content-type': 'application/json' } });
        expect(r.status).toBe(202);
        // The shared bounded body reader: not JSON → 415, too large → 413, and nothing is signed or sent.
        const counter = ((await r.json()) as { counter: number }).counter;
        const wrongType = await fetch(`${api}/api/commands`, { method: 'POST', body: JSON.stringify({ orgId: 'org-a', deviceId: 'dev-sim-1', command: { ping: {} } }) });
        expect(wrongType.status).toBe(415);
        const tooLarge = await fetch(`${api}/api/commands`, { method: 'POST', body: 'x'.repeat(70_000), headers: { 'content-type': 'application/json' } }).catch(() => undefined);
        expect(tooLarge === undefined || tooLarge.status === 413).toBe(true);
        const next = await fetch(`${api}/api/commands`, { method: 'POST', body: JSON.stringify({ orgId: 'org-a', deviceId: 'dev-sim-1', command: { ping: {} } }), headers: { 'content-type': 'application/json' } });
        expect(((await next.json()) as { counter: number }).counter).toBe(counter + 1);
        await waitUntil(
          async () => {
            const ev = (await (await fetch(`${api}/api/events`)).json()) as { type: string; body: Record<string, unknown> }[];
            return ev.some((e) => e.type === 'punch' && e.body.eventId === p.eventId) && ev.some((e) => e.type === 'result' && e.body.reason === 'pong');
          },
          15_000,
          'punch and ping result at the cloud',
        );
        expect(stdout).toContain(p.eventId); // JSON lines on stdout too
        expect((await fetch(api + '/')).headers.get('content-type')).toMatch(/text\/html/);
      } finally {
        await agent.stop();
      }
    } finally {
      proc.kill('SIGTERM');
    }
  });
});
