import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { statSync, writeFileSync, renameSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { PresenceEvent } from '../../firmware-bridge/wifi/events.js';
import { EventSocketServer } from '../../firmware-bridge/wifi/event-socket.js';
import { HostapdControl } from '../../firmware-bridge/wifi/hostapd-ctrl.js';
import { LeaseWatcher } from '../../firmware-bridge/wifi/lease-watch.js';
import { PresenceTracker } from '../../firmware-bridge/wifi/presence.js';
import { SimHostapdSocket } from '../../simulators/wifi/hostapd-socket.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';
import { tempDir, waitFor } from './helpers.js';

const ROOT = resolve(import.meta.dirname, '../..');
const ACTION = join(ROOT, 'firmware-bridge/wifi/hostapd-action.sh');
const DHCP_SCRIPT = join(ROOT, 'firmware-bridge/wifi/dnsmasq-script.sh');
const A = '3c:22:fb:12:34:56';
const B = 'da:a1:19:00:00:01';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
function tmp() {
  const t = tempDir();
  cleanups.push(t.cleanup);
  return t.dir;
}

describe('hostapd control client against a hostapd-compatible socket', () => {
  it('attaches, catches up on stations already there, reports joins and leaves, ignores other events', async () => {
    const dir = tmp();
    const ap = new SimHostapdSocket({ dir: join(dir, 'hostapd'), iface: 'wlan0' });
    ap.start();
    cleanups.push(() => ap.stop());
    ap.connect(A); // associated before the agent starts
    const ctl = new HostapdControl({ socketPath: ap.path, clientDir: join(dir, 'client') });
    cleanups.push(() => ctl.close());
    const seen: PresenceEvent[] = [];
    ctl.on('presence', (e) => seen.push(e));
    expect(await ctl.open()).toEqual([A]);
    expect(statSync(join(dir, 'client')).mode & 0o777).toBe(0o700);
    ap.connect(B);
    ap.wrongPassword('3c:22:fb:99:99:99'); // associates, never connects: a leave of someone never joined, no join
    for (let i = 0; i < 200; i++) ap.broadcast(`<3>CTRL-EVENT-SOMETHING-NEW ${i}`);
    ap.disconnect(A);
    await ctl.ping();
    await waitFor(() => seen.length >= 3, 'events');
    expect(seen.map((e) => [e.type, e.mac, e.iface, e.source])).toEqual([
      ['joined', B, 'wlan0', 'hostapd'],
      ['left', '3c:22:fb:99:99:99', 'wlan0', 'hostapd'],
      ['left', A, 'wlan0', 'hostapd'],
    ]);
    expect(ctl.stats.ignored).toBeGreaterThanOrEqual(201);
  });

  it('reports a socket that disappears, refuses to attach while it is gone, and re-attaches when it returns', async () => {
    const dir = tmp();
    const ap = new SimHostapdSocket({ dir: join(dir, 'hostapd'), iface: 'wlan1' });
    ap.start();
    cleanups.push(() => ap.stop());
    const ctl = new HostapdControl({ socketPath: ap.path, clientDir: join(dir, 'client'), timeoutMs: 300 });
    cleanups.push(() => ctl.close());
    await ctl.open();
    const lost = new Promise<Error>((r) => ctl.onLost(r));
    ap.stop();
    expect((await lost) as { code?: string }).toMatchObject({ code: 'HOSTAPD_GONE' });
    await expect(ctl.open()).rejects.toMatchObject({ code: 'HOSTAPD_SOCKET_MISSING' });
    ap.start();
    ap.connect(B);
    expect(await ctl.open()).toEqual([B]);
    await ctl.ping();
  });

  it('a hostapd restart between heartbeats: the PING fails, never hangs', async () => {
    const dir = tmp();
    const ap = new SimHostapdSocket({ dir: join(dir, 'hostapd'), iface: 'wlan0' });
    ap.start();
    cleanups.push(() => ap.stop());
    const ctl = new HostapdControl({ socketPath: ap.path, clientDir: join(dir, 'client'), timeoutMs: 300 });
    cleanups.push(() => ctl.close());
    await ctl.open();
    ap.restart();
    await expect(ctl.ping()).rejects.toMatchObject({ code: expect.stringMatching(/^HOSTAPD_(GONE|RESTARTED|TIMEOUT|NOT_ATTACHED)$/) });
  });
});

describe('dnsmasq lease watcher', () => {
  it('turns rewrites into joins and leaves, with fingerprints, through rapid rewrites', async () => {
    const dir = tmp();
    const path = join(dir, 'dhcp.leases');
    const w = new LeaseWatcher({ path, pollMs: 50, nowSec: () => 1_700_000_000 });
    const seen: PresenceEvent[] = [];
    w.on('presence', (e) => seen.push(e));
    await w.start(); // no file yet: no leases, no error
    cleanups.push(() => w.stop());
    const write = (text: string) => {
      // dnsmasq rewrites the whole file; a rename as well as an in-place rewrite must be seen
      writeFileSync(`${path}.new`, text);
      renameSync(`${path}.new`, path);
    };
    write(`1800000000 ${A} 10.0.0.2 Alices-iPhone 01:${A}\n`);
    await waitFor(() => seen.length === 1, 'first join');
    // The first lease file found lists leases from before the watcher (dnsmasq keeps them across its restarts): catch-up, not arrivals.
    expect(seen[0]).toEqual({ type: 'joined', source: 'dnsmasq-lease', iface: 'dhcp', mac: A, fingerprint: { hostname: 'Alices-iPhone', clientId: `01:${A}` }, catchUp: true });
    // 50 rewrites in a burst: the final state is what counts, nothing is lost or invented
    for (let i = 0; i < 50; i++) writeFileSync(path, `1800000000 ${A} 10.0.0.2 Alices-iPhone 01:${A}\n${i % 2 ? `1800000000 ${B} 10.0.0.3 * *\n` : ''}`);
    writeFileSync(path, `1800000000 ${B} 10.0.0.3 * *\n1600000000 3c:22:fb:00:00:07 10.0.0.9 * *\n`); // the second one has expired
    await waitFor(() => w.leases.length === 1 && w.leases[0]!.mac === B && seen.at(-1)?.type === 'left', 'final state');
    // B arrived in a later rewrite: a live join.
    const bJoin = seen.find((e) => e.mac === B && e.type === 'joined');
    expect(bJoin && 'catchUp' in bJoin).toBe(false);
    const last = seen.filter((e) => e.mac === A).at(-1);
    expect(last?.type).toBe('left');
    expect(seen.some((e) => e.mac === '3c:22:fb:00:00:07')).toBe(false);
  });

  it('a torn or malformed line is skipped and counted; a torn tail never reads as a leave', async () => {
    const dir = tmp();
    const path = join(dir, 'dhcp.leases');
    writeFileSync(path, `1800000000 ${A} 10.0.0.2 * *\n1800000000 ${B} 10.0.0.3 * *\n`);
    const w = new LeaseWatcher({ path, pollMs: 0, nowSec: () => 1_700_000_000 });
    const seen: PresenceEvent[] = [];
    const skipped: Array<{ malformed: number; torn: number }> = [];
    w.on('presence', (e) => seen.push(e));
    w.on('skipped', (c) => skipped.push(c));
    await w.start();
    cleanups.push(() => w.stop());
    writeFileSync(path, `1800000000 ${A} 10.0.0.2 * *\nthis is not a lease\n1800000000 da:a1:19:0`);
    await w.read();
    expect(skipped.at(-1)).toEqual({ malformed: 1, torn: 1 });
    expect(seen.filter((e) => e.type === 'left')).toEqual([]);
    expect(w.stats).toMatchObject({ malformed: 1, torn: 1 });
  });

  it('an unreadable lease file is an error with a code, not a crash', async () => {
    const dir = tmp();
    const w = new LeaseWatcher({ path: dir, pollMs: 0 }); // a directory: EISDIR
    await expect(w.start()).rejects.toMatchObject({ code: 'LEASE_FILE_UNREADABLE' });
    w.stop();
  });
});

describe('the agent event socket and the shipped hook scripts', () => {
  it('is 0600 in a 0700 directory and accepts dnsmasq --dhcp-script invocations', async () => {
    const dir = tmp();
    const sock = join(dir, 'run', 'events.sock');
    const srv = new EventSocketServer({ path: sock });
    await srv.start();
    cleanups.push(() => srv.stop());
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'run')).mode & 0o777).toBe(0o700);
    const seen: PresenceEvent[] = [];
    srv.on('presence', (e) => seen.push(e));
    const env = {
      ...process.env,
      TALLYBOX_WIFI_SOCKET: sock,
      TALLYBOX_NODE: process.execPath,
      DNSMASQ_INTERFACE: 'br-lan',
      DNSMASQ_CLIENT_ID: `01:${B}`,
      DNSMASQ_REQUESTED_OPTIONS: '1,121,3,6,15,119,252',
      DNSMASQ_SUPPLIED_HOSTNAME: 'phone',
    };
    for (const args of [['add', B, '10.0.0.3', 'phone'], ['old', B, '10.0.0.3'], ['init'], ['tftp', '1', '2', '3'], ['del', B, '10.0.0.3']]) {
      const r = spawnSync(DHCP_SCRIPT, args, { env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
    }
    await waitFor(() => seen.length === 3, 'three events');
    expect(seen[0]).toEqual({ type: 'joined', source: 'dnsmasq-script', iface: 'br-lan', mac: B, fingerprint: { clientId: `01:${B}`, hostname: 'phone', requestedOptions: '1,121,3,6,15,119,252' } });
    expect(seen.map((e) => e.type)).toEqual(['joined', 'joined', 'left']);
  });

  it('a hook with the agent down exits 0 (dnsmasq and hostapd_cli carry on) and says so without the MAC', () => {
    const dir = tmp();
    const r = spawnSync(ACTION, ['wlan0', 'AP-STA-CONNECTED', A], { env: { ...process.env, TALLYBOX_WIFI_SOCKET: join(dir, 'none.sock'), TALLYBOX_NODE: process.execPath }, encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/ENOENT: event not delivered/);
    expect(r.stderr).not.toContain(A);
  });

  it('drops oversized and malformed messages and keeps serving', async () => {
    const dir = tmp();
    const sock = join(dir, 'run', 'events.sock');
    const srv = new EventSocketServer({ path: sock });
    await srv.start();
    cleanups.push(() => srv.stop());
    const { connect } = await import('node:net');
    const send = (s: string) =>
      new Promise<void>((res) =>
        connect(sock)
          .on('connect', function (this: import('node:net').Socket) {
            this.end(s);
          })
          .on('close', () => res())
          .on('error', () => res()),
      );
    await send(`${'x'.repeat(10_000)}\n`);
    await send('nonsense\n');
    await waitFor(() => srv.stats.oversized === 1 && srv.stats.malformed === 1, 'counted');
  });
});

const hostapdCli = systemPeer('hostapd_cli', { pkg: 'hostapd' });
describeWithPeer(hostapdCli, 'the real hostapd_cli -a, attached to the simulated control socket, driving the shipped action script', () => {
  it('forwards joins and leaves to the agent socket and ignores other events', async () => {
    const dir = tmp();
    const sock = join(dir, 'run', 'events.sock');
    const srv = new EventSocketServer({ path: sock });
    await srv.start();
    cleanups.push(() => srv.stop());
    const seen: PresenceEvent[] = [];
    srv.on('presence', (e) => seen.push(e));
    const ap = new SimHostapdSocket({ dir: join(dir, 'hostapd'), iface: 'wlan0' });
    ap.start();
    cleanups.push(() => ap.stop());
    const cli: ChildProcess = spawn(hostapdCli.path!, ['-p', join(dir, 'hostapd'), '-i', 'wlan0', '-a', ACTION], { env: { ...process.env, TALLYBOX_WIFI_SOCKET: sock, TALLYBOX_NODE: process.execPath }, stdio: 'ignore' });
    cleanups.push(() => cli.kill('SIGTERM'));
    await waitFor(() => ap.monitors === 1, 'hostapd_cli attached');
    ap.connect(A);
    ap.broadcast('<3>AP-STA-POSSIBLE-PSK-MISMATCH 3c:22:fb:99:99:99');
    ap.disconnect(A);
    await waitFor(() => seen.length === 2, 'join and leave', 10_000);
    expect(seen).toEqual([
      { type: 'joined', source: 'hostapd-cli', iface: 'wlan0', mac: A },
      { type: 'left', source: 'hostapd-cli', iface: 'wlan0', mac: A },
    ]);
    // hostapd restarts: hostapd_cli loses its connection (it exits; its supervisor restarts it)
    ap.stop();
    await waitFor(() => cli.exitCode !== null || cli.signalCode !== null, 'hostapd_cli exit', 15_000);
  });
});

describe('presence: the union of every radio and source', () => {
  it('roaming between bands in either order is no new join; a leave waits out the grace', async () => {
    const t = new PresenceTracker({ dhcpIsPresence: false, leaveGraceMs: 80 });
    const ev: string[] = [];
    t.on('joined', (m, i) => ev.push(`join ${m} ${i}`));
    t.on('left', (m) => ev.push(`left ${m}`));
    t.apply({ type: 'joined', source: 'hostapd', iface: 'wlan0', mac: A });
    t.apply({ type: 'joined', source: 'hostapd', iface: 'wlan1', mac: A }); // connect on 5 GHz first
    t.apply({ type: 'left', source: 'hostapd', iface: 'wlan0', mac: A });
    t.apply({ type: 'left', source: 'hostapd', iface: 'wlan1', mac: A }); // disconnect before connect
    t.apply({ type: 'joined', source: 'hostapd-cli', iface: 'wlan0', mac: A });
    expect(ev).toEqual([`join ${A} wlan0`]);
    t.apply({ type: 'left', source: 'hostapd-cli', iface: 'wlan0', mac: A });
    await waitFor(() => ev.length === 2, 'leave');
    expect(ev[1]).toBe(`left ${A}`);
    t.stop();
  });
  it('DHCP is presence only without hostapd; its fingerprints are learnt and merged either way', () => {
    const t = new PresenceTracker({ dhcpIsPresence: false });
    const fps: unknown[] = [];
    t.on('fingerprint', (_m, fp) => fps.push(fp));
    t.apply({ type: 'joined', source: 'dnsmasq-script', iface: 'br-lan', mac: B, fingerprint: { clientId: 'c', requestedOptions: '1,3' } });
    t.apply({ type: 'joined', source: 'dnsmasq-lease', iface: 'dhcp', mac: B, fingerprint: { clientId: 'c', hostname: 'h' } });
    expect(t.isPresent(B)).toBe(false);
    expect(t.fingerprintOf(B)).toEqual({ clientId: 'c', hostname: 'h', requestedOptions: '1,3' });
    const d = new PresenceTracker({ dhcpIsPresence: true });
    d.apply({ type: 'joined', source: 'dnsmasq-lease', iface: 'dhcp', mac: B });
    expect(d.isPresent(B)).toBe(true);
    t.stop();
    d.stop();
  });
  it('a catch-up list replaces what one source held on one interface', () => {
    const t = new PresenceTracker({ dhcpIsPresence: false, leaveGraceMs: 0 });
    t.apply({ type: 'joined', source: 'hostapd', iface: 'wlan0', mac: A });
    t.replace('hostapd', 'wlan0', [B]);
    expect(t.isPresent(B)).toBe(true);
    t.stop();
  });
  it('joins say whether they are live: an event is, a catch-up list or a catch-up lease is not (no enrolment candidate)', () => {
    const t = new PresenceTracker({ dhcpIsPresence: true, leaveGraceMs: 0 });
    const joins: Array<[string, boolean]> = [];
    t.on('joined', (mac, _i, _g, live) => joins.push([mac, live]));
    t.apply({ type: 'joined', source: 'hostapd', iface: 'wlan0', mac: A });
    t.replace('hostapd', 'wlan1', [B]);
    t.apply({ type: 'joined', source: 'dnsmasq-lease', iface: 'dhcp', mac: '3c:22:fb:00:00:09', catchUp: true });
    expect(joins).toEqual([
      [A, true],
      [B, false],
      ['3c:22:fb:00:00:09', false],
    ]);
    t.stop();
  });
});
