/**
 * Region pinning (privacy rule 6): a device provisioned for one region talks
 * only to that region's brokers. Mainland China data stays in China; overseas
 * devices use the Singapore region. The lists are compiled in, not configured,
 * so a config edit alone cannot move a device's data out of its region.
 */
import { isIP } from 'node:net';
import type { Region } from '../config/schema.js';
import { TallyboxError } from '../util/errors.js';

/** Host patterns: exact names, or '*.' + suffix for any subdomain. */
export const REGION_BROKERS: Readonly<Record<Region, readonly string[]>> = {
  cn: ['mqtt.cn.tallybox.cloud', '*.cn.tallybox.cloud'],
  sg: ['mqtt.sg.tallybox.cloud', '*.sg.tallybox.cloud'],
};

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  return isIP(h) === 4 && h.startsWith('127.');
}

/** Whether `host` (a URL host, or a DNS name in a certificate, possibly itself '*.x') fits `pattern`. */
export function matchesRegionHost(pattern: string, host: string): boolean {
  if (pattern.startsWith('*.')) return host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1;
  return host === pattern;
}

/** Throw REGION_MISMATCH unless `url`'s host is allowed for `region`. */
export function assertBrokerAllowed(url: string, region: Region, allowLoopback: boolean): void {
  let host: string;
  try {
    host = new URL(url).hostname.toLowerCase();
  } catch {
    throw new TallyboxError('CONFIG_INVALID', `broker.url "${url}" is not a valid URL`);
  }
  if (isLoopbackHost(host)) {
    if (allowLoopback) return;
    throw new TallyboxError('REGION_MISMATCH', `broker ${host} is on this machine; set broker.allowLoopback: true to use a local broker (demo, tests, site bridge)`, { host, region });
  }
  const allowed = REGION_BROKERS[region];
  if (!allowed.some((p) => matchesRegionHost(p, host))) {
    throw new TallyboxError('REGION_MISMATCH', `broker ${host} is not a "${region}" region broker (allowed: ${allowed.join(', ')}); this device is pinned to region ${region} and will not connect`, { host, region });
  }
}
