/**
 * The Debian package (issue 11 §5) on this machine, as IT installs it: it
 * builds (timed), `dpkg -i` installs it (nodejs is a dpkg package here, so no
 * --force-depends), the service user and directories exist with the right
 * owners and modes, `systemd-analyze verify` accepts the unit without a single
 * warning (and does warn on a broken copy: the check can fail), the installed
 * `tallybox doctor` runs, the installed `tallybox-sim lab` serves its page, `dpkg -r` removes the program and keeps
 * /var/lib/tallybox, `dpkg --purge` removes that too. Root only (dpkg); what
 * the test installed is purged afterwards, and the user removed if it made it.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { dump as toYaml } from 'js-yaml';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';

const repo = resolve(import.meta.dirname, '../..');
const peers = [systemPeer('dpkg-deb', { pkg: 'dpkg' }), systemPeer('systemd-analyze', { pkg: 'systemd' })];
const isRoot = process.getuid?.() === 0;
const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000 });
// dpkg-query's own ${Status} field syntax, not a template.
const STATUS_FORMAT = '-f=$' + '{Status}';
const installed = () => run('dpkg-query', ['-W', STATUS_FORMAT, 'tallybox']).stdout.includes('install ok installed');

describeWithPeer(isRoot ? peers : [...peers, { program: 'root', pkg: '(run as root)', path: undefined, available: false, reason: 'dpkg -i needs root' }], 'Debian package: build, install, verify, remove', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tbx-deb-'));
  let deb = '';
  let userExisted = false;

  beforeAll(() => {
    // Never clobber a real installation on the machine running the tests.
    if (installed() || existsSync('/etc/tallybox') || existsSync('/var/lib/tallybox') || existsSync('/opt/tallybox')) {
      throw new Error('tallybox is installed on this machine (or /etc/tallybox, /var/lib/tallybox, /opt/tallybox exist): refusing to test the package over it');
    }
    userExisted = run('getent', ['passwd', 'tallybox']).status === 0;
  });
  afterAll(() => {
    if (installed() || run('dpkg-query', ['-W', 'tallybox']).status === 0) run('dpkg', ['--purge', 'tallybox']);
    rmSync('/var/lib/tallybox', { recursive: true, force: true });
    rmSync('/etc/tallybox', { recursive: true, force: true });
    if (!userExisted && run('getent', ['passwd', 'tallybox']).status === 0) run('userdel', ['tallybox']);
    run('getent', ['group', 'tallybox']).status === 0 && !userExisted && run('groupdel', ['tallybox']);
    rmSync(tmp, { recursive: true, force: true });
  });

  it("builds (npm run package minus the build: the build is the suite's), with the production node_modules only", () => {
    const t0 = performance.now();
    const out = execFileSync(process.execPath, [join(repo, 'scripts/package-deb.mjs'), '--out', tmp], { encoding: 'utf8', timeout: 240_000 });
    const r = JSON.parse(out.trim().split('\n').pop()!) as { deb: string; bytes: number; installedKiB: number; ms: number };
    deb = r.deb;
    process.stderr.write(`tallybox-test: package built in ${Math.round(performance.now() - t0)} ms: ${(r.bytes / 1e6).toFixed(1)} MB .deb, ${(r.installedKiB / 1024).toFixed(0)} MiB installed\n`);
    const info = execFileSync('dpkg-deb', ['--info', deb], { encoding: 'utf8' });
    expect(info).toMatch(/Package: tallybox/);
    expect(info).toMatch(/Depends: nodejs \(>= 20\)/);
    const contents = execFileSync('dpkg-deb', ['--contents', deb], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    for (const p of [
      './opt/tallybox/dist/src/cli/tallybox.js',
      './opt/tallybox/node_modules/sqlite3/',
      './opt/tallybox/node_modules/mqtt/',
      './lib/systemd/system/tallybox.service',
      './usr/bin/tallybox -> /opt/tallybox/dist/src/cli/tallybox.js',
      './usr/bin/tallybox-sim -> /opt/tallybox/dist/simulators/cli.js',
      // The lab's static files, which the build does not copy into dist/.
      './opt/tallybox/simulators/lab/page/index.html',
      './opt/tallybox/simulators/lab/page/app.js',
      './opt/tallybox/simulators/lab/openapi.yaml',
    ]) {
      expect(contents, p).toContain(p);
    }
    // The project's own addons (the C1 role's hostapd socket; the simulators' ptys) and the C1 hooks, executable.
    for (const p of ['./opt/tallybox/native/unixdgram/build/Release/unixdgram.node', './opt/tallybox/native/ptypair/build/Release/ptypair.node']) expect(contents, p).toContain(p);
    for (const h of ['hostapd-action.sh', 'dnsmasq-script.sh', 'forward.mjs']) expect(contents).toMatch(new RegExp(`^-rwxr-xr-x root/root .* \\./opt/tallybox/firmware-bridge/wifi/${h.replace('.', '\\.')}$`, 'm'));
    // Build leftovers of the addons stay out.
    expect(contents).not.toMatch(/opt\/tallybox\/native\/.*\/obj\.target/);
    // Development tools stay out.
    for (const p of ['node_modules/vitest/', 'node_modules/typescript/', 'node_modules/@biomejs/']) expect(contents, p).not.toContain(p);
    // Every file is root's, whoever built it.
    expect(contents.split('\n').filter((l) => l && !/ root\/root /.test(l))).toEqual([]);
  }, 300_000);

  it('systemd-analyze verify accepts the unit without a warning, and warns on a broken copy', () => {
    const unit = join(repo, 'packaging/tallybox.service');
    const ok = run('systemd-analyze', ['verify', unit]);
    expect({ status: ok.status, stderr: ok.stderr }).toEqual({ status: 0, stderr: '' });
    const text = readFileSync(unit, 'utf8');
    for (const line of [
      'Restart=on-failure',
      'RestartPreventExitStatus=78',
      'StateDirectory=tallybox',
      'StateDirectoryMode=0700',
      'RuntimeDirectory=tallybox',
      'User=tallybox',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'NoNewPrivileges=yes',
      'PrivateTmp=yes',
      'ProtectKernelTunables=yes',
      'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK',
      'LoadCredential=tallybox-kek:/etc/tallybox/tallybox.kek',
    ]) {
      expect(text.split('\n'), line).toContain(line);
    }
    const broken = join(tmp, 'tallybox.service');
    writeFileSync(broken, text.replace('ProtectSystem=strict', 'ProtectSystem=stricter').replace('ExecStart=/usr/bin/node', 'ExecStart=/usr/bin/no-such-node'));
    const bad = run('systemd-analyze', ['verify', broken]);
    expect(bad.stderr).toMatch(/Failed to parse protect system value/);
    expect(bad.stderr).toMatch(/no-such-node is not executable/);
  });

  it('dpkg -i installs it: the service user, /var/lib/tallybox 0700 its own, /etc/tallybox 0700 root, the unit, and a working `tallybox`', () => {
    expect(deb).not.toBe('');
    // nodejs is a dpkg package on this machine (Debian's or NodeSource's), so Depends is met without --force-depends.
    expect(run('dpkg', ['-s', 'nodejs']).stdout).toMatch(/Status: install ok installed/);
    const r = run('dpkg', ['-i', deb]);
    expect(r.status, r.stderr).toBe(0);
    const uid = Number(run('id', ['-u', 'tallybox']).stdout.trim());
    expect(uid).toBeGreaterThan(0);
    expect(run('getent', ['passwd', 'tallybox']).stdout).toMatch(/:\/var\/lib\/tallybox:\/usr\/sbin\/nologin$/m);
    const data = statSync('/var/lib/tallybox');
    expect({ uid: data.uid, mode: data.mode & 0o777 }).toEqual({ uid, mode: 0o700 });
    const etc = statSync('/etc/tallybox');
    expect({ uid: etc.uid, mode: etc.mode & 0o777 }).toEqual({ uid: 0, mode: 0o700 });
    expect(existsSync('/lib/systemd/system/tallybox.service')).toBe(true);
    expect(run('systemd-analyze', ['verify', '/lib/systemd/system/tallybox.service'])).toMatchObject({ status: 0, stderr: '' });
    const help = run('/usr/bin/tallybox', ['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/provision --claim CODE/);
  }, 180_000);

  it('the installed `tallybox doctor` runs and reports on a config', () => {
    const dir = join(tmp, 'etc');
    execFileSync('install', ['-d', '-m', '0700', dir]);
    const config = join(dir, 'tallybox.yaml');
    writeFileSync(
      config,
      toYaml({
        version: 1,
        device: { id: 'dev-pkg', kind: 'sim', orgId: 'org-a' },
        region: 'sg',
        dataDir: '/var/lib/tallybox',
        broker: { url: 'mqtt://127.0.0.1:1', allowLoopback: true, connectTimeoutMs: 500 },
        clock: { source: 'assume-synced' },
      }),
    );
    const r = run('/usr/bin/tallybox', ['doctor', '--config', config, '--json']);
    const report = JSON.parse(r.stdout) as { ok: boolean; checks: { name: string; verdict: string; detail: string }[] };
    const by = new Map(report.checks.map((c) => [c.name, c]));
    expect(by.get('config')).toMatchObject({ verdict: 'ok' });
    // doctor as root judges the data directory by its owner, the tallybox user: that is not a fault.
    expect(by.get('data-dir-perms')).toMatchObject({ verdict: 'ok' });
    expect(by.get('disk')?.verdict).not.toBe('fail');
    // Nothing listens on port 1: the broker check fails, and says so.
    expect(by.get('broker')).toMatchObject({ verdict: 'fail' });
    expect(r.status).toBe(1);
  }, 60_000);

  it("the installed copy loads its unixdgram addon and attaches to the Wi-Fi simulator's hostapd control socket; its hook script forwards", async () => {
    const { WifiOffice } = await import('../../simulators/wifi/office.js');
    const { EventSocketServer } = await import('../../firmware-bridge/wifi/event-socket.js');
    const dir = mkdtempSync(join(tmpdir(), 'tbx-deb-wifi-'));
    const office = new WifiOffice({ dir, ssids: { wlan0: 'Office' } }).start();
    const hooks = new EventSocketServer({ path: join(dir, 'run', 'events.sock') });
    await hooks.start();
    try {
      const phone = office.addPhone({ id: 'p' });
      office.join('p', 'wlan0');
      // The installed modules only (absolute /opt/tallybox paths): the addon is the packaged one.
      const script = `import { HostapdControl } from '/opt/tallybox/dist/firmware-bridge/wifi/hostapd-ctrl.js';
        const c = new HostapdControl({ socketPath: ${JSON.stringify(join(office.ctrlDir, 'wlan0'))}, clientDir: ${JSON.stringify(join(dir, 'client'))} });
        const macs = await c.open(); await c.ping();
        process.stdout.write(JSON.stringify({ stations: macs.length, ssid: c.ssid })); c.close();`;
      // Asynchronous: the simulator answers from this process.
      const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolveRun) => {
        const c = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        c.on('exit', (code) => resolveRun({ code, stdout, stderr }));
      });
      expect(out.code, out.stderr).toBe(0);
      expect(JSON.parse(out.stdout)).toEqual({ stations: 1, ssid: 'Office' });
      // The installed hostapd_cli action script delivers a join to the agent's socket.
      const got = new Promise<{ type: string; iface: string; mac: string }>((r) => hooks.once('presence', r));
      const hook = spawn('/opt/tallybox/firmware-bridge/wifi/hostapd-action.sh', ['wlan0', 'AP-STA-CONNECTED', phone.mac], { env: { ...process.env, TALLYBOX_WIFI_SOCKET: hooks.path, TALLYBOX_NODE: process.execPath }, stdio: 'ignore' });
      await new Promise((r) => hook.on('exit', r));
      expect(await got).toMatchObject({ type: 'joined', iface: 'wlan0', mac: phone.mac });
    } finally {
      await hooks.stop();
      office.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('the installed `tallybox-sim lab` starts a site and serves its page, script and API description (the packaged copies)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-deb-lab-'));
    const labFile = join(dir, 'lab.yaml');
    writeFileSync(
      labFile,
      toYaml({
        version: 1,
        site: { name: 'Package lab', region: 'sg' },
        seed: 7,
        orgs: [{ id: 'acme' }],
        people: [{ id: 'ana', org: 'acme', consent: { fingerprint: true }, finger: 1 }],
        devices: [{ name: 'door', kind: 'm1', org: 'acme' }],
      }),
    );
    // The installed entry point, from / so nothing resolves through this checkout; port 0: any free port.
    const lab = spawn('/usr/bin/tallybox-sim', ['lab', '--config', labFile, '--port', '0'], { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    lab.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => lab.once('exit', (code) => r(code)));
    try {
      // Ready once its agents are up: the line with the URL, or the exit that says why not.
      const url = await new Promise<string>((resolveUrl, reject) => {
        let out = '';
        lab.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const line = out.split('\n').find((l) => l.startsWith('{'));
          if (line) resolveUrl((JSON.parse(line) as { url: string }).url);
        });
        void exited.then((code) => reject(new Error(`tallybox-sim lab exited ${code}: ${stderr}`)));
      });
      for (const [path, file, type] of [
        ['/', 'simulators/lab/page/index.html', 'text/html'],
        ['/app.js', 'simulators/lab/page/app.js', 'text/javascript'],
        ['/openapi.yaml', 'simulators/lab/openapi.yaml', 'application/yaml'],
      ] as const) {
        const r = await fetch(`${url}${path}`);
        expect(r.status, path).toBe(200);
        expect(r.headers.get('content-type'), path).toContain(type);
        expect(await r.text(), path).toBe(readFileSync(join(repo, file), 'utf8'));
      }
      const devices = (await (await fetch(`${url}/api/devices`)).json()) as { devices: { name: string }[] };
      expect(devices.devices.map((d) => d.name)).toEqual(['door']);
    } finally {
      if (lab.exitCode === null && lab.signalCode === null) {
        lab.kill('SIGTERM'); // the lab stops its agent and simulators and removes its temp dir
        const force = setTimeout(() => lab.kill('SIGKILL'), 30_000);
        await exited;
        clearTimeout(force);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);

  it('dpkg -r removes the program and keeps /var/lib/tallybox; dpkg --purge removes it too', () => {
    writeFileSync('/var/lib/tallybox/outbox.db', 'undelivered punches');
    const r = run('dpkg', ['-r', 'tallybox']);
    expect(r.status, r.stderr).toBe(0);
    for (const p of ['/opt/tallybox/dist', '/usr/bin/tallybox', '/lib/systemd/system/tallybox.service']) expect(existsSync(p), p).toBe(false);
    expect(readFileSync('/var/lib/tallybox/outbox.db', 'utf8')).toBe('undelivered punches');
    expect(existsSync('/etc/tallybox')).toBe(true);
    const p = run('dpkg', ['--purge', 'tallybox']);
    expect(p.status, p.stderr).toBe(0);
    expect(existsSync('/var/lib/tallybox')).toBe(false);
    expect(existsSync('/etc/tallybox')).toBe(false);
    expect(existsSync('/opt/tallybox')).toBe(false);
  }, 120_000);
});
