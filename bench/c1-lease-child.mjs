// Child of bench/c1.bench.mjs: the dnsmasq lease watcher and the presence tracker
// (the C1 role's path up to the vault lookup) on one lease file, in a process of
// their own, so its CPU time (process.cpuUsage) and RSS are the watcher's alone.
// Prints one JSON line when the parent sends "report" on stdin.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(import.meta.url), '..', '..');
const { LeaseWatcher } = await import(join(root, 'dist/firmware-bridge/wifi/lease-watch.js'));
const { PresenceTracker } = await import(join(root, 'dist/firmware-bridge/wifi/presence.js'));

// 'read-only': the baseline, a watcher that only reads the file on each change (no parse, no diff).
const readOnly = process.argv[3] === 'read-only';
const { watch, readFileSync } = await import('node:fs');
const { dirname } = await import('node:path');
if (readOnly) {
  let bytes = 0;
  watch(dirname(process.argv[2]), () => (bytes += readFileSync(process.argv[2]).length));
}
const w = new LeaseWatcher({ path: readOnly ? join(dirname(process.argv[2]), 'unused.leases') : process.argv[2], pollMs: 1000 });
const tracker = new PresenceTracker({ dhcpIsPresence: true, leaveGraceMs: 15_000 });
let joins = 0;
let leaves = 0;
tracker.on('joined', () => joins++);
tracker.on('left', () => leaves++);
w.on('presence', (ev) => tracker.apply(ev));
await w.start();
const rss = () => process.memoryUsage().rss / 1048576;
const samples = [];
const sampler = setInterval(() => samples.push(rss()), 1000);
sampler.unref();
const cpu0 = process.cpuUsage();
const t0 = performance.now();
process.stdout.write(`${JSON.stringify({ ready: true, leases: w.leases.length })}\n`);
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  if (!d.includes('report')) return;
  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - t0;
  process.stdout.write(
    `${JSON.stringify({ cpuMs: (cpu.user + cpu.system) / 1000, wallMs, reads: w.stats.reads, unchanged: w.stats.unchanged, joins, leaves, present: tracker.presentCount, rssFirst: samples[Math.floor(samples.length / 4)] ?? rss(), rssLast: rss(), rssMax: Math.max(...samples, rss()) })}\n`,
  );
  w.stop();
  tracker.stop();
  process.exit(0);
});
