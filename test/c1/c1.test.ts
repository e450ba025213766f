/**
 * C1 end to end, in process: the agent with its C1 role started by the
 * `tallybox run` start path, the cloud emulator (signed SubjectUpsert with a
 * WIFI_MAC credential), the simulated office (hostapd control sockets on two
 * bands, a dnsmasq lease file).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { startC1Stack, type C1Stack } from '../../src/cli/demo-c1.js';
import { validateConfig } from '../../src/config/load.js';
import { ResultCode } from '../../src/proto/index.js';
import { sleep } from '../../src/cli/demo-kit.js';

const stacks: C1Stack[] = [];
afterEach(async () => {
  for (const s of stacks.splice(0)) await s.close();
});

async function until(fn: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await fn())) {
    if (performance.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

/** Every spelling of a MAC that could leak: aa:bb:…, aa-bb-…, aabbcc…, upper case, and the 6 raw bytes. */
function macNeedles(mac: string): Buffer[] {
  const hex = mac.replace(/:/g, '');
  const forms = [mac, mac.replace(/:/g, '-'), hex, hex.match(/..../g)!.join('.')];
  return [...forms, ...forms.map((f) => f.toUpperCase())].map((f) => Buffer.from(f)).concat([Buffer.from(hex, 'hex')]);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
}

describe('C1: Wi-Fi presence punches', () => {
  it('enrolled phones punch once; roaming, repeats, strangers and rotated addresses do not', async () => {
    const stack = await startC1Stack({ c1: { rules: { firstJoinOfDay: true, rejoinAfterMin: 0.001 } } });
    stacks.push(stack);
    const { office, role, dev } = stack;
    // Capture every packet the device publishes (state, punches, results) from the moment it is enrolled.
    const spy = await mqtt.connectAsync(dev.broker.url);
    const captured: Array<{ topic: string; payload: Buffer }> = [];
    spy.on('message', (topic, payload) => captured.push({ topic, payload: Buffer.from(payload) }));
    await spy.subscribeAsync('#');

    const alice = office.addPhone({ id: 'alice' }); // vendor MAC
    const bo = office.addPhone({ id: 'bo', randomised: true }); // private MAC, enrolled as such
    const stranger = office.addPhone({ id: 'stranger', randomised: true });
    expect(await stack.enrol('sub-alice', alice.mac)).toBe(ResultCode.RESULT_CODE_OK);
    expect(await stack.enrol('sub-bo', bo.mac)).toBe(ResultCode.RESULT_CODE_OK);

    office.join('alice', 'wlan0');
    office.join('bo', 'wlan1');
    await until(() => dev.sink.punches().length === 2, 'two WIFI punches');
    expect(
      dev.sink
        .punches()
        .map((p) => [p.subjectId, p.method])
        .sort(),
    ).toEqual([
      ['sub-alice', 4],
      ['sub-bo', 4],
    ]);

    // Band roaming (either order) is no new punch.
    office.roam('alice', 'wlan1');
    office.roam('bo', 'wlan0', 'disconnect-first');
    // An unenrolled private MAC produces nothing; neither does a wrong password.
    office.join('stranger', 'wlan0');
    office.wrongPassword('alice', 'wlan0');
    await sleep(300);
    await role.settled();
    expect(role.stats.punches).toBe(2);
    expect(role.stats.unknown).toBeGreaterThanOrEqual(1);

    // Away past the leave grace and the re-join time, back within the repeat window (60 s): one punch.
    office.leave('alice');
    await until(() => !role.tracker.isPresent(alice.mac), 'alice left', 5000);
    await sleep(100);
    office.join('alice', 'wlan0');
    await sleep(300);
    await role.settled();
    expect(role.stats.repeats).toBe(1);
    expect(role.stats.punches).toBe(2);

    // Nobody needs re-enrolment yet: the command results say so (an empty list, not a guess).
    expect((await stack.command({ rosterSync: { subjectIds: ['sub-alice', 'sub-bo'] } })).wifiReenrolment?.subjectIds).toEqual([]);
    // Bo's phone rotates its private address: gone under the old MAC, back under an unknown one with the same DHCP fingerprint.
    await until(() => role.tracker.fingerprintOf(bo.mac) !== undefined, 'bo fingerprint learnt from the lease file');
    office.rotate('bo');
    await until(() => dev.sink.state(stack.deviceId)?.wifiReenrolmentNeeded === 1, 're-enrolment needed in DeviceState', 10_000);
    await role.settled();
    expect(role.stats.punches).toBe(2);
    expect(dev.sink.punches()).toHaveLength(2);
    // ...and in command results: a RosterSync's, and a SubjectUpsert's (re-arming an enrolment window for Bo).
    expect((await stack.command({ rosterSync: { subjectIds: ['sub-alice', 'sub-bo'] } })).wifiReenrolment?.subjectIds).toEqual(['sub-bo']);
    const rearm = await stack.command({ subjectUpsert: { subjectId: 'sub-bo', displayName: 'Staff sub-bo', wifiEnrol: { ssid: 'Office', windowSec: 1 } } });
    expect(rearm.reason).toBe('wifi_enrolment_armed');
    expect(rearm.wifiReenrolment?.subjectIds).toEqual(['sub-bo']);

    // Re-enrolling the new address clears it, and the next visit punches again.
    expect(await stack.enrol('sub-bo', office.phone('bo').mac)).toBe(ResultCode.RESULT_CODE_OK);
    office.leave('bo');
    await until(() => !role.tracker.isPresent(office.phone('bo').mac), 'bo left', 5000);
    office.join('bo', 'wlan1');
    await until(() => dev.sink.state(stack.deviceId)?.wifiReenrolmentNeeded === 0, 'cleared', 10_000);

    // No MAC in clear: not in any database file, not in anything the device published.
    const macs = [alice.mac, bo.mac, office.phone('bo').mac, stranger.mac];
    // The scan finds a MAC where there is one (a check that cannot fail proves nothing).
    expect(macNeedles(alice.mac).some((n) => Buffer.from(`lease ${alice.mac.toUpperCase()} x`).includes(n))).toBe(true);
    const files = filesUnder(dev.dataDir).filter((f) => statSync(f).size > 0);
    expect(files.some((f) => /\.db$/.test(f))).toBe(true);
    for (const f of files) {
      const bytes = readFileSync(f);
      for (const mac of macs) for (const n of macNeedles(mac)) expect(bytes.includes(n), `${n.toString('hex')} in ${f}`).toBe(false);
    }
    await spy.endAsync();
    const fromDevice = captured.filter((c) => !c.topic.endsWith('/cmd'));
    expect(fromDevice.length).toBeGreaterThan(3);
    for (const c of fromDevice) for (const mac of macs) for (const n of macNeedles(mac)) expect(c.payload.includes(n), `MAC in ${c.topic}`).toBe(false);
  });

  it('presence from the dnsmasq lease file alone (no hostapd): a new lease is a join', async () => {
    const stack = await startC1Stack({ sources: 'dnsmasq' });
    stacks.push(stack);
    const p = stack.office.addPhone({ id: 'carol' });
    expect(await stack.enrol('sub-carol', p.mac)).toBe(ResultCode.RESULT_CODE_OK);
    stack.office.join('carol', 'wlan0');
    await until(() => stack.dev.sink.punches().length === 1, 'a WIFI punch from the lease');
    expect(stack.dev.sink.punches()[0]!.subjectId).toBe('sub-carol');
  });

  it('the hostapd sources are supervised peripherals: a restart of hostapd is re-attached and reported', async () => {
    const stack = await startC1Stack({});
    stacks.push(stack);
    const state = () => stack.dev.agent.state().peripherals ?? [];
    await until(() => state().filter((p) => p.name?.startsWith('wifi-ap:') && p.online).length === 2, 'both radios attached');
    stack.office.aps.get('wlan0')!.stop();
    await until(() => state().some((p) => p.name === 'wifi-ap:wlan0' && !p.online), 'wlan0 reported down');
    stack.office.aps.get('wlan0')!.start();
    await until(() => state().some((p) => p.name === 'wifi-ap:wlan0' && p.online), 'wlan0 re-attached', 20_000);
    expect(JSON.stringify(state())).not.toMatch(/[0-9a-f]{2}(:[0-9a-f]{2}){5}/i);
  });
});

describe('C1 configuration', () => {
  const base = { version: 1, region: 'sg', dataDir: '/tmp/x', broker: { url: 'mqtt://127.0.0.1:1883', allowLoopback: true } };
  it('c1 needs a c1 section with a source, and a vault', () => {
    expect(() => validateConfig({ ...base, device: { id: 'd', kind: 'c1', orgId: 'o' }, vault: { kekFile: '/k' } })).toThrow(/c1 section/);
    expect(() => validateConfig({ ...base, device: { id: 'd', kind: 'c1', orgId: 'o' }, c1: { dnsmasq: { leaseFile: '/l' } } })).toThrow(/vault/);
    expect(() => validateConfig({ ...base, device: { id: 'd', kind: 'c1', orgId: 'o' }, vault: { kekFile: '/k' }, c1: {} })).toThrow(/presence source/);
    expect(() => validateConfig({ ...base, device: { id: 'd', kind: 'c1', orgId: 'o' }, vault: { kekFile: '/k' }, c1: { timeZone: 'Mars/Olympus', dnsmasq: { leaseFile: '/l' } } })).toThrow(/time zone/);
    expect(validateConfig({ ...base, device: { id: 'd', kind: 'c1', orgId: 'o' }, vault: { kekFile: '/k' }, c1: { hostapd: { interfaces: ['wlan0', 'wlan1'] } } }).c1?.hostapd?.ctrlDir).toBe('/var/run/hostapd');
  });
  it('a p1 device without its vault and p1 sections is refused with a clear error naming the key', () => {
    expect(() => validateConfig({ ...base, device: { id: 'd', kind: 'p1', orgId: 'o' } })).toThrow(/"vault": p1 devices/);
  });
});

describe('tallybox demo --device c1', () => {
  it('--json --punches N: N WIFI punch lines, then the delivery summary with nothing lost', async () => {
    const { spawnSync } = await import('node:child_process');
    const cli = join(import.meta.dirname, '../../dist/src/cli/tallybox.js');
    const r = spawnSync(process.execPath, [cli, 'demo', '--device', 'c1', '--json', '--punches', '5'], { encoding: 'utf8', timeout: 90_000 });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.slice(0, -1)).toHaveLength(5);
    for (const l of lines.slice(0, -1)) expect(l.method).toBe('WIFI');
    expect(lines.at(-1)).toEqual({ received: 5, duplicates: 0, lost: 0 });
    expect(r.stdout).not.toMatch(/[0-9a-f]{2}(:[0-9a-f]{2}){5}/i);
  });
});
