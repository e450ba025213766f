/**
 * MQTT 5 Receive Maximum: a broker says in its CONNACK how many QoS 1
 * publishes it takes unacknowledged at once, and sending more is a protocol
 * error (a strict broker disconnects, or refuses them with "quota exceeded").
 * mqtt.js does not enforce it; the egress gate does, per connection, so the
 * drain's window (256 by default) never exceeds a broker's 10-32.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { testConfig } from '../helpers/agent-config.js';
import { waitUntil } from '../helpers/ports.js';
import { FakeBroker } from './fake-broker.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

it('never more QoS 1 publishes in flight than the broker announced', async () => {
  const broker = await FakeBroker.start();
  cleanups.push(() => broker.close());
  broker.receiveMaximum = 5;
  broker.ackDelayMs = 20;
  const dataDir = mkdtempSync(join(tmpdir(), 'tbx-rm-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const agent = await Agent.start({ config: validateConfig(testConfig({ dataDir, brokerUrl: broker.url })), logger: silentLogger() });
  cleanups.push(() => agent.stop());
  await waitUntil(() => agent.session !== undefined, 10_000, 'online');
  await Promise.all(Array.from({ length: 200 }, (_, i) => agent.punch({ orgId: 'org-a', subjectId: `s-${i % 7}`, method: PunchMethod.PUNCH_METHOD_CARD })));
  await waitUntil(() => agent.outbox.depth === 0, 20_000, 'all delivered');
  expect(broker.publishes.filter((p) => p.topic.endsWith('/punch')).length).toBeGreaterThanOrEqual(200);
  expect(broker.maxInflight).toBeGreaterThan(1); // it did pipeline
  expect(broker.maxInflight).toBeLessThanOrEqual(5);
  expect(broker.connects).toHaveLength(1);
});
