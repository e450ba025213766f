/**
 * The claim exchange's MQTT half (issue 11 §3), for `tallybox provision --claim`:
 * connect with exactly the transport the agent uses (TLS policy, region
 * pinning on the URL and on the certificate, packet size gate), subscribe to
 * this request's response topic, publish the ClaimRequest through the egress
 * gate, and hand every response that arrives to `verify` until one passes.
 *
 * A response that fails verification (forged, for another request) does not
 * end the wait: a LAN attacker who answers first must not be able to stop the
 * real answer from being accepted. If none passes before the deadline, the
 * last rejection is the error (or CLAIM_TIMEOUT when nothing came).
 *
 * Errors are coded: REGION_MISMATCH / CONFIG_INVALID before any socket opens,
 * CLAIM_TLS_FAILED (certificate not trusted, wrong name, region pinning),
 * CLAIM_BROKER_UNREACHABLE (refused, no route, DNS, timeout), CLAIM_TIMEOUT.
 */
import { randomBytes } from 'node:crypto';
import type { LookupFunction } from 'node:net';
import type { MqttClient } from 'mqtt';
import type { Config, Region } from '../config/schema.js';
import { TallyboxError, errorMessage, isTallyboxError } from '../util/errors.js';
import { EgressChannel, publishClaimRequest, type OutgoingClaimRequest } from './egress.js';
import { brokerSecurity } from './security.js';
import { TOPIC_ROOT } from './topics.js';
import { MAX_INCOMING_PACKET_BYTES, createClient, loadTlsMaterial } from './transport.js';

export const claimRequestTopic = (nonceHex: string): string => `${TOPIC_ROOT}/claim/${nonceHex}/request`;
export const claimResponseTopic = (nonceHex: string): string => `${TOPIC_ROOT}/claim/${nonceHex}/response`;
/** What the cloud's claim service subscribes to. */
export const CLAIM_REQUEST_FILTER = `${TOPIC_ROOT}/claim/+/request`;
export function parseClaimTopic(t: string): { nonceHex: string; kind: 'request' | 'response' } | undefined {
  const m = /^tallybox\/v1\/claim\/([0-9a-f]{32})\/(request|response)$/.exec(t);
  return m ? { nonceHex: m[1]!, kind: m[2] as 'request' | 'response' } : undefined;
}

export function newClaimNonce(): string {
  return randomBytes(16).toString('hex');
}

export interface ClaimExchangeOptions<T> {
  broker: Config['broker'];
  region: Region;
  request: Omit<OutgoingClaimRequest, 'nonceHex'> & { nonceHex: string };
  /** Parse and check one response payload: return the accepted result, or throw why not. */
  verify: (payload: Buffer) => T;
  /** Whole exchange, connect included. */
  timeoutMs: number;
  lookup?: LookupFunction;
}

const TLS_ERROR = /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_(VERIFY|GET)_|ERR_OSSL_)/;
const NET_ERROR = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE']);

/** A socket or protocol error as the coded claim error an installer can act on. */
export function classifyClaimError(err: unknown, url: string): TallyboxError {
  if (isTallyboxError(err)) return err; // REGION_MISMATCH from the certificate check, …
  const code = String((err as { code?: unknown } | undefined)?.code ?? '');
  if (TLS_ERROR.test(code) || /certificate|ssl|tls/i.test(errorMessage(err))) {
    return new TallyboxError('CLAIM_TLS_FAILED', `TLS to ${url} failed: ${errorMessage(err)}; check --ca (the CA that signed the broker's certificate) and the broker name`, { errno: code }, { cause: err });
  }
  if (NET_ERROR.has(code)) return new TallyboxError('CLAIM_BROKER_UNREACHABLE', `cannot reach the broker ${url}: ${code}; check the URL, the network and the firewall`, { errno: code }, { cause: err });
  return new TallyboxError('CLAIM_BROKER_UNREACHABLE', `broker ${url}: ${errorMessage(err)}`, { errno: code || undefined }, { cause: err });
}

export function claimExchange<T>(opts: ClaimExchangeOptions<T>): Promise<T> {
  // Refused before any socket opens: a broker outside the region, or an unsafe transport.
  const security = brokerSecurity(opts.broker, opts.region);
  const tls = loadTlsMaterial(opts.broker.tls);
  const url = opts.broker.url;
  const nonce = opts.request.nonceHex;
  return new Promise<T>((resolve, reject) => {
    let client: MqttClient | undefined;
    let settled = false;
    let connected = false;
    let lastRejection: unknown;
    let transportError: unknown;
    const finish = (err: unknown, value?: T) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client?.end(true);
      if (err === undefined) resolve(value as T);
      else reject(err);
    };
    const timer = setTimeout(() => {
      if (lastRejection !== undefined) return finish(lastRejection);
      if (!connected) return finish(transportError !== undefined ? classifyClaimError(transportError, url) : new TallyboxError('CLAIM_BROKER_UNREACHABLE', `no connection to the broker ${url} within ${opts.timeoutMs} ms`));
      finish(new TallyboxError('CLAIM_TIMEOUT', `the cloud did not answer the claim within ${opts.timeoutMs} ms (is the claim service running for region ${opts.region}?)`));
    }, opts.timeoutMs);
    client = createClient(
      { security, region: opts.region, tls, maxPacketBytes: MAX_INCOMING_PACKET_BYTES, onDrop: () => undefined, ...(opts.lookup ? { lookup: opts.lookup } : {}) },
      {
        // The device has no id yet: the nonce names this one exchange.
        clientId: `tallybox-claim-${nonce}`,
        // 3.1.1: every broker speaks it (aedes refuses 5), and the exchange is two small messages.
        protocolVersion: 4,
        clean: true,
        connectTimeout: Math.min(opts.broker.connectTimeoutMs, opts.timeoutMs),
        ...(opts.broker.username !== undefined ? { username: opts.broker.username } : {}),
        ...(opts.broker.password !== undefined ? { password: opts.broker.password } : {}),
      },
    );
    const c = client;
    c.on('error', (err) => {
      transportError = err;
      // A TLS or region failure will not get better by waiting.
      if (!connected) {
        const e = classifyClaimError(err, url);
        if (e.code !== 'CLAIM_BROKER_UNREACHABLE') finish(e);
      }
    });
    c.on('close', () => {
      if (!connected) finish(classifyClaimError(transportError ?? new Error('connection closed before CONNACK'), url));
      else if (!settled) finish(lastRejection ?? new TallyboxError('CLAIM_BROKER_UNREACHABLE', `the broker ${url} closed the connection during the claim`));
    });
    c.on('message', (t, payload) => {
      if (settled || t !== claimResponseTopic(nonce)) return;
      let value: T;
      try {
        value = opts.verify(payload);
      } catch (err) {
        lastRejection = err;
        // A signed refusal from the cloud is final; anything unverified is not (see the header).
        if (isTallyboxError(err) && err.details.signed === true) finish(err);
        return;
      }
      finish(undefined, value);
    });
    c.once('connect', () => {
      connected = true;
      c.subscribe(claimResponseTopic(nonce), { qos: 1 }, (err) => {
        if (err) return finish(classifyClaimError(err, url));
        publishClaimRequest(EgressChannel.wrap(c), claimRequestTopic(nonce), opts.request).catch((e: unknown) => finish(classifyClaimError(e, url)));
      });
    });
  });
}
