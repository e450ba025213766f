/**
 * dnsmasq's lease file (OpenWrt /tmp/dhcp.leases; Debian
 * /var/lib/misc/dnsmasq.leases), one lease a line:
 *
 *   expiry-epoch mac ip hostname-or-* client-id-or-*
 *
 * then, when DHCPv6 is on, a `duid …` line and IPv6 leases (no MAC: not ours).
 * dnsmasq rewrites the file whole on every change, so a reader may see a
 * half-written last line: a line without its newline is 'torn' and skipped
 * (the next rewrite completes it); a line that is not a lease is 'malformed'
 * and skipped. Neither is ever fatal; both are counted.
 */
import { canonicalMac } from './events.js';

export interface Lease {
  /** Seconds since the epoch; 0: an infinite lease. */
  expiry: number;
  mac: string;
  ip: string;
  hostname?: string;
  clientId?: string;
}

export interface LeaseFile {
  leases: Lease[];
  malformed: number;
  torn: number;
}

/**
 * Parsed lines of the previous read, by their text: dnsmasq rewrites the
 * whole file for one changed lease, so most lines are the same as last time
 * and need no parsing again (a 5,000-lease file, rewritten every second).
 */
export type LeaseLineCache = Map<string, { key: string; lease: Lease | null }>;

/**
 * A flat copy of a line: a substring of the file's text would keep that whole
 * text (hundreds of KiB) alive for as long as the line stays cached, one more
 * file per rewrite that brings a new line (RSS growing by the rewrite).
 */
const detach = (line: string): string => Buffer.from(line, 'utf8').toString('utf8');

export function parseLeaseFile(text: string, cache?: { prev: LeaseLineCache; next: LeaseLineCache }): LeaseFile {
  const out: LeaseFile = { leases: [], malformed: 0, torn: 0 };
  const lines = text.split('\n');
  // The element after the last '\n' is '' for a complete file; anything else was cut mid-write.
  const tail = lines.pop() ?? '';
  if (tail.trim() !== '') out.torn++;
  let v6 = false;
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '') continue;
    if (line === 'duid' || line.startsWith('duid ')) {
      v6 = true;
      continue;
    }
    if (v6) continue; // IPv6 leases name an IAID, not a MAC
    const known = cache?.prev.get(line);
    let lease: Lease | null;
    if (known !== undefined) {
      lease = known.lease;
      cache!.next.set(known.key, known); // the old key: this read's text is not retained
    } else {
      const key = cache ? detach(line) : line;
      const f = key.split(/\s+/);
      lease = f.length === 5 ? (parseLeaseFields(f) ?? null) : null;
      cache?.next.set(key, { key, lease });
    }
    if (lease) out.leases.push(lease);
    else out.malformed++;
  }
  return out;
}

function parseLeaseFields(f: string[]): Lease | undefined {
  const [exp, macText, ip, host, cid] = f as [string, string, string, string, string];
  if (!/^\d{1,12}$/.test(exp)) return undefined;
  const mac = canonicalMac(macText);
  if (!mac || !/^[0-9a-fA-F.:]+$/.test(ip)) return undefined;
  const lease: Lease = { expiry: Number(exp), mac, ip };
  if (host !== '*') lease.hostname = host;
  if (cid !== '*') lease.clientId = cid;
  return lease;
}
