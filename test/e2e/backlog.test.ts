/**
 * Backlog replay after an outage: oldest first, flagged historical, and paced
 * by outbox.backlogRatePerSec so a long outage does not flood the uplink —
 * while a punch made now is not held behind the limiter's clock.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { BlackholeProxy } from '../../simulators/lib/tcp-proxy.js';
import { testConfig } from '../helpers/agent-config.js';
import { waitUntil } from '../helpers/ports.js';

describe('backlog replay', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-backlog-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('replays oldest first, flagged historical, at the configured rate', async () => {
    const broker = await startEmbeddedBroker();
    const uplink = await BlackholeProxy.start(broker.port);
    const sink = await CloudSink.connect({ url: broker.url });
    const agent = await Agent.start({ config: validateConfig(testConfig({ dataDir: join(dir, 'data'), brokerUrl: uplink.url, backlogRatePerSec: 100 })), logger: silentLogger() });
    try {
      await waitUntil(() => agent.session !== undefined, 10_000, 'online');
      uplink.cut(true);
      await waitUntil(() => agent.session === undefined, 10_000, 'offline');
      const N = 250;
      for (let i = 0; i < N; i += 50) await Promise.all(Array.from({ length: 50 }, (_, k) => agent.punch({ orgId: 'org-a', subjectId: `s-${i + k}`, method: PunchMethod.PUNCH_METHOD_CARD })));
      const offSink = sink.punches().length;
      uplink.cut(false);
      const t0 = Date.now();
      await waitUntil(() => agent.session !== undefined, 10_000, 'back online');
      await sink.waitForPunches(offSink + N, 20_000);
      const elapsed = Date.now() - t0;
      const got = sink.punches().slice(offSink); // in arrival order
      expect(got.every((p) => p.historical)).toBe(true);
      expect(got.map((p) => p.seq)).toEqual([...got.map((p) => p.seq)].sort((a, b) => a - b)); // oldest first
      // 250 at 100/s with a burst of 10: at least ~2.4 s; unlimited it takes well under 100 ms.
      expect(elapsed).toBeGreaterThan(2000);
    } finally {
      await agent.stop();
      await sink.close();
      await uplink.close();
      await broker.close();
    }
  });
});
