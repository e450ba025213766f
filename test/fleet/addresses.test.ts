/**
 * Fleet connections over several source addresses (issue 13 §4: "spreading
 * connections over several loopback source addresses if the port range needs
 * it"): the plan (pure), then a real run on Mosquitto whose connections are
 * read back from the kernel's socket table (/proc/net/tcp), with addresses
 * given and chosen automatically (a port range made small so 8 connections
 * need two addresses), for agents and for the bare baseline.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Mosquitto } from '../../simulators/cloud/mosquitto.js';
import { connectionsPerAddress, ephemeralPortRange, loopbackAddress, planSourceAddresses } from '../../simulators/fleet/addresses.js';
import { fleetOk, main } from '../../simulators/fleet/main.js';
import { defaultProcs, runFleet } from '../../simulators/fleet/run.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';

describe('source address plan', () => {
  it('reads the kernel range, and falls back to the IANA range where there is none', () => {
    expect(ephemeralPortRange(() => '32768\t60999\n')).toEqual([32768, 60999]);
    expect(ephemeralPortRange(() => 'garbage')).toEqual([49152, 65535]);
    expect(
      ephemeralPortRange(() => {
        throw new Error('ENOENT');
      }),
    ).toEqual([49152, 65535]);
    expect(connectionsPerAddress([32768, 60999])).toBe(14_116);
  });

  it('one address while the connections fit in half the range; loopback addresses past that', () => {
    const range: [number, number] = [32768, 60999];
    expect(planSourceAddresses({ connections: 14_116, brokerHost: '127.0.0.1', range }).addresses).toEqual([]);
    const big = planSourceAddresses({ connections: 50_000, brokerHost: '127.0.0.1', range });
    expect(big.addresses).toEqual(['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']);
    expect(big.reason).toMatch(/4 loopback source addresses \(50000 connections, up to 14116 per address/);
    expect(planSourceAddresses({ connections: 50_000, brokerHost: 'localhost', range }).addresses).toHaveLength(4);
  });

  it('a broker elsewhere: no invented addresses, and the reason says which option to use', () => {
    const p = planSourceAddresses({ connections: 50_000, brokerHost: '10.1.2.3', range: [32768, 60999] });
    expect(p.addresses).toEqual([]);
    expect(p.reason).toMatch(/need 4 source addresses .* not on a loopback address: give this host's addresses with --source-addresses/);
  });

  it('given addresses win; one that is not an address is refused', () => {
    expect(planSourceAddresses({ connections: 3, brokerHost: '127.0.0.1', explicit: ['127.0.0.9', '::1'] }).addresses).toEqual(['127.0.0.9', '::1']);
    expect(() => planSourceAddresses({ connections: 3, brokerHost: '127.0.0.1', explicit: ['127.0.0.9', 'nope'] })).toThrow(/not an IP address: "nope"/);
  });

  it('spare loopback addresses never end in .0, .1 or .255 and never repeat', () => {
    const all = Array.from({ length: 2000 }, (_, i) => loopbackAddress(i));
    expect(all.slice(0, 2)).toEqual(['127.0.0.2', '127.0.0.3']);
    expect(all[252]).toBe('127.0.0.254');
    expect(all[253]).toBe('127.0.1.2');
    expect(new Set(all).size).toBe(all.length);
    expect(all.every((a) => /^127\.\d+\.\d+\.\d+$/.test(a) && !/\.(0|1|255)$/.test(a))).toBe(true);
  });

  it('worker processes: one per core, up to two per core past 500 punches/s each, more for the open-file limit', () => {
    expect(defaultProcs(1000, 1, 2, 20_000)).toBe(2);
    expect(defaultProcs(2000, 1, 2, 20_000)).toBe(4);
    expect(defaultProcs(5000, 1, 2, 100_000)).toBe(4); // 5,000 punches/s: still two per core at most
    expect(defaultProcs(5000, 1, 2, 20_000)).toBe(4); // and 1,250 agents each fit in 20,000 descriptors
    expect(defaultProcs(5000, 0.1, 2, 20_000)).toBe(4); // 5,000 agents × ~12 descriptors in 19,744 per process
    expect(defaultProcs(3, 1, 8, 20_000)).toBe(3); // never more processes than devices
    expect(defaultProcs(1000, 1, 2, 1024)).toBe(16); // 64 agents in 1,024 descriptors
  });

  it('the CLI refuses a source address that is not one', async () => {
    const err: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    try {
      expect(await main(['--devices', '2', '--rate', '1', '--duration', '1', '--source-addresses', '127.0.0.2,host'])).toBe(2);
    } finally {
      process.stderr.write = write;
    }
    expect(err.join('')).toMatch(/tallybox: FLEET_USAGE: --source-addresses takes IP addresses separated by commas, not "host"/);
  });
});

/** Established connections to 127.0.0.1:port, by local address, from the kernel's table. */
function connectionsTo(port: number): Map<string, number> {
  const want = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const by = new Map<string, number>();
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || f[2] !== want || f[3] !== '01') continue;
    const hex = f[1]!.split(':')[0]!;
    const local = [3, 2, 1, 0].map((i) => Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join('.');
    by.set(local, (by.get(local) ?? 0) + 1);
  }
  return by;
}

describeWithPeer(systemPeer('mosquitto', { pkg: 'mosquitto' }), 'fleet connections spread over source addresses (Mosquitto)', () => {
  let broker: Mosquitto;
  beforeAll(async () => {
    broker = await Mosquitto.start();
  }, 60_000);
  afterAll(async () => {
    await broker?.stop();
  });

  /** The most connections seen from each local address while the fleet produced. */
  async function run(opts: { mode: 'agent' | 'bare'; sourceAddresses?: string[]; portRange?: [number, number] }) {
    const seen = new Map<string, number>();
    const report = await runFleet({
      devices: 6,
      rate: 1,
      durationSec: 3,
      consumers: 2,
      procs: 2,
      broker: broker.url,
      ...opts,
      onProgress: (p) => {
        if (p.phase !== 'running') return;
        for (const [a, n] of connectionsTo(broker.port)) seen.set(a, Math.max(seen.get(a) ?? 0, n));
      },
    });
    return { report, seen };
  }

  it('agents, addresses given: three devices from each', async () => {
    const { report, seen } = await run({ mode: 'agent', sourceAddresses: ['127.0.0.2', '127.0.0.3'] });
    expect(fleetOk(report)).toBe(true);
    expect(report.sourceAddresses.addresses).toEqual(['127.0.0.2', '127.0.0.3']);
    expect(seen.get('127.0.0.2')).toBe(3);
    expect(seen.get('127.0.0.3')).toBe(3);
  }, 120_000);

  it('bare clients, chosen automatically: a port range too small for 8 connections on one address gives two', async () => {
    // 10 ports: up to 5 connections per address; 6 devices + 2 consumers need two addresses.
    const { report, seen } = await run({ mode: 'bare', portRange: [40000, 40009] });
    expect(fleetOk(report)).toBe(true);
    expect(report.sourceAddresses.addresses).toEqual(['127.0.0.2', '127.0.0.3']);
    expect(report.sourceAddresses.reason).toMatch(/2 loopback source addresses \(8 connections, up to 5 per address/);
    expect(seen.get('127.0.0.2')).toBe(3);
    expect(seen.get('127.0.0.3')).toBe(3);
  }, 120_000);
});
