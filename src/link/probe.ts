/**
 * `tallybox doctor`'s broker check: connect once with exactly the transport
 * the agent would use (TLS policy, region pinning on the certificate, packet
 * size gate, MQTT version negotiation), then disconnect. No will, its own
 * client id, no subscription, no publish: the device's presence is not
 * disturbed. It returns a verdict, never a client (the client stays inside
 * src/link, see egress.ts).
 */
import type { LookupFunction } from 'node:net';
import type { MqttClient } from 'mqtt';
import type { Config } from '../config/schema.js';
import { describeError } from '../util/errors.js';
import { brokerSecurity, type BrokerSecurity } from './security.js';
import { MAX_INCOMING_PACKET_BYTES, createClient, isUnsupportedVersion, loadTlsMaterial } from './transport.js';

export interface BrokerCheck {
  name: 'broker';
  verdict: 'ok' | 'fail';
  detail: string;
}

function attempt(config: Pick<Config, 'device' | 'region' | 'broker'>, security: BrokerSecurity, version: 4 | 5, lookup: LookupFunction | undefined): Promise<void> {
  const { broker } = config;
  const tls = loadTlsMaterial(broker.tls);
  return new Promise<void>((resolve, reject) => {
    let client: MqttClient | undefined;
    let failure: unknown;
    const done = (err?: unknown) => {
      // Never wait for the broker on the way out: force-close the probe's socket.
      client?.end(true);
      if (err === undefined) resolve();
      else reject(err);
    };
    client = createClient(
      { security, region: config.region, tls, maxPacketBytes: MAX_INCOMING_PACKET_BYTES, onDrop: () => undefined, ...(lookup ? { lookup } : {}) },
      {
        clientId: `tallybox-doctor-${config.device.id}`,
        protocolVersion: version,
        clean: true,
        connectTimeout: Math.min(broker.connectTimeoutMs, 10_000),
        ...(broker.username !== undefined ? { username: broker.username } : {}),
        ...(broker.password !== undefined ? { password: broker.password } : {}),
      },
    );
    client.once('connect', () => done());
    client.on('error', (err) => (failure ??= err));
    client.once('close', () => done(failure ?? new Error('connection closed before CONNACK')));
  });
}

/** Connect to the configured broker once; ok with the time taken, or fail saying why. */
export async function brokerReachabilityCheck(config: Pick<Config, 'device' | 'region' | 'broker'>, opts: { lookup?: LookupFunction } = {}): Promise<BrokerCheck> {
  const { broker } = config;
  let security: BrokerSecurity;
  try {
    security = brokerSecurity(broker, config.region);
    loadTlsMaterial(broker.tls); // a missing TLS file is reported as a broker problem
  } catch (err) {
    return { name: 'broker', verdict: 'fail', detail: describeError(err) };
  }
  const t0 = performance.now();
  let version: 4 | 5 = broker.mqttVersion === '3.1.1' ? 4 : 5;
  try {
    try {
      await attempt(config, security, version, opts.lookup);
    } catch (err) {
      if (!(version === 5 && broker.mqttVersion === 'auto' && isUnsupportedVersion(err))) throw err;
      version = 4;
      await attempt(config, security, version, opts.lookup);
    }
  } catch (err) {
    return { name: 'broker', verdict: 'fail', detail: `${broker.url}: ${describeError(err)} — check the URL, the network, firewall and TLS files` };
  }
  const ms = performance.now() - t0;
  const how = security.transport === 'plaintext' ? 'plaintext' : security.transport === 'tls' ? 'TLS' : 'unverified TLS';
  return { name: 'broker', verdict: 'ok', detail: `connected to ${broker.url} in ${ms.toFixed(0)} ms (${how}, MQTT ${version === 5 ? '5' : '3.1.1'})` };
}
