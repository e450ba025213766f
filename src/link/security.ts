/**
 * TLS is required to reach a broker (issue 9 §1). Region pinning on a host
 * name means nothing without TLS: DNS or ARP spoofing on the site's LAN puts
 * any broker behind a region name. So:
 *
 * - a broker that is not on this machine is reached over verified TLS, and the
 *   verified certificate must name only hosts of the device's region (the CA
 *   could have issued the same key a certificate for another region, or a
 *   wildcard over all of them);
 * - plaintext (mqtt://, tcp://) or unverified TLS (tls.rejectUnauthorized:
 *   false) is allowed on loopback, or to a site bridge only with the explicit
 *   setting `broker.insecure`, which is logged as an error at every start and
 *   reported as a failure by `tallybox doctor`;
 * - everything else is refused before any socket opens: CONFIG_INVALID, exit 78.
 */
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import type { Config, Region } from '../config/schema.js';
import { TallyboxError, describeError } from '../util/errors.js';
import { REGION_BROKERS, assertBrokerAllowed, isLoopbackHost, matchesRegionHost } from './regions.js';

/** Values of `broker.insecure`: each permits exactly one weaker transport to a non-loopback broker. */
export const INSECURE_SETTINGS = ['plaintext-site-bridge', 'unverified-tls-site-bridge'] as const;
export type InsecureSetting = (typeof INSECURE_SETTINGS)[number];

export type Transport = 'tls' | 'unverified-tls' | 'plaintext';

export interface BrokerSecurity {
  host: string;
  port: number;
  transport: Transport;
  loopback: boolean;
  /** Why this transport is permitted. */
  allowedBy: 'verified-tls' | 'loopback' | 'site-bridge';
  /** The certificate's names are checked against the region (verified TLS to a non-loopback host). */
  certificatePinned: boolean;
}

const PLAINTEXT_SCHEMES = new Set(['mqtt:', 'tcp:']);
const TLS_SCHEMES = new Set(['mqtts:', 'ssl:', 'tls:']);

/**
 * Decide how the broker may be reached, or throw (REGION_MISMATCH for a host
 * outside the region, CONFIG_INVALID naming the key for an unsafe transport).
 * Pure: reads no file, opens no socket.
 */
export function brokerSecurity(broker: Config['broker'], region: Region): BrokerSecurity {
  assertBrokerAllowed(broker.url, region, broker.allowLoopback);
  const u = new URL(broker.url); // valid: assertBrokerAllowed parsed it
  const host = u.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const plaintext = PLAINTEXT_SCHEMES.has(u.protocol);
  if (!plaintext && !TLS_SCHEMES.has(u.protocol)) throw new TallyboxError('CONFIG_INVALID', `broker.url: unsupported scheme ${u.protocol} (use mqtts://)`);
  const port = u.port ? Number(u.port) : plaintext ? 1883 : 8883;
  if (plaintext && broker.tls) {
    throw new TallyboxError('CONFIG_INVALID', `broker.tls is set but broker.url ${broker.url} is plaintext; use mqtts:// so the TLS settings apply`);
  }
  const transport: Transport = plaintext ? 'plaintext' : broker.tls?.rejectUnauthorized === false ? 'unverified-tls' : 'tls';
  const loopback = isLoopbackHost(host);
  const insecure = broker.insecure;
  const wanted: Transport | undefined = insecure === 'plaintext-site-bridge' ? 'plaintext' : insecure === 'unverified-tls-site-bridge' ? 'unverified-tls' : undefined;
  if (wanted !== undefined && wanted !== transport) {
    // A stale setting would read as if the link were weaker (or stronger) than it is.
    throw new TallyboxError('CONFIG_INVALID', `broker.insecure: ${insecure} does not describe this link (${describe(transport)} to ${host}); remove it or fix broker.url / broker.tls`);
  }
  if (transport === 'tls') return { host, port, transport, loopback, allowedBy: 'verified-tls', certificatePinned: !loopback };
  if (loopback) return { host, port, transport, loopback, allowedBy: 'loopback', certificatePinned: false };
  if (wanted === transport) return { host, port, transport, loopback, allowedBy: 'site-bridge', certificatePinned: false };
  if (transport === 'plaintext') {
    throw new TallyboxError(
      'CONFIG_INVALID',
      `broker.url: plaintext ${u.protocol}// to ${host} is refused: a broker that is not on this machine needs TLS (region pinning on a name is worthless without it); use mqtts://, or for a site bridge on a trusted LAN set broker.insecure: plaintext-site-bridge`,
      { host, region },
    );
  }
  throw new TallyboxError(
    'CONFIG_INVALID',
    `broker.tls.rejectUnauthorized: false to ${host} is refused: an unverified certificate proves nothing about the broker or its region; give broker.tls.caFile, or for a site bridge on a trusted LAN set broker.insecure: unverified-tls-site-bridge`,
    { host, region },
  );
}

function describe(t: Transport): string {
  return t === 'tls' ? 'verified TLS' : t === 'unverified-tls' ? 'unverified TLS' : 'plaintext';
}

/** The DNS names in a certificate's subjectAltName ("DNS:a, IP Address:1.2.3.4, DNS:b"). */
export function certificateDnsNames(cert: Pick<PeerCertificate, 'subjectaltname'>): string[] {
  const san = cert.subjectaltname ?? '';
  return san
    .split(/,\s*/)
    .filter((e) => e.startsWith('DNS:'))
    .map((e) => e.slice(4).toLowerCase());
}

/**
 * A `checkServerIdentity` for tls.connect: Node's own host-name check first,
 * then region pinning on what the CA actually certified — every DNS name in
 * the certificate must be one of the region's broker names (a certificate that
 * also names another region or any other host is refused), and there must
 * be at least one. Node calls it only once the chain has verified.
 */
export function regionServerIdentity(region: Region): (host: string, cert: PeerCertificate) => Error | undefined {
  return (host, cert) => {
    const standard = checkServerIdentity(host, cert);
    if (standard) return standard;
    const names = certificateDnsNames(cert);
    const outside = names.filter((n) => !REGION_BROKERS[region].some((p) => matchesRegionHost(p, n)));
    if (names.length > 0 && outside.length === 0) return undefined;
    const why = names.length === 0 ? 'names no DNS host' : `also names ${outside.join(', ')}, outside region "${region}"`;
    return new TallyboxError('REGION_MISMATCH', `broker ${host}: its certificate ${why}; this device is pinned to region ${region} (allowed: ${REGION_BROKERS[region].join(', ')}) and will not connect`, { host, region });
  };
}

/** One line for `tallybox doctor`: how the broker is reached, and whether that is safe. */
export function brokerSecurityCheck(config: Pick<Config, 'broker' | 'region'>): { name: string; verdict: 'ok' | 'warn' | 'fail'; detail: string } {
  const name = 'broker-tls';
  let s: BrokerSecurity;
  try {
    s = brokerSecurity(config.broker, config.region);
  } catch (err) {
    return { name, verdict: 'fail', detail: describeError(err) };
  }
  const ca = config.broker.tls?.caFile ? `CA ${config.broker.tls.caFile}` : 'the system CAs';
  switch (s.allowedBy) {
    case 'verified-tls':
      return { name, verdict: 'ok', detail: `TLS to ${s.host}, verified against ${ca}${s.certificatePinned ? `; certificate names pinned to region ${config.region}` : ' (loopback)'}` };
    case 'loopback':
      return s.transport === 'plaintext'
        ? { name, verdict: 'ok', detail: `plaintext to a broker on this machine (${s.host}): no network between device and broker` }
        : { name, verdict: 'warn', detail: `unverified TLS to a broker on this machine (${s.host}); give broker.tls.caFile to verify it` };
    case 'site-bridge':
      return {
        name,
        verdict: 'fail',
        detail: `INSECURE: ${describe(s.transport)} to ${s.host}, allowed only by broker.insecure: ${config.broker.insecure}; anyone on the LAN can read and alter punches and impersonate the broker; use mqtts:// with a verified certificate`,
      };
  }
}
