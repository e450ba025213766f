/**
 * "Historical" is a sequence watermark taken when a connection comes up
 * (issue 8 §3), not a wall-clock comparison: with the device clock stepped
 * back or forward, a live punch is never flagged as backlog and a backlog
 * punch is never flagged as live. The outbox, link and drain are wired as the
 * agent wires them, with one wall clock the test steps.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import { MqttLink } from '../../src/link/connection.js';
import { EgressGate } from '../../src/link/egress.js';
import { Drain } from '../../src/outbox/drain.js';
import { Outbox } from '../../src/outbox/outbox.js';
import { PunchMethod, type DeviceStateProps } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { BlackholeProxy } from '../../simulators/lib/tcp-proxy.js';
import { testConfig } from '../helpers/agent-config.js';
import { waitUntil } from '../helpers/ports.js';

const HOUR = 3_600_000;

describe('historical flag with the clock stepped', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-historical-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('live stays live after a backward step; backlog stays historical after a further one; live after a forward step', async () => {
    const broker = await startEmbeddedBroker();
    const uplink = await BlackholeProxy.start(broker.port);
    const sink = await CloudSink.connect({ url: broker.url });
    let offset = 0; // the step applied to the device's wall clock
    const wall = () => Date.now() + offset;
    const config = validateConfig(testConfig({ dataDir: join(dir, 'data'), brokerUrl: uplink.url }));
    const logger = silentLogger();
    const outbox = await Outbox.open({ path: join(dir, 'data', 'outbox.db'), capacity: 1000, now: wall });
    const egress = new EgressGate({ deviceId: config.device.id, operatorOrgId: config.device.orgId });
    const drain: Drain = new Drain({ outbox, egress, logger, recycle: (r) => link.recycle(r), inflight: 16, batch: 100, backlogRatePerSec: 0, ackTimeoutMs: 10_000 });
    const link: MqttLink = new MqttLink({
      config,
      egress,
      logger,
      nextBdSeq: () => outbox.nextBdSeq(),
      state: () => ({ deviceId: config.device.id }) as DeviceStateProps,
      onOnline: (s) => drain.online(s),
      onOffline: () => drain.offline(),
      now: wall,
    });
    const punch = (s: string) => outbox.accept({ orgId: 'org-a', subjectId: s, method: PunchMethod.PUNCH_METHOD_CARD });
    const flag = (seq: number) => sink.punches().find((p) => p.seq === seq)?.historical;
    link.start();
    try {
      await waitUntil(() => link.current !== undefined, 10_000, 'online');
      offset = -2 * HOUR; // NTP steps the clock back while online
      const live = await punch('live-after-step');
      await sink.waitForPunches(1, 10_000);
      expect(flag(live.seq)).toBe(false);

      uplink.cut(true);
      await waitUntil(() => link.current === undefined, 10_000, 'offline');
      const backlog = await Promise.all(['b1', 'b2', 'b3'].map(punch));
      offset = -4 * HOUR; // stepped back again before the link returns
      uplink.cut(false);
      await waitUntil(() => link.current !== undefined, 10_000, 'back online');
      await sink.waitForPunches(4, 10_000);
      for (const b of backlog) expect(flag(b.seq), `backlog seq ${b.seq}`).toBe(true);

      offset = 6 * HOUR; // and forward
      const later = await punch('live-after-forward-step');
      await sink.waitForPunches(5, 10_000);
      expect(flag(later.seq)).toBe(false);
    } finally {
      drain.stop();
      await link.stop();
      await outbox.close();
      await sink.close();
      await uplink.close();
      await broker.close();
    }
  }, 40_000);
});
