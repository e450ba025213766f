/**
 * "Historical" is a sequence watermark taken when a connection comes up
 * (issue 8 §3), not a wall-clock comparison: with the device clock stepped
 * back or forward, a live punch is never flagged as backlog and a backlog
 * punch is never flagged as live.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { BlackholeProxy } from '../../simulators/lib/tcp-proxy.js';
import { testConfig } from '../helpers/agent-config.js';
import { waitUntil } from '../helpers/ports.js';

const HOUR = 3_600_000;

describe('historical flag with the clock stepped', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-historical-'));
  afterEach(() => {
    vi.useRealTimers();
    rmSync(dir, { recursive: true, force: true });
  });

  it('live stays live after a backward step; backlog stays historical after a further one', async () => {
    const broker = await startEmbeddedBroker();
    const uplink = await BlackholeProxy.start(broker.port);
    const sink = await CloudSink.connect({ url: broker.url });
    const agent = await Agent.start({ config: validateConfig(testConfig({ dataDir: join(dir, 'data'), brokerUrl: uplink.url })), logger: silentLogger() });
    const punch = (s: string) => agent.punch({ orgId: 'org-a', subjectId: s, method: PunchMethod.PUNCH_METHOD_CARD });
    const flag = (seq: number) => sink.punches().find((p) => p.seq === seq)?.historical;
    try {
      await waitUntil(() => agent.session !== undefined, 10_000, 'online');
      const t0 = Date.now();
      // Only Date is faked: timers, sockets and the monotonic clock run as they do.
      vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
      vi.setSystemTime(t0 - 2 * HOUR); // NTP steps the clock back while online
      const live = await punch('live-after-step');
      await sink.waitForPunches(1, 10_000);
      expect(flag(live.seq)).toBe(false);

      uplink.cut(true);
      await waitUntil(() => agent.session === undefined, 10_000, 'offline');
      const backlog = await Promise.all(['b1', 'b2', 'b3'].map(punch));
      vi.setSystemTime(t0 - 4 * HOUR); // stepped back again before the link returns
      uplink.cut(false);
      await waitUntil(() => agent.session !== undefined, 10_000, 'back online');
      await sink.waitForPunches(4, 10_000);
      for (const b of backlog) expect(flag(b.seq), `backlog seq ${b.seq}`).toBe(true);

      vi.setSystemTime(t0 + 6 * HOUR); // and forward
      const later = await punch('live-after-forward-step');
      await sink.waitForPunches(5, 10_000);
      expect(flag(later.seq)).toBe(false);
    } finally {
      vi.useRealTimers();
      await agent.stop();
      await sink.close();
      await uplink.close();
      await broker.close();
    }
  }, 40_000);
});
