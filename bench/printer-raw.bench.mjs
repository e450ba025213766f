// Raw 9100 printing benchmark (issue 12): RawPrinter streaming a 50 MiB document to the printer
// simulator (`tallybox-sim printer`, its own process, recording to a temp dir) against a plain
// net.Socket copy of the same bytes to the same simulator, in the same run.
//   plain:  RawPrinter without PJL (connect, stream with backpressure, half-close, wait for the close)
//   pjl:    RawPrinter with the PJL wrapper (START before the document, END read back)
//   socket: net.connect, write with drain, end, wait for the simulator's close (the baseline)
// Each variant's time runs from connect to the job's end as the client sees it; medians of
// BENCH_PRINTER_REPS interleaved runs (default 3). BENCH_PRINTER_MIB sets the size (default 50).
// `node bench/printer-raw.bench.mjs` (after `npm run build`).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { RawPrinter } from '../dist/firmware-bridge/printer/raw9100.js';
import { median } from './stats.mjs';

const MIB = Number(process.env.BENCH_PRINTER_MIB ?? 50);
const REPS = Number(process.env.BENCH_PRINTER_REPS ?? 3);
const TOTAL = MIB * 1024 * 1024;
const CHUNK = 64 * 1024;
const CLI = fileURLToPath(new URL('../dist/simulators/cli.js', import.meta.url));

const block = Buffer.alloc(CHUNK);
for (let i = 0; i < CHUNK; i += 64) createHash('sha512').update(String(i)).digest().copy(block, i);

/** The same chunks for every variant: a fresh buffer each, as a decrypting spool would hand over. */
async function* doc() {
  for (let i = 0, sent = 0; sent < TOTAL; i++) {
    const n = Math.min(CHUNK, TOTAL - sent);
    const c = Buffer.from(block.subarray(0, n));
    c.writeUInt32BE(i, 0);
    sent += n;
    yield c;
  }
}

async function socketCopy(port) {
  const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  await new Promise((r, j) => {
    s.once('connect', r);
    s.once('error', j);
  });
  const closed = new Promise((r) => s.once('close', r));
  s.resume(); // nothing comes back without PJL; keep the read side flowing
  for await (const c of doc()) if (!s.write(c)) await new Promise((r) => s.once('drain', r));
  s.end();
  await closed;
}

/** Wall time (s) and this process's CPU time (s): on a loaded shared machine CPU per job is the steadier figure. */
async function timed(fn) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

export async function run() {
  // The simulator's recordings go to tmpfs where there is one: the disk of a shared machine adds
  // noise that is neither the transport's nor the baseline's.
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'tbx-printerbench-'));
  const sim = spawn(process.execPath, [CLI, 'printer', '--port', '0', '--out', dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const ready = JSON.parse(
      await new Promise((res, rej) => {
        createInterface({ input: sim.stdout }).once('line', res);
        sim.once('exit', (c) => rej(new Error(`simulator exited ${c}`)));
      }),
    );
    const port = ready.raw;
    const plain = new RawPrinter({ host: '127.0.0.1', port });
    const pjl = new RawPrinter({ host: '127.0.0.1', port, pjl: true });
    const t = { plain: [], pjl: [], socket: [] };
    let n = 0;
    const job = () => ({ jobName: `bench-${++n}`, format: 'application/octet-stream', copies: 1, document: doc() });
    const variants = {
      socket: () => socketCopy(port),
      plain: () => plain.send(job()),
      pjl: async () => {
        const res = await pjl.send(job());
        if (res.jobState !== 'completed') throw new Error(`PJL job not confirmed: ${res.jobState}`);
      },
    };
    const order = Object.keys(variants);
    for (let r = 0; r < REPS; r++) {
      // rotate who goes first, so a load spike does not always land on the same variant
      for (let k = 0; k < order.length; k++) {
        const name = order[(r + k) % order.length];
        t[name].push(await timed(variants[name]));
      }
      // the recorded jobs are not needed: keep the disk free (every variant makes one job)
      for (let i = 1; i <= n + REPS; i++) rmSync(join(dir, `job-${i}.bin`), { force: true });
    }
    const mbps = (xs) => TOTAL / 1e6 / median(xs.map((x) => x.wall));
    const cpuMs = (xs) => median(xs.map((x) => x.cpu)) * 1000;
    const base = mbps(t.socket);
    const baseCpu = cpuMs(t.socket);
    const row = (metric, v) => ({ bench: 'printer-raw', metric, value: v, unit: 'MB/s', baseline: base, ratio: v / base, target: '≥ 0.8×', ok: v / base >= 0.8 });
    const cpuRow = (metric, v) => ({ bench: 'printer-raw', metric, value: v, unit: 'ms CPU', baseline: baseCpu, ratio: v / baseCpu });
    return [
      { bench: 'printer-raw', metric: `net.Socket copy ${MIB} MiB (baseline)`, value: base, unit: 'MB/s' },
      row(`RawPrinter ${MIB} MiB, no PJL`, mbps(t.plain)),
      row(`RawPrinter ${MIB} MiB, PJL START/END`, mbps(t.pjl)),
      { bench: 'printer-raw', metric: `net.Socket copy ${MIB} MiB, client CPU`, value: baseCpu, unit: 'ms CPU' },
      cpuRow(`RawPrinter ${MIB} MiB, no PJL, client CPU`, cpuMs(t.plain)),
      cpuRow(`RawPrinter ${MIB} MiB, PJL, client CPU`, cpuMs(t.pjl)),
    ];
  } finally {
    sim.kill('SIGTERM');
    await new Promise((r) => (sim.exitCode !== null ? r() : sim.once('exit', r)));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await run()) console.log(r);
}
