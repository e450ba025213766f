/**
 * Broker outages: (1) Mosquitto killed and restarted later; (2) a proxy that
 * silently drops all traffic without closing connections. Punches keep being
 * accepted meanwhile; afterwards every one is delivered, the backlog is
 * flagged historical, and there are no sequence gaps.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { testConfig } from '../helpers/agent-config.js';
import { Mosquitto } from '../../simulators/cloud/mosquitto.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';
import { BlackholeProxy } from '../../simulators/lib/tcp-proxy.js';
import { sleep, waitUntil } from '../helpers/ports.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-outage-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

async function punchBurst(agent: Agent, n: number, tag: string) {
  return Promise.all(Array.from({ length: n }, (_, i) => agent.punch({ orgId: 'org-a', subjectId: `${tag}-${i}`, method: PunchMethod.PUNCH_METHOD_FINGERPRINT })));
}

const mosquitto = systemPeer('mosquitto', { pkg: 'mosquitto' });
describeWithPeer(mosquitto, 'broker outage', () => {
  it('Mosquitto stopped and restarted: no loss, backlog historical, zero gaps', async () => {
    const mosq = await Mosquitto.start();
    cleanups.push(() => mosq.stop());
    const agent = await Agent.start({ config: validateConfig(testConfig({ dataDir: tmp(), brokerUrl: mosq.url, backlogRatePerSec: 2000 })), logger: silentLogger() });
    cleanups.push(() => agent.stop());
    await waitUntil(() => agent.session !== undefined, 10_000, 'online');
    // A persistent session: the broker keeps the cloud's subscription and queue across its restart.
    const sink = await CloudSink.connect({ url: mosq.url, clientId: 'cloud-outage-test', persistent: true });
    cleanups.push(() => sink.close());

    const before = await punchBurst(agent, 100, 'before');
    await sink.waitForPunches(100, 10_000);
    // The broker hands a message to the subscriber before the publisher's PUBACK: wait for every
    // PUBACK (the rows deleted), or the outage strands a few in flight and they are queued again.
    await waitUntil(() => agent.outbox.depth === 0, 10_000, 'every PUBACK before the outage');

    await mosq.stop();
    await waitUntil(() => agent.session === undefined, 10_000, 'agent notices the outage');
    const during = await punchBurst(agent, 300, 'during');
    expect(agent.outbox.depth).toBe(300);
    await sleep(500);
    await mosq.resume();
    await waitUntil(() => agent.session !== undefined, 15_000, 'agent back online');
    const after = await punchBurst(agent, 50, 'after');

    await sink.waitForPunches(450, 30_000);
    const byId = new Map(sink.punches().map((p) => [p.eventId, p]));
    for (const a of before) expect(byId.get(a.eventId)?.historical).toBe(false);
    for (const a of during) expect(byId.get(a.eventId)?.historical, 'backlog flagged historical').toBe(true);
    for (const a of after) expect(byId.has(a.eventId)).toBe(true);
    expect(sink.stats()).toMatchObject({ received: 450, gaps: 0 });
    const backlogBdSeq = new Set(during.map((a) => byId.get(a.eventId)!.bdSeq));
    expect(Math.min(...backlogBdSeq)).toBeGreaterThan(1); // delivered on a later connection
  });

  it('a proxy that silently drops traffic: keepalive notices, reconnects, nothing lost', async () => {
    const mosq = await Mosquitto.start();
    cleanups.push(() => mosq.stop());
    const proxy = await BlackholeProxy.start(mosq.port);
    cleanups.push(() => proxy.close());
    const sink = await CloudSink.connect({ url: mosq.url }); // the cloud's own path is healthy
    cleanups.push(() => sink.close());
    const agent = await Agent.start({ config: validateConfig(testConfig({ dataDir: tmp(), brokerUrl: proxy.url, keepaliveSec: 1 })), logger: silentLogger() });
    cleanups.push(() => agent.stop());
    await waitUntil(() => agent.session !== undefined, 10_000, 'online');
    const firstBdSeq = agent.session!.bdSeq;

    await punchBurst(agent, 50, 'before');
    await sink.waitForPunches(50, 10_000);

    proxy.blackhole(true);
    const during = await punchBurst(agent, 200, 'during');
    // Keepalive 1 s: mqtt.js gives up after ~1.5 keepalives without a PINGRESP.
    await waitUntil(() => agent.session === undefined, 15_000, 'agent notices the dead link');
    expect(sink.stats().received).toBeLessThan(250);
    proxy.blackhole(false);
    await waitUntil(() => agent.session !== undefined, 15_000, 'agent reconnects');
    expect(agent.session!.bdSeq).toBeGreaterThan(firstBdSeq);

    await sink.waitForPunches(250, 30_000);
    const byId = new Map(sink.punches().map((p) => [p.eventId, p]));
    for (const a of during) expect(byId.has(a.eventId)).toBe(true);
    expect(sink.stats()).toMatchObject({ received: 250, gaps: 0 });
  });
});
