/**
 * Presence that tells the truth (issue 8 §5), against aedes and Mosquitto.
 *
 * - After a clean stop, the retained state is the clean DEATH (current last
 *   seq and queue depth, link STOPPED): the agent sends DISCONNECT, so the
 *   broker discards the will. Before, it ended without DISCONNECT and the
 *   broker then published the will (the DEATH registered at connect, with that
 *   moment's last seq) over it.
 * - After an unclean loss the will is what remains, and it says so (link LOST).
 * - DeviceState carries the link state: GET /v1/state and every UPDATE show
 *   whether the device is online.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { Lifecycle, LinkStatus, LinkTransport, PunchMethod, pb, type DeviceState } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { Mosquitto } from '../../simulators/cloud/mosquitto.js';
import { BlackholeProxy } from '../../simulators/lib/tcp-proxy.js';
import { testConfig } from '../helpers/agent-config.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';
import { sleep, waitUntil } from '../helpers/ports.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const brokers: Record<string, () => Promise<{ url: string; port: number; close(): Promise<void> }>> = {
  aedes: () => startEmbeddedBroker(),
  mosquitto: async () => {
    const m = await Mosquitto.start();
    return { url: m.url, port: m.port, close: () => m.stop() };
  },
};

/** The retained DeviceState a cloud that subscribes now would receive. */
async function retainedState(url: string, deviceId: string): Promise<DeviceState | undefined> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
  try {
    const got = new Promise<DeviceState>((resolve) => c.on('message', (_t, payload) => resolve(pb.DeviceState.decode(payload))));
    await c.subscribeAsync(`tallybox/v1/org-a/${deviceId}/state`, { qos: 1 });
    return await Promise.race([got, sleep(2000).then(() => undefined)]);
  } finally {
    await c.endAsync(true);
  }
}

async function startAgent(url: string, deviceId: string) {
  const dataDir = mkdtempSync(join(tmpdir(), 'tbx-presence-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const agent = await Agent.start({ config: validateConfig(testConfig({ dataDir, brokerUrl: url, deviceId })), logger: silentLogger() });
  cleanups.push(() => agent.stop());
  await waitUntil(() => agent.session !== undefined, 10_000, 'online');
  return agent;
}

const mosquitto = systemPeer('mosquitto', { pkg: 'mosquitto' });
for (const kind of Object.keys(brokers))
  describeWithPeer(kind === 'mosquitto' ? mosquitto : null, `presence via ${kind}`, () => {
    it('after a clean stop the retained state is the clean DEATH, not the will', async () => {
      const broker = await brokers[kind]!();
      cleanups.push(() => broker.close());
      const agent = await startAgent(broker.url, `dev-clean-${kind}`);
      for (let i = 0; i < 3; i++) await agent.punch({ orgId: 'org-a', subjectId: `s-${i}`, method: PunchMethod.PUNCH_METHOD_CARD });
      await waitUntil(() => agent.outbox.depth === 0, 10_000, 'delivered');
      await agent.stop();
      await sleep(500); // a will, if the broker were to send one, is published on the socket's close
      const s = await retainedState(broker.url, `dev-clean-${kind}`);
      expect(s).toBeDefined();
      expect(s).toMatchObject({ lifecycle: Lifecycle.LIFECYCLE_DEATH, link: LinkStatus.LINK_STATUS_STOPPED, bdSeq: 1, lastSeq: 3, queueDepth: 0 });
    });

    it('after an unclean loss the will remains, marked LOST; DeviceState shows the link state', async () => {
      const broker = await brokers[kind]!();
      cleanups.push(() => broker.close());
      const proxy = await BlackholeProxy.start(broker.port);
      cleanups.push(() => proxy.close());
      const agent = await startAgent(proxy.url, `dev-lost-${kind}`);
      expect(agent.state()).toMatchObject({ link: LinkStatus.LINK_STATUS_ONLINE, linkTransport: LinkTransport.LINK_TRANSPORT_LOOPBACK, oversizedPacketsDropped: 0 });
      // What GET /v1/state serves (src/agent/punch-api.ts): enum names, the online indicator present.
      expect(pb.DeviceState.toObject(pb.DeviceState.fromObject(agent.state()), { enums: String })).toMatchObject({ link: 'LINK_STATUS_ONLINE', linkTransport: 'LINK_TRANSPORT_LOOPBACK' });
      const birth = await retainedState(broker.url, `dev-lost-${kind}`);
      expect(birth).toMatchObject({ lifecycle: Lifecycle.LIFECYCLE_BIRTH, link: LinkStatus.LINK_STATUS_ONLINE, bdSeq: 1 });
      proxy.cut(true);
      await waitUntil(() => agent.session === undefined, 10_000, 'offline');
      expect([LinkStatus.LINK_STATUS_OFFLINE, LinkStatus.LINK_STATUS_CONNECTING]).toContain(agent.state().link);
      await waitUntil(async () => (await retainedState(broker.url, `dev-lost-${kind}`))?.lifecycle === Lifecycle.LIFECYCLE_DEATH, 10_000, 'will published');
      expect(await retainedState(broker.url, `dev-lost-${kind}`)).toMatchObject({ lifecycle: Lifecycle.LIFECYCLE_DEATH, link: LinkStatus.LINK_STATUS_LOST, bdSeq: 1 });
    });
  });
