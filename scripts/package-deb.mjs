#!/usr/bin/env node
// `npm run package`: the Debian package (after `npm run build`).
//
//   /opt/tallybox/{package.json,README.md,dist/,node_modules/}   the agent and its production dependencies
//   /opt/tallybox/native/{unixdgram,ptypair}/build/Release/*.node the project's own addons (hostapd socket, ptys)
//   /opt/tallybox/firmware-bridge/wifi/{hostapd-action.sh,dnsmasq-script.sh,forward.mjs}   the C1 hooks
//   /usr/bin/tallybox, /usr/bin/tallybox-sim                      symlinks to the entry points
//   /lib/systemd/system/tallybox.service                         packaging/tallybox.service
//   /opt/tallybox/share/tallybox.example.yaml                    a config to read (provision writes the real one)
//   /opt/tallybox/simulators/lab/{page/,openapi.yaml}             the lab's static files (`tallybox-sim lab` serves them)
//   DEBIAN/{control,postinst,prerm,postrm}                       packaging/debian/
//
// node_modules: exactly the production dependency tree (`npm ls --omit=dev --all
// --parseable`), copied from this checkout, so the native modules (sqlite3,
// serialport, node-hid) are the ones already built for this machine's Node and
// architecture: the package's Architecture is this machine's. No network.
//
// Writes dist/deb/tallybox_VERSION_ARCH.deb (or --out DIR) and prints one JSON
// line: { deb, bytes, installedKiB, ms }.
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const t0 = performance.now();
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outArg = process.argv.indexOf('--out');
const outDir = outArg > 0 ? resolve(process.argv[outArg + 1]) : join(root, 'dist', 'deb');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const arch = execFileSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).trim();
if (!existsSync(join(root, 'dist/src/cli/tallybox.js'))) throw new Error('package-deb: no dist/: run npm run build first');

const stage = mkdtempSync(join(tmpdir(), 'tallybox-deb-'));
try {
  const opt = join(stage, 'opt/tallybox');
  mkdirSync(opt, { recursive: true });
  // The build output only: the agent (src), its device drivers, and the simulators (tallybox-sim, the demo).
  for (const d of ['src', 'firmware-bridge', 'simulators']) cpSync(join(root, 'dist', d), join(opt, 'dist', d), { recursive: true });
  // The project's own native addons, found at run time by walking up from dist/ to native/*/build/Release:
  // unixdgram (the hostapd control socket, the C1 role) and ptypair (the simulators' pseudo-terminals).
  for (const addon of ['unixdgram', 'ptypair']) {
    const built = join(root, 'native', addon, 'build', 'Release', `${addon}.node`);
    if (!existsSync(built)) throw new Error(`package-deb: native/${addon} is not built: run npm run build first`);
    mkdirSync(join(opt, 'native', addon, 'build', 'Release'), { recursive: true });
    cpSync(built, join(opt, 'native', addon, 'build', 'Release', `${addon}.node`));
  }
  // The C1 hook scripts, where the README tells IT to point hostapd_cli -a and dnsmasq --dhcp-script (executable, as in git).
  mkdirSync(join(opt, 'firmware-bridge', 'wifi'), { recursive: true });
  for (const hook of ['hostapd-action.sh', 'dnsmasq-script.sh', 'forward.mjs']) {
    cpSync(join(root, 'firmware-bridge', 'wifi', hook), join(opt, 'firmware-bridge', 'wifi', hook));
    chmodSync(join(opt, 'firmware-bridge', 'wifi', hook), 0o755);
  }
  // The lab (`tallybox-sim lab`) serves its page and API description from the source folder, which the
  // build does not copy: simulators/lab/paths.ts finds them under the root that holds package.json and
  // simulators/lab — /opt/tallybox here, as in a checkout. Without them the lab could not start at all.
  mkdirSync(join(opt, 'simulators', 'lab'), { recursive: true });
  cpSync(join(root, 'simulators', 'lab', 'page'), join(opt, 'simulators', 'lab', 'page'), { recursive: true });
  cpSync(join(root, 'simulators', 'lab', 'openapi.yaml'), join(opt, 'simulators', 'lab', 'openapi.yaml'));
  const { scripts: _s, devDependencies: _d, allowScripts: _a, ...meta } = pkg;
  writeFileSync(join(opt, 'package.json'), JSON.stringify(meta, null, 2) + '\n');
  cpSync(join(root, 'README.md'), join(opt, 'README.md'));

  // Production dependencies, each package directory as installed (nested ones come with their parent).
  const dirs = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    .split('\n')
    .filter((p) => p.startsWith(join(root, 'node_modules') + '/'))
    .map((p) => relative(root, p));
  const top = [...new Set(dirs)].filter((d, _i, all) => !all.some((o) => o !== d && d.startsWith(o + '/')));
  for (const d of top) {
    cpSync(join(root, d), join(opt, d), {
      recursive: true,
      // Build leftovers of native modules are not needed at run time.
      filter: (src) => !/\/(build\/Release\/obj(\.target)?|build\/Release\/\.deps|deps\/[^/]*\.tar\.gz)(\/|$)/.test(src),
    });
  }

  mkdirSync(join(stage, 'usr/bin'), { recursive: true });
  symlinkSync('/opt/tallybox/dist/src/cli/tallybox.js', join(stage, 'usr/bin/tallybox'));
  symlinkSync('/opt/tallybox/dist/simulators/cli.js', join(stage, 'usr/bin/tallybox-sim'));
  mkdirSync(join(stage, 'lib/systemd/system'), { recursive: true });
  cpSync(join(root, 'packaging/tallybox.service'), join(stage, 'lib/systemd/system/tallybox.service'));
  mkdirSync(join(opt, 'share'), { recursive: true });
  cpSync(join(root, 'packaging/tallybox.example.yaml'), join(opt, 'share/tallybox.example.yaml'));

  const installedKiB = Number(execFileSync('du', ['-sk', '--apparent-size', stage], { encoding: 'utf8' }).split('\t')[0]);
  const control = [
    `Package: ${pkg.name}`,
    `Version: ${pkg.version}`,
    `Architecture: ${arch}`,
    'Maintainer: Tallybox <devices@tallybox.cloud>',
    `Installed-Size: ${installedKiB}`,
    // nodejs: Debian's own, or NodeSource's (same package name). adduser: the postinst's service user.
    'Depends: nodejs (>= 20), adduser | passwd, libusb-1.0-0',
    // tzdata: the C1 site clock reads /usr/share/zoneinfo (without it: Intl, ~8 MB more resident).
    'Recommends: tzdata',
    'Section: net',
    'Priority: optional',
    'Homepage: https://tallybox.cloud/',
    `Description: ${pkg.description}`,
    ' The Tallybox edge agent for attendance hardware (M1/M2 terminals, C1 routers,',
    ' P1 print boxes), run by systemd as the tallybox user (tallybox.service).',
    ' Provision with `tallybox provision --claim`, check with `tallybox doctor`.',
    '',
  ].join('\n');
  mkdirSync(join(stage, 'DEBIAN'));
  writeFileSync(join(stage, 'DEBIAN/control'), control);
  for (const s of ['postinst', 'prerm', 'postrm']) {
    cpSync(join(root, 'packaging/debian', s), join(stage, 'DEBIAN', s));
    chmodSync(join(stage, 'DEBIAN', s), 0o755);
  }

  mkdirSync(outDir, { recursive: true });
  const deb = join(outDir, `${pkg.name}_${pkg.version}_${arch}.deb`);
  rmSync(deb, { force: true });
  // --root-owner-group: files owned by root in the package whoever builds it; gzip -6: fast on small devices.
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z6', '--build', stage, deb], { stdio: ['ignore', 'ignore', 'inherit'] });
  console.log(JSON.stringify({ deb, bytes: statSync(deb).size, installedKiB, ms: Math.round(performance.now() - t0) }));
} finally {
  rmSync(stage, { recursive: true, force: true });
}
