// P1 print box benchmark (issue 12), end to end through the product: a real `tallybox run` child
// (device.kind p1, its own process, so its RSS is the role's alone), signed PrintJob commands from the
// cloud emulator (CommandSigner + CloudSink over the embedded MQTT broker) into the agent's command
// intake, exactly as a print box receives them.
//
//   stream: a BENCH_P1_MIB (default 50) MiB document, fetched over HTTPS from the cloud emulator's
//           document server (private CA, p1.fetch.caFile) → encrypted into the spool → decrypted → the
//           9100 printer simulator (`tallybox-sim printer`, its own process, PJL on so the printer
//           confirms the job). Time: PrintJob published → the `confirmed` status back at the cloud.
//           Baseline in the same run: a plain net.Socket copy of the same file to the same simulator.
//           The agent's RSS growth during the job: /proc/PID/clear_refs resets the peak (VmHWM) just
//           before the PrintJob goes out, VmHWM after the job minus VmRSS before it.
//           Stages from the agent's own p1_job_state log lines (arrival time here, monotonic clock).
//   first:  a BENCH_P1_FIRST_KIB (default 1024) KiB inline job: PrintJob published → first byte at a
//           9100 listener in this process, and the same command's arrival at a second MQTT client
//           subscribed to the device's cmd topic (≈ when the agent receives it), so
//           "received → first byte" is the agent's part. Baseline: RawPrinter alone (connect, first
//           byte) to the same listener. p99 over BENCH_P1_FIRST_N jobs (default 100).
// Medians over BENCH_P1_REPS interleaved runs (default 3). BENCH_P1_CPU_PROF=DIR runs the agent with
// --cpu-prof (the profile is written to DIR when the agent stops). BENCH_P1_DIR puts the agent's data
// dir (spool, databases; fsync'd) somewhere else than the OS temp dir. BENCH_P1_VERBOSE=1 prints a
// timeline (submits, results, first bytes) to stderr; =2 adds the agent's own log lines.
// `node bench/p1.bench.mjs` (after `npm run build`).
import { spawn } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { dump as yaml } from 'js-yaml';
import mqtt from 'mqtt';
import { RawPrinter } from '../dist/firmware-bridge/printer/raw9100.js';
import { startEmbeddedBroker } from '../dist/simulators/cloud/broker.js';
import { makePrivateCa, PrintDocServer } from '../dist/simulators/cloud/print-docs.js';
import { PrintStatusBook, printJobBody } from '../dist/simulators/cloud/print-jobs.js';
import { CommandSigner } from '../dist/simulators/cloud/signer.js';
import { CloudSink } from '../dist/simulators/cloud/sink.js';
import { topic } from '../dist/src/link/topics.js';
import { ResultCode } from '../dist/src/proto/index.js';
import { provisionKeyFiles } from '../dist/src/vault/keys.js';
import { median, percentile } from './stats.mjs';

const MIB = Number(process.env.BENCH_P1_MIB ?? 50);
const REPS = Number(process.env.BENCH_P1_REPS ?? 3);
const FIRST_KIB = Number(process.env.BENCH_P1_FIRST_KIB ?? 1024);
const FIRST_N = Number(process.env.BENCH_P1_FIRST_N ?? 100);
const CPU_PROF = process.env.BENCH_P1_CPU_PROF;
const TOTAL = MIB * 1024 * 1024;
const CHUNK = 64 * 1024;
const SIM_CLI = fileURLToPath(new URL('../dist/simulators/cli.js', import.meta.url));
const AGENT_CLI = fileURLToPath(new URL('../dist/src/cli/tallybox.js', import.meta.url));
const DEVICE = 'p1-bench';
const ORG = 'org-a';
const END = new Set(['confirmed', 'failed', 'cancelled', 'uncertain']);
const mono = () => performance.now();
const say = (m) => process.env.BENCH_P1_VERBOSE && process.stderr.write(`p1 bench: ${new Date().toISOString()} ${m}\n`);

/** Varied bytes (not compressible, not all zero), written once to tmpfs: the same bytes for every variant. */
async function writeDocument(file, total) {
  const block = Buffer.alloc(CHUNK);
  for (let i = 0; i < CHUNK; i += 64) createHash('sha512').update(String(i)).digest().copy(block, i);
  const out = createWriteStream(file);
  for (let i = 0, sent = 0; sent < total; i++) {
    const n = Math.min(CHUNK, total - sent);
    const c = Buffer.from(block.subarray(0, n));
    c.writeUInt32BE(i, 0);
    sent += n;
    if (!out.write(c)) await new Promise((r) => out.once('drain', r));
  }
  await new Promise((r, j) => out.end((e) => (e ? j(e) : r())));
}

/** The baseline: the file's bytes over a plain socket to the simulator, write with drain, end, wait for its close. */
async function socketCopy(port, file) {
  const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  await new Promise((r, j) => {
    s.once('connect', r);
    s.once('error', j);
  });
  const closed = new Promise((r) => s.once('close', r));
  s.resume();
  for await (const c of createReadStream(file, { highWaterMark: CHUNK })) if (!s.write(c)) await new Promise((r) => s.once('drain', r));
  s.end();
  await closed;
}

/** A second baseline for the fetch stage: the same document downloaded over HTTPS here, bytes discarded. */
function httpsDownload(url, ca) {
  return new Promise((resolve, reject) => {
    httpsGet(url, { ca }, (res) => {
      res.on('data', () => {});
      res.on('end', resolve);
      res.on('error', reject);
    }).on('error', reject);
  });
}

/** A 9100 listener: the time the first byte of each connection arrives (probes send none), then drain and close. */
async function firstByteListener() {
  const waiters = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    let first = true;
    s.on('data', () => {
      if (!first) return;
      first = false;
      const t = mono();
      say('first byte');
      waiters.shift()?.(t);
    });
    s.on('end', () => s.end());
    s.on('error', () => {}); // a client that resets is not this bench's concern
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    /** Resolves with the monotonic time of the next connection's first byte. */
    nextFirstByte: () => new Promise((r) => waiters.push(r)),
    close: () => new Promise((r) => (server.closeAllConnections?.(), server.close(() => r()))),
  };
}

function rssKiB(pid, field) {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) : Number.NaN;
}

/** CPU time (ms, user + system) a process of ours has used: steadier than wall time on a loaded machine. */
function cpuMs(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10; // utime, stime in clock ticks (USER_HZ = 100 on Linux)
}

/** Reset the peak RSS (VmHWM) of a process of ours; false where the kernel does not allow it (then sampled). */
function resetPeak(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false; // not permitted here: the sampler below gives the peak instead
  }
}

export async function run() {
  const cleanups = [];
  const shm = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const root = mkdtempSync(join(shm, 'tbx-p1bench-'));
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  const dataRoot = mkdtempSync(join(process.env.BENCH_P1_DIR ?? tmpdir(), 'tbx-p1bench-data-'));
  cleanups.push(() => rmSync(dataRoot, { recursive: true, force: true }));
  const stop = async () => {
    for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined); // best effort: a cleanup failure must not hide the bench's own error
  };
  try {
    // ---------------------------------------------------------------- the cloud side and the printers
    const docFile = join(root, 'doc.bin');
    await writeDocument(docFile, TOTAL);
    const ca = await makePrivateCa();
    cleanups.push(() => ca.cleanup());
    const docs = await PrintDocServer.start({ ca });
    cleanups.push(() => docs.close());
    const served = await docs.addFile('bench-doc', docFile);
    const warmDoc = docs.add('warm-doc', Buffer.alloc(256 * 1024, 7));
    const broker = await startEmbeddedBroker();
    cleanups.push(() => broker.close());
    const signer = new CommandSigner({ keyId: 'cloud-bench' });
    const simDir = join(root, 'printed');
    mkdirSync(simDir);
    const sim = spawn(process.execPath, [SIM_CLI, 'printer', '--port', '0', '--out', simDir], { stdio: ['pipe', 'pipe', 'inherit'] });
    cleanups.push(() => new Promise((r) => (sim.exitCode !== null ? r() : (sim.once('exit', r), sim.kill('SIGTERM')))));
    const ready = JSON.parse(
      await new Promise((res, rej) => {
        createInterface({ input: sim.stdout }).once('line', res);
        sim.once('exit', (c) => rej(new Error(`simulator exited ${c}`)));
      }),
    );
    const listener = await firstByteListener();
    cleanups.push(() => listener.close());

    // ---------------------------------------------------------------- the agent, as systemd would run it
    const dataDir = join(dataRoot, 'data');
    const keys = await provisionKeyFiles({ kekPath: join(dataRoot, 'keys', 'tallybox.kek'), dataDir });
    const config = {
      version: 1,
      device: { id: DEVICE, kind: 'p1', orgId: ORG },
      region: 'sg',
      dataDir,
      broker: { url: broker.url, allowLoopback: true, reconnectMinMs: 50, reconnectMaxMs: 300 },
      vault: { kekFile: keys.kekPath },
      cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
      clock: { source: 'assume-synced' },
      outbox: { backlogRatePerSec: 0 },
      log: { level: 'info' },
      p1: {
        printers: { sim: { url: `raw://127.0.0.1:${ready.raw}?pjl=1` }, first: { url: `raw://127.0.0.1:${listener.port}`, confirm: 'delivery' } },
        inlineMaxBytes: FIRST_KIB * 1024 + 1024,
        fetch: { caFile: ca.caFile, maxBytes: TOTAL + 1024, timeoutMs: 600_000 },
      },
    };
    const configFile = join(dataRoot, 'tallybox.yaml');
    writeFileSync(configFile, yaml(config));
    const book = new PrintStatusBook({ deviceKey: createPublicKey(keys.publicKeyPem) });
    const endWaiters = new Map();
    const sink = await CloudSink.connect({
      url: broker.url,
      onResult: () => {
        const all = sink.rawResults();
        const { result, raw } = all[all.length - 1];
        book.add(result, raw);
        say(`result ${result.reason} ${result.printJobStatus?.jobId ?? ''} ${result.printJobStatus?.state ?? ''} bad=${book.resultsBad}`);
        const id = result.printJobStatus?.jobId;
        const st = id ? book.state(id) : undefined;
        if (id && st && END.has(st)) endWaiters.get(id)?.(st);
      },
    });
    cleanups.push(() => sink.close());
    // The command's arrival at another subscriber of the device's cmd topic: ≈ when the agent has it.
    const sniffer = await mqtt.connectAsync(broker.url, { clientId: `p1-bench-sniffer-${process.pid}`, protocolVersion: 4 });
    cleanups.push(() => sniffer.endAsync(true));
    const arrivals = [];
    sniffer.on('message', () => (arrivals.push(mono()), say('cmd at the sniffer')));
    await sniffer.subscribeAsync(topic(ORG, DEVICE, 'cmd'), { qos: 1 });

    const agentArgs = [...(CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF] : []), AGENT_CLI, 'run', '--config', configFile];
    const agent = spawn(process.execPath, agentArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
    let agentErr = '';
    const stages = new Map(); // jobId → { state: mono time the agent logged it }
    createInterface({ input: agent.stderr }).on('line', (line) => {
      const t = mono();
      agentErr = (agentErr + line + '\n').slice(-8000);
      if (process.env.BENCH_P1_VERBOSE === '2') process.stderr.write(`agent: ${line}\n`);
      if (!line.includes('p1_job_state')) return;
      try {
        const j = JSON.parse(line);
        if (j.event !== 'p1_job_state') return;
        if (!stages.has(j.jobId)) stages.set(j.jobId, {});
        stages.get(j.jobId)[j.to] = t;
      } catch {
        // not a JSON log line (a warning from node itself): nothing to time
      }
    });
    cleanups.push(
      () =>
        new Promise((r) => {
          if (agent.exitCode !== null) return r();
          const t = setTimeout(() => agent.kill('SIGKILL'), 20_000);
          agent.once('exit', () => (clearTimeout(t), r()));
          agent.kill('SIGTERM');
        }),
    );
    say('agent started');
    const deadline = mono() + 60_000;
    while (!sink.state(DEVICE)) {
      if (agent.exitCode !== null) throw new Error(`agent exited ${agent.exitCode}: ${agentErr}`);
      if (mono() > deadline) throw new Error(`agent did not come online: ${agentErr}`);
      await new Promise((r) => setTimeout(r, 50));
    }

    let n = 0;
    /** Publish one PrintJob; resolves with the publish time and a promise of the job's end state (and its time). */
    const submit = async (spec) => {
      const jobId = `bench-${++n}`;
      const ended = new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`job ${jobId} did not end: ${agentErr}`)), 900_000);
        endWaiters.set(jobId, (state) => (clearTimeout(t), endWaiters.delete(jobId), resolve({ state, t: mono() })));
      });
      say(`submit ${jobId}`);
      const t0 = mono();
      await sink.sendCommand(signer, ORG, DEVICE, printJobBody({ jobId, ...spec }));
      const counter = signer.lastCounter;
      // The command's own answer: anything but "queued" ends the job here (the agent says why).
      // (The job's later statuses share the counter: the answer is the one that is not a print_job_status.)
      void (async () => {
        for (let i = 0; i < 45_000; i++) {
          const hit = sink.rawResults().find((x) => x.result.counter === counter && x.result.reason !== 'print_job_status');
          if (hit) {
            if (hit.result.code !== ResultCode.RESULT_CODE_OK || hit.result.reason !== 'job_queued') endWaiters.get(jobId)?.(`refused:${hit.result.reason}`);
            return;
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      return { jobId, t0, ended };
    };
    const mustConfirm = async (job) => {
      const e = await job.ended;
      if (e.state !== 'confirmed') throw new Error(`job ${job.jobId} ended ${e.state} (${book.jobs.get(job.jobId)?.errorCode ?? ''})`);
      return e.t;
    };
    const clearPrinted = () => {
      for (const f of readdirSync(simDir)) rmSync(join(simDir, f), { force: true });
    };

    say('agent online');
    // The print role starts after the link: a PrintJob before then is answered print_role_not_started.
    for (let tries = 0; ; tries++) {
      const job = await submit({ printer: 'first', inline: Buffer.alloc(16, 1) });
      const e = await job.ended;
      if (e.state === 'confirmed') break;
      if (e.state !== 'refused:print_role_not_started' || tries > 100) throw new Error(`first job ${e.state}: ${agentErr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // Warm-up: one fetched and one inline job, so both paths are loaded and JIT-compiled before timing.
    await mustConfirm(await submit({ printer: 'sim', fetch: warmDoc }));
    {
      const fb = listener.nextFirstByte();
      await mustConfirm(await submit({ printer: 'first', inline: Buffer.alloc(64 * 1024, 3) }));
      await fb;
    }
    say('warm');
    clearPrinted();

    // ---------------------------------------------------------------- stream: 50 MiB fetched
    const pid = agent.pid;
    const t = { e2e: [], socket: [], https: [], rss: [], cpu: [], fetch: [], send: [], confirm: [] };
    let peakByReset = true;
    const variants = {
      socket: async () => {
        const t0 = mono();
        await socketCopy(ready.raw, docFile);
        t.socket.push((mono() - t0) / 1000);
      },
      https: async () => {
        const t0 = mono();
        await httpsDownload(served.url, ca.caPem);
        t.https.push((mono() - t0) / 1000);
      },
      e2e: async () => {
        const before = rssKiB(pid, 'VmRSS');
        const cpu0 = cpuMs(pid);
        peakByReset &&= resetPeak(pid);
        let sampled = before;
        const sampler = setInterval(() => {
          sampled = Math.max(sampled, rssKiB(pid, 'VmRSS'));
        }, 20);
        try {
          const job = await submit({ printer: 'sim', fetch: served });
          const tEnd = await mustConfirm(job);
          const peak = Math.max(sampled, peakByReset ? rssKiB(pid, 'VmHWM') : 0);
          t.e2e.push((tEnd - job.t0) / 1000);
          t.rss.push((peak - before) / 1024);
          t.cpu.push(cpuMs(pid) - cpu0);
          const s = stages.get(job.jobId) ?? {};
          if (s.fetching && s.ready) t.fetch.push((s.ready - s.fetching) / 1000);
          if (s.sending && s.sent) t.send.push((s.sent - s.sending) / 1000);
          if (s.sent) t.confirm.push((tEnd - s.sent) / 1000);
        } finally {
          clearInterval(sampler);
        }
      },
    };
    const order = Object.keys(variants);
    for (let r = 0; r < REPS; r++) {
      for (let k = 0; k < order.length; k++) await variants[order[(r + k) % order.length]]();
      clearPrinted();
    }

    // ---------------------------------------------------------------- first: PrintJob → first byte
    const firstDoc = Buffer.alloc(FIRST_KIB * 1024);
    for (let i = 0; i < firstDoc.length; i += 4) firstDoc.writeUInt32BE((i * 2654435761) >>> 0, i);
    const f = { e2e: [], agent: [], transport: [], cpu: [] };
    const raw = new RawPrinter({ host: '127.0.0.1', port: listener.port });
    for (let i = 0; i < FIRST_N; i++) {
      {
        arrivals.length = 0;
        const fb = listener.nextFirstByte();
        const cpu0 = cpuMs(pid);
        const job = await submit({ printer: 'first', inline: firstDoc });
        const tFirst = await fb;
        await mustConfirm(job);
        f.cpu.push(cpuMs(pid) - cpu0);
        f.e2e.push(tFirst - job.t0);
        if (arrivals.length === 1) f.agent.push(tFirst - arrivals[0]);
      }
      {
        const fb = listener.nextFirstByte();
        const t0 = mono();
        async function* doc() {
          for (let o = 0; o < firstDoc.length; o += CHUNK) yield firstDoc.subarray(o, o + CHUNK);
        }
        const sent = raw.send({ jobName: `base-${i}`, format: 'application/octet-stream', copies: 1, document: doc() });
        f.transport.push((await fb) - t0);
        await sent;
      }
    }

    // ---------------------------------------------------------------- the table
    const B = 'p1';
    const mbps = (xs) => TOTAL / 1e6 / median(xs);
    const base = mbps(t.socket);
    const e2e = mbps(t.e2e);
    const ms = (xs) => median(xs) * 1000;
    const baseFirst = percentile(f.transport, 99);
    return [
      { bench: B, metric: `net.Socket copy ${MIB} MiB → 9100 simulator (baseline)`, value: base, unit: 'MB/s' },
      { bench: B, metric: `PrintJob ${MIB} MiB fetched → confirmed (HTTPS → spool → 9100+PJL)`, value: e2e, unit: 'MB/s', baseline: base, ratio: e2e / base, target: '≥ 0.8×', ok: e2e / base >= 0.8 },
      { bench: B, metric: `  stage fetching → ready (HTTPS + encrypt + fsync)`, value: ms(t.fetch), unit: 'ms' },
      { bench: B, metric: `  HTTPS download alone, same document (bench process)`, value: ms(t.https), unit: 'ms' },
      { bench: B, metric: `  stage sending → sent (decrypt → 9100, PJL END)`, value: ms(t.send), unit: 'ms', baseline: ms(t.socket), ratio: ms(t.socket) / ms(t.send) },
      { bench: B, metric: `  sent → confirmed status at the cloud (shred, receipt)`, value: ms(t.confirm), unit: 'ms' },
      { bench: B, metric: `agent RSS growth during the ${MIB} MiB job${peakByReset ? ' (VmHWM)' : ' (sampled)'}`, value: median(t.rss), unit: 'MiB', target: '≤ 30 MiB', ok: Math.max(...t.rss) <= 30 },
      { bench: B, metric: `  worst rep`, value: Math.max(...t.rss), unit: 'MiB' },
      { bench: B, metric: `agent CPU per ${MIB} MiB fetched job (user + system)`, value: median(t.cpu), unit: 'ms CPU' },
      { bench: B, metric: `RawPrinter connect → first byte, ${FIRST_KIB} KiB (baseline, p99)`, value: baseFirst, unit: 'ms' },
      { bench: B, metric: `PrintJob ${FIRST_KIB} KiB inline published → first byte, p99 (n=${f.e2e.length})`, value: percentile(f.e2e, 99), unit: 'ms', baseline: baseFirst, target: '≤ 50 ms', ok: percentile(f.e2e, 99) <= 50 },
      { bench: B, metric: `  median`, value: median(f.e2e), unit: 'ms' },
      { bench: B, metric: `  agent CPU per ${FIRST_KIB} KiB inline job (to confirmed)`, value: median(f.cpu), unit: 'ms CPU' },
      { bench: B, metric: `  cmd at a subscriber → first byte (agent's part), p99 (n=${f.agent.length})`, value: percentile(f.agent, 99), unit: 'ms', baseline: baseFirst, target: '≤ 50 ms', ok: percentile(f.agent, 99) <= 50 },
      { bench: B, metric: `  median`, value: median(f.agent), unit: 'ms' },
    ];
  } finally {
    await stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await run()) console.log(r);
}
