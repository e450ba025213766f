/** The local punch API: 201 only once on disk; bad input is a 400 that queues nothing. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { startPunchApi } from '../../src/agent/punch-api.js';
import { validateConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/util/log.js';
import { testConfig } from '../helpers/agent-config.js';

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
    const bad = ['not json', '{}', JSON.stringify({ orgId: 'o/1', subjectId: 's', method: 'CARD' }), JSON.stringify({ orgId: 'o', subjectId: 's', method: 'RETINA' }), JSON.stringify({ orgId: 'o', subjectId: 's', method: 'CARD', eventId: 'not-a-uuid' })];
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
