/**
 * `tallybox doctor`'s C1 checks against a healthy router setup (the Wi-Fi
 * simulator's hostapd-compatible control sockets, a dnsmasq lease file, the
 * hook socket made by the agent's own EventSocketServer) and against each
 * fault broken on purpose: a hostapd socket missing or not a socket, a lease
 * file that cannot be read (a directory; a file the agent user may not read)
 * or has malformed lines, a hook socket with wrong permissions or missing.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EventSocketServer } from '../../firmware-bridge/wifi/event-socket.js';
import { WifiOffice } from '../../simulators/wifi/office.js';
import { C1ConfigSchema } from '../../src/roles/c1/config.js';
import { c1DoctorChecks, checkEventSocket, checkLeaseFile } from '../../src/roles/c1/doctor.js';
import { startC1Stack } from '../../src/cli/demo-c1.js';
import { tempDir } from '../wifi/helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup() {
  const t = tempDir('tbd-');
  cleanups.push(t.cleanup);
  const office = new WifiOffice({ dir: join(t.dir, 'wifi'), ssids: { wlan1: 'Office-5G' } }).start();
  cleanups.push(() => office.stop());
  const p = office.addPhone({ id: 'p1' });
  office.join('p1', 'wlan0');
  const hooks = new EventSocketServer({ path: join(t.dir, 'run', 'events.sock') });
  return { dir: t.dir, office, phone: p, hooks };
}

describe('doctor C1 checks', () => {
  it('a healthy router: every check ok, SSIDs named, no MAC in any detail', async () => {
    const { office, phone, hooks } = setup();
    await hooks.start();
    cleanups.push(() => hooks.stop());
    const c1 = C1ConfigSchema.parse({ hostapd: { ctrlDir: office.ctrlDir, interfaces: ['wlan0', 'wlan1'] }, dnsmasq: { leaseFile: office.leaseFile }, eventSocket: hooks.path });
    const checks = await c1DoctorChecks(c1, { agentRunning: true });
    expect(checks.map((c) => [c.name, c.verdict])).toEqual([
      ['hostapd:wlan0', 'ok'],
      ['hostapd:wlan1', 'ok'],
      ['dnsmasq-leases', 'ok'],
      ['wifi-hooks', 'ok'],
    ]);
    expect(checks[0]!.detail).toContain('PONG, SSID "Office"');
    expect(checks[1]!.detail).toContain('SSID "Office-5G"');
    expect(checks[2]!.detail).toContain('1 leases, no malformed line');
    expect(JSON.stringify(checks)).not.toContain(phone.mac);
  });

  it('hostapd socket missing, or not a socket: fail, saying what to do', async () => {
    const { dir, office } = setup();
    office.aps.get('wlan1')!.stop(); // hostapd stopped: its socket is gone
    writeFileSync(join(office.ctrlDir, 'wlan2'), 'not a socket');
    const c1 = C1ConfigSchema.parse({ hostapd: { ctrlDir: office.ctrlDir, interfaces: ['wlan0', 'wlan1', 'wlan2'] }, eventSocket: join(dir, 'run', 'events.sock') });
    const checks = await c1DoctorChecks(c1, { agentRunning: false });
    expect(checks.map((c) => [c.name, c.verdict])).toEqual([
      ['hostapd:wlan0', 'ok'],
      ['hostapd:wlan1', 'fail'],
      ['hostapd:wlan2', 'fail'],
      ['wifi-hooks', 'warn'],
    ]);
    expect(checks[1]!.detail).toMatch(/no hostapd control socket .*ENOENT.*ctrl_interface/);
    expect(checks[2]!.detail).toContain('is not a socket');
  });

  it('a lease file that cannot be read fails; malformed and torn lines are counted, never shown', async () => {
    const { dir, phone } = setup();
    const asDir = join(dir, 'leases-dir');
    mkdirSync(asDir);
    expect((await checkLeaseFile(asDir)).verdict).toBe('fail');
    expect((await checkLeaseFile(asDir)).detail).toContain('EISDIR');
    const missing = await checkLeaseFile(join(dir, 'nope.leases'));
    expect(missing.verdict).toBe('warn');
    const messy = join(dir, 'messy.leases');
    writeFileSync(messy, `1800000000 ${phone.mac} 10.0.0.2 host-x *\ngarbage line with ${phone.mac}\n1800000000 ${phone.mac} 10.0`);
    const m = await checkLeaseFile(messy);
    expect(m.verdict).toBe('warn');
    expect(m.detail).toContain('1 leases, 1 malformed and 1 torn');
    expect(m.detail).not.toContain(phone.mac);
    expect(m.detail).not.toContain('host-x');
  });

  it('a lease file the agent user may not read (mode 0600, root-owned, checked as nobody): fail EACCES', async () => {
    const { dir, office } = setup();
    chmodSync(dir, 0o755);
    chmodSync(join(dir, 'wifi'), 0o755);
    chmodSync(office.leaseFile, 0o600);
    const mod = join(import.meta.dirname, '../../dist/src/roles/c1/doctor.js');
    // As an unprivileged user (the test runs as root in CI, and root reads anything).
    const script = `process.setgid(65534); process.setuid(65534); const m = await import(${JSON.stringify(mod)}); process.stdout.write(JSON.stringify(await m.checkLeaseFile(${JSON.stringify(office.leaseFile)})));`;
    let c: { verdict: string; detail: string };
    if (process.getuid?.() === 0) {
      const out = await new Promise<string>((resolve, reject) =>
        execFile(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
      );
      c = JSON.parse(out) as typeof c;
    } else {
      chmodSync(office.leaseFile, 0o000); // not root: our own file, unreadable to us
      c = await checkLeaseFile(office.leaseFile);
    }
    expect(c.verdict).toBe('fail');
    expect(c.detail).toContain('EACCES');
  });

  it('the hook socket: wrong permissions fail, a plain file fails, missing while the agent runs fails', async () => {
    const { dir, hooks } = setup();
    await hooks.start();
    cleanups.push(() => hooks.stop());
    expect(checkEventSocket(hooks.path, true).verdict).toBe('ok');
    chmodSync(hooks.path, 0o666);
    const loose = checkEventSocket(hooks.path, true);
    expect(loose.verdict).toBe('fail');
    expect(loose.detail).toContain('0666');
    chmodSync(hooks.path, 0o600);
    chmodSync(join(dir, 'run'), 0o755);
    expect(checkEventSocket(hooks.path, true)).toMatchObject({ verdict: 'fail', detail: expect.stringContaining('must be 0700') });
    const file = join(dir, 'file.sock');
    writeFileSync(file, '');
    expect(checkEventSocket(file, true).verdict).toBe('fail');
    expect(checkEventSocket(join(dir, 'run', 'gone.sock'), true).verdict).toBe('fail');
    expect(checkEventSocket(join(dir, 'run', 'gone.sock'), false).verdict).toBe('warn');
  });
});

describe('tallybox doctor on a running C1 router', () => {
  it('reports the C1 checks, and no failure on a healthy one', async () => {
    const stack = await startC1Stack({});
    cleanups.push(() => stack.close());
    const cfg = join(stack.dev.dataDir, '..', 'tallybox.json');
    writeFileSync(cfg, JSON.stringify(stack.dev.agent.config));
    const cli = join(import.meta.dirname, '../../dist/src/cli/tallybox.js');
    // Asynchronous: the broker runs in this process, and a blocking spawn would stop it answering.
    const out = await new Promise<string>((resolve) => execFile(process.execPath, [cli, 'doctor', '--config', cfg, '--json'], { encoding: 'utf8', timeout: 60_000 }, (_err, stdout) => resolve(stdout)));
    const report = JSON.parse(out) as { ok: boolean; checks: Array<{ name: string; verdict: string; detail: string }> };
    expect(report.checks.filter((c) => c.verdict === 'fail')).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.checks.filter((c) => c.name.startsWith('hostapd:') || c.name === 'dnsmasq-leases').map((c) => c.verdict)).toEqual(['ok', 'ok', 'ok']);
    // Broken on purpose: one radio's hostapd stops; the doctor says so and exits non-zero.
    stack.office.aps.get('wlan1')!.stop();
    const broken = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(process.execPath, [cli, 'doctor', '--config', cfg, '--json'], { encoding: 'utf8', timeout: 60_000 }, (err, stdout) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout })),
    );
    expect(broken.code).toBe(1);
    const r2 = JSON.parse(broken.out) as typeof report;
    expect(r2.checks.filter((c) => c.verdict === 'fail').map((c) => c.name)).toEqual(['hostapd:wlan1']);
  });
});
