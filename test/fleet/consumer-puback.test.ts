/**
 * The scaled-out punch consumer PUBACKs a punch only once the ordering stage
 * holds it (simulators/cloud/consumer.ts), on a real Mosquitto: a consumer
 * cut off (socket destroyed, as a SIGKILL) while its stage has not taken the
 * punches gets every one of them again on its persistent session; the same
 * cut-off for a client that PUBACKs on receipt (mqtt.js's default) gets none
 * back, so what it held would be lost; and punches the stage took are not
 * sent again.
 */
import mqtt from 'mqtt';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PunchConsumer, privateSendPacket, type ConsumedPunch } from '../../simulators/cloud/consumer.js';
import { Mosquitto } from '../../simulators/cloud/mosquitto.js';
import { EgressGate } from '../../src/link/egress.js';
import { uuidv7 } from '../../src/util/uuidv7.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';

const mosquittoPeer = systemPeer('mosquitto', { pkg: 'mosquitto' });

/** Until `cond` holds; generous on a loaded machine, and says what it waited for. */
async function until(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describeWithPeer(mosquittoPeer, 'punch consumer: PUBACK only after the ordering stage holds the punch (Mosquitto)', () => {
  let broker: Mosquitto;
  beforeAll(async () => {
    broker = await Mosquitto.start();
  }, 60_000);
  afterAll(async () => {
    await broker?.stop();
  });

  /** n punches of device `deviceId`, seq 1..n, each PUBACKed by the broker. */
  async function publish(n: number, tag: string, deviceId = 'puback-probe'): Promise<void> {
    const gate = new EgressGate({ deviceId, operatorOrgId: 'org-puback' });
    const pub = await mqtt.connectAsync(broker.url, { clientId: `puback-pub-${tag}`, protocolVersion: 5, clean: true });
    for (let seq = 1; seq <= n; seq++) {
      const payload = gate.encodePunch({ eventId: uuidv7(), orgId: 'org-puback', subjectId: 'probe', method: 3, occurredAtMs: Date.now(), clockSynced: true, seq, matchScore: 0, liveness: 0 }, { bdSeq: 1, historical: false });
      await pub.publishAsync(`tallybox/v1/org-puback/${deviceId}/punch`, Buffer.from(payload), { qos: 1 });
    }
    await pub.endAsync();
  }

  it('cut off before the stage took them: every punch comes back on the persistent session', async () => {
    const group = 'held';
    let received = 0;
    const held = new PunchConsumer({
      url: broker.url,
      group,
      slot: 1,
      // The stage never takes them (a round trip that outlives the process).
      forward: (batch) => {
        received += batch.length;
        return new Promise<void>(() => undefined);
      },
    });
    await held.start();
    await publish(5, group);
    await until(() => received === 5, 'the consumer to receive 5 punches');
    held.abort();

    const again: ConsumedPunch[] = [];
    const back = new PunchConsumer({ url: broker.url, group, slot: 1, forward: async (b) => void again.push(...b) });
    await back.start();
    await until(() => new Set(again.map((p) => p.seq)).size === 5, 'the 5 held punches to be redelivered');
    expect([...new Set(again.map((p) => p.seq))].sort()).toEqual([1, 2, 3, 4, 5]);
    await back.stop();
  }, 90_000);

  it('the check breaks without the hold: a client that PUBACKs on receipt gets nothing back', async () => {
    const group = 'acked-at-once';
    const filter = `$share/${group}/tallybox/v1/+/+/punch`;
    const options = { clientId: `tallybox-consumer-${group}-1`, protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval: 3600 } };
    let received = 0;
    const eager = await mqtt.connectAsync(broker.url, options);
    // mqtt.js's default: the PUBACK goes out as soon as handleMessage calls back.
    eager.handleMessage = (_packet, cb) => {
      received++;
      cb();
    };
    await eager.subscribeAsync(filter, { qos: 1 });
    await publish(5, group);
    await until(() => received === 5, 'the eager client to receive 5 punches');
    // A sixth, PUBACKed only after the 5: once it is in, the 5 PUBACKs are at the broker.
    await new Promise<void>((resolve, reject) => eager.publish(`tallybox/v1/org-puback/fence/${group}`, 'x', { qos: 1 }, (err) => (err ? reject(err) : resolve())));
    eager.end(true);

    let redelivered = 0;
    let fresh = 0;
    const back = await mqtt.connectAsync(broker.url, options);
    back.on('message', (t) => (t.includes('/puback-probe/') ? redelivered++ : fresh++));
    await back.subscribeAsync(filter, { qos: 1 });
    // A resumed session's redelivery comes at once, ahead of anything new: a fresh punch after it bounds the wait.
    await publish(1, `${group}-after`, 'after-probe');
    await until(() => fresh >= 1, 'the fresh punch');
    expect(redelivered).toBe(0); // the 5 were PUBACKed on receipt: a crash while holding them loses them
    await back.endAsync();
  }, 90_000);

  it('what the stage took is PUBACKed: not sent again', async () => {
    const group = 'taken';
    const first: ConsumedPunch[] = [];
    const taking = new PunchConsumer({ url: broker.url, group, slot: 1, forward: async (b) => void first.push(...b) });
    await taking.start();
    await publish(5, group);
    await until(() => first.length === 5, 'the stage to take 5 punches');
    await taking.stop(); // DISCONNECT after the PUBACKs already written

    const again: ConsumedPunch[] = [];
    const back = new PunchConsumer({ url: broker.url, group, slot: 1, forward: async (b) => void again.push(...b) });
    await back.start();
    await publish(1, `${group}-after`, 'after-probe');
    await until(() => again.some((p) => p.deviceId === 'after-probe'), 'the fresh punch');
    expect(again.map((p) => p.deviceId)).toEqual(['after-probe']); // none of the 5 again
    await back.stop();
  }, 90_000);
});

it('an mqtt.js without the method the hold needs is refused with a clear error, not PUBACKed at once', () => {
  expect(() => privateSendPacket({})).toThrow(/CONSUMER_MQTT_INTERNALS|cannot hold PUBACKs/);
  const client = { _sendPacket: () => undefined };
  const hook = privateSendPacket(client);
  const replaced = () => undefined;
  hook.set(replaced);
  expect(client._sendPacket).toBe(replaced);
});
