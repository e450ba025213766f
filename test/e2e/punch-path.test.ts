/**
 * The punch path end to end, against the embedded aedes broker and a real
 * Mosquitto process: N punches in, N distinct decoded events out.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { AlarmCode, Lifecycle, PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { UUIDV7_RE } from '../../src/util/uuidv7.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { testConfig } from '../helpers/agent-config.js';
import { Mosquitto } from '../../simulators/cloud/mosquitto.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';
import { waitUntil } from '../helpers/ports.js';

interface Broker {
  url: string;
  close(): Promise<void>;
}

const brokers: Record<string, () => Promise<Broker>> = {
  aedes: () => startEmbeddedBroker(),
  mosquitto: async () => {
    const m = await Mosquitto.start();
    return { url: m.url, close: () => m.stop() };
  },
};

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(kind: string, over: { capacity?: number } = {}) {
  const broker = await brokers[kind]!();
  cleanups.push(() => broker.close());
  const dataDir = mkdtempSync(join(tmpdir(), 'tbx-e2e-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const sink = await CloudSink.connect({ url: broker.url });
  cleanups.push(() => sink.close());
  const agent = await Agent.start({ config: validateConfig(testConfig({ dataDir, brokerUrl: broker.url, ...over })), logger: silentLogger() });
  cleanups.push(() => agent.stop());
  await waitUntil(() => agent.session !== undefined, 10_000, 'agent online');
  return { broker, sink, agent };
}

const mosquitto = systemPeer('mosquitto', { pkg: 'mosquitto' });
for (const kind of Object.keys(brokers))
  describeWithPeer(kind === 'mosquitto' ? mosquitto : null, `punch path via ${kind}`, () => {
    it('delivers N punches as N distinct decoded events, no gaps, and publishes a retained birth', async () => {
      const { sink, agent } = await setup(kind);
      const N = 2000;
      const accepted = await Promise.all(Array.from({ length: N }, (_, i) => agent.punch({ orgId: i % 2 ? 'org-a' : 'org-b', subjectId: `s-${i % 50}`, method: PunchMethod.PUNCH_METHOD_CARD })));
      await sink.waitForPunches(N, 30_000);
      const stats = sink.stats();
      expect(stats).toMatchObject({ received: N, gaps: 0, malformed: 0 });
      const byId = new Map(sink.punches().map((p) => [p.eventId, p]));
      for (const a of accepted) {
        const p = byId.get(a.eventId);
        expect(p, a.eventId).toBeDefined();
        expect(p).toMatchObject({ seq: a.seq, orgId: a.orgId, subjectId: a.subjectId, deviceId: 'dev-test-1', method: PunchMethod.PUNCH_METHOD_CARD, historical: false, clockSynced: true });
        expect(p!.eventId).toMatch(UUIDV7_RE);
        expect(p!.bdSeq).toBe(1);
      }
      await waitUntil(() => agent.outbox.depth === 0, 10_000, 'outbox drained (rows deleted after PUBACK)');
      const birth = sink.state('dev-test-1');
      expect(birth?.lifecycle).toBe(Lifecycle.LIFECYCLE_BIRTH);
      expect(birth?.bdSeq).toBe(1);
    });

    it('refuses punches at the queue cap with an alarm the cloud sees, then recovers', async () => {
      const { sink, agent } = await setup(kind, { capacity: 20 });
      // Take the link down so the queue fills.
      await agent.link.stop();
      await Promise.all(Array.from({ length: 20 }, (_, i) => agent.punch({ orgId: 'org-a', subjectId: `s-${i}`, method: PunchMethod.PUNCH_METHOD_FACE })));
      await expect(agent.punch({ orgId: 'org-a', subjectId: 's-x', method: PunchMethod.PUNCH_METHOD_FACE })).rejects.toMatchObject({ code: 'QUEUE_FULL' });
      expect(agent.state().alarms?.map((a) => a.code)).toEqual([AlarmCode.ALARM_CODE_QUEUE_FULL]);
      // Drain by hand through a fresh agent on the same data directory.
      const config = agent.config;
      await agent.stop();
      const again = await Agent.start({ config, logger: silentLogger() });
      cleanups.push(() => again.stop());
      await sink.waitForPunches(20, 20_000);
      await waitUntil(() => again.outbox.depth === 0, 10_000, 'drained');
      await expect(again.punch({ orgId: 'org-a', subjectId: 's-y', method: PunchMethod.PUNCH_METHOD_FACE })).resolves.toMatchObject({ seq: 21 });
      await sink.waitForPunches(21, 10_000);
      expect(sink.stats()).toMatchObject({ received: 21, gaps: 0 });
      expect(sink.punches().filter((p) => p.historical)).toHaveLength(20);
    });
  });
