/**
 * The local punch API: 201 only once on disk; bad input is a 400 that queues
 * nothing; only served organisations, JSON, a loopback Host and (when set) a
 * bearer token get through; /v1/state shows zeros, the link and bd_seq.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { loadPunchApiToken, startPunchApi } from '../../src/agent/punch-api.js';
import { validateConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/util/log.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { testConfig } from '../helpers/agent-config.js';
import { waitUntil } from '../helpers/ports.js';

describe('punch API', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-api-'));
  let agent: Agent;
  let api: Awaited<ReturnType<typeof startPunchApi>>;
  const post = (body: string) => fetch(`http://127.0.0.1:${api.port}/v1/punch`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });

  beforeAll(async () => {
    agent = await Agent.start({ config: validateConfig(testConfig({ dataDir: dir, brokerUrl: 'mqtt://127.0.0.1:1', capacity: 3 })), logger: silentLogger() });
    api = await startPunchApi(agent, '127.0.0.1', 0);
  });
  afterAll(async () => {
    await api.close();
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rejects bad input with 400 and a reason, queueing nothing', async () => {
    const bad = [
      'not json',
      '{}',
      JSON.stringify({ orgId: 'o/1', subjectId: 's', method: 'CARD' }),
      JSON.stringify({ orgId: 'o', subjectId: 's', method: 'RETINA' }),
      JSON.stringify({ orgId: 'o', subjectId: 's', method: 'CARD', eventId: 'not-a-uuid' }),
    ];
    for (const b of bad) {
      const r = await post(b);
      expect(r.status, b).toBe(400);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe(b === 'not json' ? 'BAD_JSON' : 'BAD_REQUEST');
    }
    const huge = await post(JSON.stringify({ orgId: 'o', subjectId: 'x'.repeat(10_000), method: 'CARD' })).catch(() => undefined);
    expect(huge === undefined || huge.status === 413).toBe(true);
    expect(agent.outbox.depth).toBe(0);
  });

  it('201 with the event id and sequence once on disk; 503 QUEUE_FULL at the cap; idempotent on event id', async () => {
    const r = await post(JSON.stringify({ orgId: 'org-a', subjectId: 's-1', method: 'WIFI', eventId: '01900000-0000-7000-8000-0000000000aa' }));
    expect(r.status).toBe(201);
    expect(await r.json()).toEqual({ eventId: '01900000-0000-7000-8000-0000000000aa', seq: 1 });
    const again = await post(JSON.stringify({ orgId: 'org-a', subjectId: 's-1', method: 'WIFI', eventId: '01900000-0000-7000-8000-0000000000aa' }));
    expect(await again.json()).toEqual({ eventId: '01900000-0000-7000-8000-0000000000aa', seq: 1 });
    await post(JSON.stringify({ orgId: 'org-a', subjectId: 's-2', method: 'PIN' }));
    await post(JSON.stringify({ orgId: 'org-a', subjectId: 's-3', method: 'PIN' }));
    const full = await post(JSON.stringify({ orgId: 'org-a', subjectId: 's-4', method: 'PIN' }));
    expect(full.status).toBe(503);
    expect(((await full.json()) as { error: { code: string } }).error.code).toBe('QUEUE_FULL');
    const state = (await (await fetch(`http://127.0.0.1:${api.port}/v1/state`)).json()) as { alarms: { code: string }[]; queueDepth: number };
    expect(state.queueDepth).toBe(3);
    expect(state.alarms.map((a) => a.code)).toContain('ALARM_CODE_QUEUE_FULL');
  });
});

/** A raw request, so the test controls Host, Content-Type and Authorization exactly. */
function raw(port: number, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: opts.method ?? 'POST', path: opts.path ?? '/v1/punch', headers: { host: `127.0.0.1:${port}`, ...opts.headers } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}
const errCode = (r: { json: Record<string, unknown> }) => (r.json.error as { code?: string } | undefined)?.code;
const punchBody = (orgId = 'org-a') => JSON.stringify({ orgId, subjectId: 's-1', method: 'CARD' });
const JSON_TYPE = { 'content-type': 'application/json' };

describe('punch API on a hostile LAN (issue 9 §7) and its state (issue 8 §5)', () => {
  const dirs: string[] = [];
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const s of stops.splice(0).reverse()) await s();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  async function start(over: { punchApi?: Record<string, unknown>; servedOrgs?: string[]; brokerUrl?: string } = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-api2-'));
    dirs.push(dir);
    const base = testConfig({ dataDir: join(dir, 'data'), brokerUrl: over.brokerUrl ?? 'mqtt://127.0.0.1:1', apiPort: 0 });
    const config = validateConfig({ ...base, device: { ...base.device, ...(over.servedOrgs ? { servedOrgs: over.servedOrgs } : {}) }, punchApi: { ...base.punchApi, ...over.punchApi } });
    const agent = await Agent.start({ config, logger: silentLogger() });
    stops.push(() => agent.stop());
    const api = await startPunchApi(agent, '127.0.0.1', 0);
    stops.push(() => api.close());
    return { agent, port: api.port, dir };
  }

  it('refuses a punch for an organisation the device does not serve (403 ORG_NOT_SERVED), queueing nothing', async () => {
    const { agent, port } = await start({ servedOrgs: ['org-a', 'org-b'] });
    expect((await raw(port, { headers: JSON_TYPE, body: punchBody('org-b') })).status).toBe(201);
    const r = await raw(port, { headers: JSON_TYPE, body: punchBody('org-x') });
    expect({ status: r.status, code: errCode(r) }).toEqual({ status: 403, code: 'ORG_NOT_SERVED' });
    expect(agent.outbox.depth).toBe(1);
  });

  it('requires application/json (415) and a loopback Host (403 BAD_HOST: DNS rebinding)', async () => {
    const { agent, port } = await start();
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const r = await raw(port, { headers: { 'content-type': type }, body: punchBody() });
      expect({ type, status: r.status, code: errCode(r) }).toEqual({ type, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
    }
    expect((await raw(port, { body: punchBody() })).status).toBe(415); // no type at all
    for (const host of ['evil.example', 'evil.example:8787', '192.168.1.20', `127.0.0.1.evil.example:${port}`]) {
      const r = await raw(port, { headers: { ...JSON_TYPE, host }, body: punchBody() });
      expect({ host, status: r.status, code: errCode(r) }).toEqual({ host, status: 403, code: 'BAD_HOST' });
      expect((await raw(port, { method: 'GET', path: '/v1/state', headers: { host } })).status).toBe(403);
    }
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'localhost', `[::1]:${port}`]) {
      expect((await raw(port, { headers: { ...JSON_TYPE, host }, body: punchBody() })).status, host).toBe(201);
    }
    expect(agent.outbox.depth).toBe(4);
  });

  it('with a bearer token (punchApi.token): 401 without it or with a wrong one, for punches and state alike', async () => {
    const token = 'x'.repeat(20) + randomBytes(8).toString('hex');
    const { agent, port } = await start({ punchApi: { token } });
    for (const authorization of [undefined, 'Bearer wrong-token-wrong-token', `Basic ${token}`, `Bearer ${token}x`, `bearer  ${token}`]) {
      const r = await raw(port, { headers: { ...JSON_TYPE, ...(authorization ? { authorization } : {}) }, body: punchBody() });
      expect({ authorization, status: r.status, code: errCode(r) }).toEqual({ authorization, status: 401, code: 'UNAUTHORIZED' });
    }
    expect((await raw(port, { method: 'GET', path: '/v1/state' })).status).toBe(401);
    expect((await raw(port, { headers: { ...JSON_TYPE, authorization: `Bearer ${token}` }, body: punchBody() })).status).toBe(201);
    expect((await raw(port, { method: 'GET', path: '/v1/state', headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect(agent.outbox.depth).toBe(1);
  });

  it('punchApi.tokenFile: read at start; refused when group/other can read it or it is a symlink', async () => {
    const token = randomBytes(24).toString('base64url');
    const dir = mkdtempSync(join(tmpdir(), 'tbx-tok-'));
    dirs.push(dir);
    const file = join(dir, 'punch-api.token');
    writeFileSync(file, `${token}\n`, { mode: 0o600 });
    const { port } = await start({ punchApi: { tokenFile: file } });
    expect((await raw(port, { headers: { ...JSON_TYPE, authorization: `Bearer ${token}` }, body: punchBody() })).status).toBe(201);
    expect((await raw(port, { headers: JSON_TYPE, body: punchBody() })).status).toBe(401);
    chmodSync(file, 0o644);
    expect(() => loadPunchApiToken({ tokenFile: file })).toThrow(/mode 644.*0600/);
    chmodSync(file, 0o600);
    const link = join(dir, 'link.token');
    symlinkSync(file, link);
    expect(() => loadPunchApiToken({ tokenFile: link })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(/symlink/) as string }) as Error);
    expect(() => loadPunchApiToken({ tokenFile: join(dir, 'missing') })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }) as Error);
    writeFileSync(join(dir, 'short'), 'abc', { mode: 0o600 });
    expect(() => loadPunchApiToken({ tokenFile: join(dir, 'short') })).toThrow(/at least 16/);
    expect(() => validateConfig({ ...testConfig({ dataDir: dir, brokerUrl: 'mqtt://127.0.0.1:1' }), punchApi: { token: 'y'.repeat(16), tokenFile: file } })).toThrow(/not both/);
  });

  it('body limits come from the shared reader: 413 over 4 KiB', async () => {
    const { agent, port } = await start();
    const r = await raw(port, { headers: JSON_TYPE, body: JSON.stringify({ orgId: 'org-a', subjectId: 's', method: 'CARD', pad: 'x'.repeat(5000) }) });
    expect({ status: r.status, code: errCode(r) }).toEqual({ status: 413, code: 'BODY_TOO_LARGE' });
    expect(agent.outbox.depth).toBe(0);
  });

  it('GET /v1/state: zero fields present, an online indicator and the link state, bd_seq kept while offline', async () => {
    const broker = await startEmbeddedBroker();
    let brokerUp = true;
    stops.push(async () => void (brokerUp ? await broker.close() : undefined));
    const { agent, port } = await start({ brokerUrl: broker.url });
    await waitUntil(() => agent.session !== undefined, 10_000, 'online');
    const bdSeq = agent.session!.bdSeq;
    const online = (await raw(port, { method: 'GET', path: '/v1/state' })).json;
    expect(online).toMatchObject({ queueDepth: 0, lastSeq: 0, online: true, link: 'LINK_STATUS_ONLINE', bdSeq, deviceId: 'dev-test-1', lifecycle: 'LIFECYCLE_UPDATE' });
    expect(online.alarms).toEqual([]);
    expect(online.peripherals).toEqual([]);
    brokerUp = false;
    await broker.close();
    await waitUntil(() => agent.session === undefined, 10_000, 'offline');
    const offline = (await raw(port, { method: 'GET', path: '/v1/state' })).json;
    expect(offline).toMatchObject({ queueDepth: 0, online: false, bdSeq });
    expect(['LINK_STATUS_CONNECTING', 'LINK_STATUS_OFFLINE']).toContain(offline.link);
  });
});
