// Builds the one native addon the project owns (native/ptypair: openpty(3) for the
// serial simulators) with node-gyp. Runs at `npm install` and again from `npm run
// build`, where it does nothing if the addon is newer than its sources, so a
// checkout whose node_modules was copied rather than installed still gets it.
// node-gyp: npm's own (npm_config_node_gyp, set for scripts), else the one in
// node_modules. Headers: npm_config_nodedir if set, else the running Node's own
// include/node (Debian's nodejs ships them), so nothing is downloaded.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// native/unixdgram: AF_UNIX datagram sockets (hostapd's control interface; Node's dgram is UDP only).
// native/usblp: ioctl(LPGETSTATUS) on a USB printer-class device file (P1).
const addons = ['ptypair', 'unixdgram', 'usblp'];

const mtime = (p) => statSync(p).mtimeMs;
const stale = (name) => {
  const dir = join(root, 'native', name);
  const out = join(dir, 'build', 'Release', `${name}.node`);
  return !existsSync(out) || [`${name}.c`, 'binding.gyp'].some((f) => mtime(join(dir, f)) > mtime(out));
};
const todo = process.argv.includes('--force') ? addons : addons.filter(stale);
if (todo.length === 0) process.exit(0);

function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // not in node_modules either: fall through to the clear error below
    return null;
  }
}

const gyp = nodeGyp();
if (!gyp) {
  console.error('tallybox: NATIVE_BUILD_FAILED: node-gyp not found (it comes with npm; run this through `npm run build`)');
  process.exit(1);
}
const env = { ...process.env };
const ownHeaders = join(dirname(dirname(process.execPath)), 'include', 'node');
if (!env.npm_config_nodedir && existsSync(join(ownHeaders, 'node_api.h'))) env.npm_config_nodedir = dirname(dirname(process.execPath));
// Quiet when it works (make's lines would clutter every first `npm test`); all of it when it fails.
for (const name of todo) {
  const dir = join(root, 'native', name);
  const r = spawnSync(process.execPath, [gyp, 'rebuild', '--loglevel=warn'], { cwd: dir, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) {
    process.stderr.write(`${r.stdout ?? ''}${r.stderr ?? ''}`);
    console.error(`tallybox: NATIVE_BUILD_FAILED: node-gyp rebuild in native/${name} exited with ${r.status ?? r.signal} (needs python3, make and a C compiler)`);
    process.exit(1);
  }
}
