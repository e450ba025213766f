// Pseudo-terminal benchmark (issue 10 §1): the simulators' pty (openpty(3) addon,
// simulators/lib/pty.ts) against the socat pair it replaced, in the same run.
// The host side is the production SerialTransport on the link in both cases; the
// device side is the pty master (native) or serialport on socat's second pty (as the
// simulators did before).
//   rtt:        12-byte frame host → device, echoed back; p50 / p99 over ROUNDS
//   host→dev:   MIB MiB in 4 KiB writes, until the device has read all of it
//   dev→host:   the same the other way
// socat is optional: without it only the native rows are printed. Medians of BENCH_PTY_REPS
// interleaved runs (default 3).
// `node bench/pty.bench.mjs` (after `npm run build`).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerialTransport } from '../dist/firmware-bridge/transport/serial.js';
import { createPtyPair } from '../dist/simulators/lib/pty.js';

const ROUNDS = Number(process.env.BENCH_PTY_ROUNDS ?? 2000);
const MIB = Number(process.env.BENCH_PTY_MIB ?? 8);
const dir = mkdtempSync(join(tmpdir(), 'tbx-ptybench-'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function nativePair(link) {
  const pair = await createPtyPair({ link });
  return { device: pair.device, close: () => pair.close() };
}

async function socatPair(link) {
  const child = spawn('socat', ['-d', '-d', `PTY,link=${link},raw,echo=0`, `PTY,link=${link}.sim,raw,echo=0`], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise((resolve, reject) => {
    let log = '';
    child.stderr.on('data', (d) => {
      log += d;
      if (log.includes('starting data transfer loop')) resolve();
    });
    child.once('exit', (c) => reject(new Error(`socat exited ${c}: ${log}`)));
  });
  child.stderr.resume();
  const device = new SerialTransport({ path: `${link}.sim`, baudRate: 921600 });
  await device.open();
  return {
    device,
    async close() {
      await device.close();
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function rtt(host, device) {
  device.on('data', (d) => void device.write(d));
  const frame = Buffer.from('ef01ffffffff010003010005', 'hex');
  const times = [];
  for (let i = 0; i < ROUNDS + 100; i++) {
    let got = 0;
    const done = new Promise((resolve) => {
      const on = (d) => {
        got += d.length;
        if (got >= frame.length) {
          host.off('data', on);
          resolve();
        }
      };
      host.on('data', on);
    });
    const t0 = process.hrtime.bigint();
    await host.write(frame);
    await done;
    if (i >= 100) times.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  device.removeAllListeners('data');
  times.sort((a, b) => a - b);
  return { p50: pct(times, 50), p99: pct(times, 99) };
}

async function throughput(from, to) {
  const total = MIB * 1024 * 1024;
  const chunk = Buffer.alloc(4096, 0x5a);
  let got = 0;
  const done = new Promise((resolve) => {
    const on = (d) => {
      got += d.length;
      if (got >= total) {
        to.off('data', on);
        resolve();
      }
    };
    to.on('data', on);
  });
  const t0 = process.hrtime.bigint();
  for (let sent = 0; sent < total; sent += chunk.length) await from.write(chunk);
  await done;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return total / s / 1e6;
}

async function measure(kind, make) {
  const link = join(dir, `tty-${kind}`);
  const pair = await make(link);
  const host = new SerialTransport({ path: link, baudRate: 921600, writeTimeoutMs: 10_000 });
  await host.open();
  await sleep(50);
  try {
    const r = await rtt(host, pair.device);
    const up = await throughput(host, pair.device);
    const down = await throughput(pair.device, host);
    return { kind, ...r, up, down };
  } finally {
    await host.close();
    await pair.close();
  }
}

const REPS = Number(process.env.BENCH_PTY_REPS ?? 3);
const haveSocat = spawnSync('sh', ['-c', 'command -v socat'], { encoding: 'utf8' }).status === 0;
const kinds = [['openpty addon (now)', nativePair]];
if (haveSocat) kinds.push(['socat pair (before)', socatPair]);
// Interleaved repetitions (now, before, now, before, …) so load changes hit both alike; medians.
const runs = new Map(kinds.map(([k]) => [k, []]));
for (let rep = 0; rep < REPS; rep++) for (const [kind, make] of rep % 2 ? [...kinds].reverse() : kinds) runs.get(kind).push(await measure(kind, make));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = [...runs].map(([kind, rs]) => ({ kind, p50: median(rs.map((r) => r.p50)), p99: median(rs.map((r) => r.p99)), up: median(rs.map((r) => r.up)), down: median(rs.map((r) => r.down)) }));
rmSync(dir, { recursive: true, force: true });

console.log(`\npseudo-terminal, host = SerialTransport on the link; ${ROUNDS} round trips, ${MIB} MiB each way; median of ${REPS} interleaved runs`);
console.log('| pty | RTT p50 | RTT p99 | host→device | device→host |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.kind} | ${r.p50.toFixed(0)} µs | ${r.p99.toFixed(0)} µs | ${r.up.toFixed(1)} MB/s | ${r.down.toFixed(1)} MB/s |`);
if (!haveSocat) console.log('(socat not installed: no comparison row)');
