/**
 * Source addresses for a fleet's connections. Every connection to one broker
 * (one destination address and port) needs its own source (address, port)
 * pair, and the kernel hands out source ports from the ephemeral range
 * (Linux: /proc/sys/net/ipv4/ip_local_port_range, 32768–60999 = 28,232 ports).
 * A killed worker's sockets also keep their ports for a while (TIME_WAIT, 60 s
 * on Linux) while its agents reconnect on new ones. So past a share of that
 * range, the connections are spread over several source addresses; on a
 * loopback broker those are free for the asking (all of 127.0.0.0/8 is the
 * loopback interface on Linux), elsewhere they must be addresses of this host.
 */
import { readFileSync } from 'node:fs';
import { isIPv4, isIP } from 'node:net';

/** The IANA dynamic range, where the kernel does not say (RFC 6335). */
const DEFAULT_RANGE: [number, number] = [49152, 65535];

/** This host's ephemeral source port range. */
export function ephemeralPortRange(read: () => string = () => readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')): [number, number] {
  try {
    const [lo, hi] = read().trim().split(/\s+/).map(Number);
    if (Number.isInteger(lo) && Number.isInteger(hi) && lo! > 0 && hi! >= lo!) return [lo!, hi!];
  } catch {
    // Not Linux (no /proc): the IANA range below is what other kernels use.
  }
  return DEFAULT_RANGE;
}

/**
 * Connections per source address before spreading: half the range, the rest
 * is headroom for ports held in TIME_WAIT by restarted agents (chaos) and for
 * the host's other connections.
 */
export function connectionsPerAddress(range: [number, number]): number {
  return Math.max(1, Math.floor((range[1] - range[0] + 1) / 2));
}

export interface SourcePlan {
  /** Source addresses, dealt round-robin over the devices; empty: the kernel picks (one address). */
  addresses: string[];
  /** Why (for the report). */
  reason: string;
}

/** The i-th spare loopback address: 127.0.0.2, 127.0.0.3, … 127.0.0.254, 127.0.1.2, … (never .0, .1 or .255 in the last byte) */
export function loopbackAddress(i: number): string {
  const n = Math.floor(i / 253) * 256 + (i % 253) + 2;
  return `127.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

/**
 * How `connections` connections to `brokerHost` leave this host. Explicit
 * addresses win (each must be an IP address; the kernel refuses one the host
 * does not have when the connection is made). Otherwise one address while the
 * connections fit in half the port range; past that, as many 127.0.0.x as
 * needed when the broker is on an IPv4 loopback address, and a note that
 * addresses are needed when it is not.
 */
export function planSourceAddresses(opts: { connections: number; brokerHost: string; explicit?: readonly string[]; range?: [number, number] }): SourcePlan {
  if (opts.explicit && opts.explicit.length > 0) {
    const bad = opts.explicit.find((a) => isIP(a) === 0);
    if (bad !== undefined) throw new Error(`not an IP address: "${bad}"`);
    return { addresses: [...opts.explicit], reason: `${opts.explicit.length} source address(es) given` };
  }
  const range = opts.range ?? ephemeralPortRange();
  const per = connectionsPerAddress(range);
  if (opts.connections <= per) return { addresses: [], reason: `one source address (${opts.connections} connections, up to ${per} per address with ports ${range[0]}–${range[1]})` };
  const needed = Math.ceil(opts.connections / per);
  const loopback = opts.brokerHost === 'localhost' || (isIPv4(opts.brokerHost) && opts.brokerHost.startsWith('127.'));
  if (!loopback)
    return {
      addresses: [],
      reason: `${opts.connections} connections need ${needed} source addresses (up to ${per} per address with ports ${range[0]}–${range[1]}) and the broker is not on a loopback address: give this host's addresses with --source-addresses`,
    };
  return { addresses: Array.from({ length: needed }, (_, i) => loopbackAddress(i)), reason: `${needed} loopback source addresses (${opts.connections} connections, up to ${per} per address with ports ${range[0]}–${range[1]})` };
}
