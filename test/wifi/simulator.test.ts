import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isRandomisedMac } from '../../firmware-bridge/wifi/events.js';
import { parseLeaseFile } from '../../firmware-bridge/wifi/leases.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';
import { tempDir } from './helpers.js';

const CLI = resolve(import.meta.dirname, '../../dist/simulators/cli.js');
const hostapdCli = systemPeer('hostapd_cli', { pkg: 'hostapd' });
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startSim(args: string[]): Promise<{ dir: string; control: string; ctrlDir: string; leaseFile: string; phones: Array<{ id: string; mac: string; randomised: boolean }>; proc: ChildProcess }> {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const proc = spawn(process.execPath, [CLI, 'wifi', '--dir', t.dir, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => new Promise<void>((r) => (proc.exitCode !== null ? r() : (proc.once('exit', () => r()), proc.kill('SIGTERM')))));
  const line = await new Promise<string>((res, rej) => {
    createInterface({ input: proc.stdout! }).once('line', res);
    proc.once('exit', (c) => rej(new Error(`simulator exited ${c}`)));
  });
  return { ...JSON.parse(line), dir: t.dir, proc };
}

async function post(base: string, path: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const j = (await r.json()) as Record<string, unknown>;
  if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

describe('tallybox-sim wifi', () => {
  it('makes phones with vendor and private MACs, and writes a dnsmasq-format lease file as they join', async () => {
    const sim = await startSim(['--phones', '1', '--random', '1']);
    expect(sim.phones.map((p) => isRandomisedMac(p.mac))).toEqual([false, true]);
    await post(sim.control, '/join', { phone: sim.phones[0]!.id, iface: 'wlan0' });
    await post(sim.control, '/join', { phone: sim.phones[1]!.id, iface: 'wlan1' });
    const leases = parseLeaseFile(readFileSync(sim.leaseFile, 'utf8'));
    expect(leases).toMatchObject({ malformed: 0, torn: 0 });
    expect(leases.leases.map((l) => l.mac).sort()).toEqual(sim.phones.map((p) => p.mac).sort());
    const rotated = (await post(sim.control, '/rotate', { phone: sim.phones[1]!.id })).phone as { mac: string };
    expect(rotated.mac).not.toBe(sim.phones[1]!.mac);
    expect(isRandomisedMac(rotated.mac)).toBe(true);
    const state = (await (await fetch(`${sim.control}/state`)).json()) as { ifaces: Record<string, { stations: number }> };
    expect(state.ifaces.wlan0!.stations + state.ifaces.wlan1!.stations).toBe(2);
  });

  it('refuses a bad control request and changes nothing', async () => {
    const sim = await startSim([]);
    const r = await fetch(`${sim.control}/join`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"phone":"nobody"}' });
    expect(r.status).toBe(400);
    const big = await fetch(`${sim.control}/phones`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ x: 'y'.repeat(10_000) }) });
    expect(big.status).toBe(413);
    const state = (await (await fetch(`${sim.control}/state`)).json()) as { phones: unknown[] };
    expect(state.phones).toEqual([]);
  });
});

describeWithPeer(hostapdCli, 'the real hostapd_cli against the simulated control socket', () => {
  it('pings it and lists its stations (STA-FIRST / STA-NEXT)', async () => {
    const sim = await startSim(['--phones', '2']);
    for (const p of sim.phones) await post(sim.control, '/join', { phone: p.id, iface: 'wlan1' });
    const ping = spawnSync(hostapdCli.path!, ['-p', sim.ctrlDir, '-i', 'wlan1', 'ping'], { encoding: 'utf8', timeout: 10_000 });
    expect(ping.stdout).toContain('PONG');
    const all = spawnSync(hostapdCli.path!, ['-p', sim.ctrlDir, '-i', 'wlan1', 'all_sta'], { encoding: 'utf8', timeout: 10_000 });
    for (const p of sim.phones) expect(all.stdout).toContain(p.mac);
    expect(join(sim.ctrlDir, 'wlan1')).toBeTruthy();
  });
});
