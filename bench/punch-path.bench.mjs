// Punch path benchmarks (issues 2, 8, 10 §5). Each figure is compared with a baseline measured
// in the same run, and repeated (interleaved, so load from other jobs hits both alike); the
// table quotes medians.
//   drain:   100,000 queued punches to a local Mosquitto vs a bare mqtt client publishing the
//            same number of QoS 1 messages of the same size with the same in-flight window.
//            Timed from the moment the link is up (the bare client's clock also starts after
//            its CONNACK) until every row is deleted (after its PUBACK); also reported with the
//            agent's start-up included.
//   accept:  durable accepts/s with group commit vs one commit per punch
//   accept CPU: process CPU (all threads) per punch accepted one at a time, and per punch
//            accepted, acknowledged and deleted (what each agent of a fleet pays per punch,
//            issue 13), this build vs BENCH_BEFORE's; and statfs lookups per punch
//   CPU per 1,000 messages drained vs the bare client's: the column the machine's load
//            changes least (a loaded machine slows the bare client, which flatters the ratio)
//   rss:     agent process RSS at idle after start
// BENCH_BEFORE=/path/to/an/older/checkout (built) adds that build's agent to the same run, so a
// change can be quoted against its predecessor measured under the same load.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { dump as stringify } from 'js-yaml';
import { silentLogger } from '../dist/src/util/log.js';
import { Mosquitto } from '../dist/simulators/cloud/mosquitto.js';
import { freePort, sleep } from '../dist/simulators/lib/ports.js';
import { median } from './stats.mjs';

const DRAIN_N = Number(process.env.BENCH_DRAIN_N ?? 100_000);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const WINDOW = 256; // the agent's default outbox.inflight
const BEFORE = process.env.BENCH_BEFORE;
/** BENCH_DRAIN_ONLY=1: the drain rows only (no accept or RSS runs), for profiling sessions. */
const DRAIN_ONLY = process.env.BENCH_DRAIN_ONLY === '1';
const bareCpu = [];

/** The agent build under test, and optionally an older one (BENCH_BEFORE). */
async function builds() {
  const load = async (root, name) => ({
    name,
    cli: join(root, 'dist/src/cli/tallybox.js'),
    Agent: (await import(join(root, 'dist/src/agent/agent.js'))).Agent,
    Outbox: (await import(join(root, 'dist/src/outbox/outbox.js'))).Outbox,
    validateConfig: (await import(join(root, 'dist/src/config/load.js'))).validateConfig,
  });
  const out = [await load(new URL('..', import.meta.url).pathname, 'this build')];
  if (BEFORE) {
    if (!existsSync(join(BEFORE, 'dist/src/agent/agent.js'))) throw new Error(`BENCH_BEFORE=${BEFORE}: no dist/ there (build it first)`);
    out.push(await load(BEFORE, 'before'));
  }
  return out;
}

function config(validateConfig, dataDir, url, extra = {}) {
  return validateConfig({
    version: 1,
    device: { id: 'bench-dev', kind: 'sim', orgId: 'org-bench' },
    region: 'sg',
    dataDir,
    broker: { url, allowLoopback: true, reconnectMinMs: 50, reconnectMaxMs: 500 },
    outbox: { backlogRatePerSec: 0, inflight: WINDOW, capacity: 1_000_000 },
    clock: { source: 'assume-synced' },
    log: { level: 'silent' },
    ...extra,
  });
}

/** Filled by the build that drains it: each build reads its own row layout (schema 2 is not read by older builds). */
async function fill(Box, path, n) {
  const o = await Box.open({ path, capacity: 1_000_000 });
  for (let i = 0; i < n; i += 5000) {
    await Promise.all(Array.from({ length: Math.min(5000, n - i) }, (_, k) => o.accept({ orgId: 'org-bench', subjectId: `subject-${(i + k) % 997}`, method: 3 })));
  }
  await o.close();
}

/** Drain a copy of the filled outbox; rates from the link coming up, and from start. */
async function agentDrain(build, template, url) {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-drain-'));
  try {
    copyFileSync(join(template, 'outbox.db'), join(dir, 'outbox.db'));
    if (existsSync(join(template, 'outbox.seq'))) copyFileSync(join(template, 'outbox.seq'), join(dir, 'outbox.seq'));
    const t0 = performance.now();
    const agent = await build.Agent.start({ config: config(build.validateConfig, dir, url), logger: silentLogger() });
    while (!agent.session) await sleep(1);
    const t1 = performance.now();
    const c1 = process.cpuUsage();
    while (agent.outbox.depth > 0) await sleep(1);
    const t2 = performance.now();
    const cpu = process.cpuUsage(c1);
    await agent.stop();
    // CPU of this process (event loop + SQLite's threads) per message: what the host's load does not change much.
    return { online: (DRAIN_N / (t2 - t1)) * 1000, withStart: (DRAIN_N / (t2 - t0)) * 1000, cpuUs: (cpu.user + cpu.system) / DRAIN_N };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The baseline: a bare mqtt.js client, same protocol version as the agent (MQTT 5), same
 * payload size, same window, written the way a client that wants speed writes it: PUBACKs
 * free slots and the slots of one event-loop turn are refilled together (one corked socket
 * write per turn). Refilling from each PUBACK callback instead (one write per message) is
 * 2-3x slower on this machine and would flatter the agent.
 */
async function bareDrain(url, payloadSize) {
  const client = await mqtt.connectAsync(url, { clientId: `bench-bare-${process.pid}`, clean: true, protocolVersion: 5, reconnectPeriod: 0 });
  const payload = Buffer.alloc(payloadSize, 0x42);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  let next = 0;
  let done = 0;
  await new Promise((resolve, reject) => {
    let queued = false;
    const pump = () => {
      queued = false;
      while (next < DRAIN_N && next - done < WINDOW) {
        next++;
        client.publish('tallybox/v1/org-bench/bench-dev/punch', payload, { qos: 1 }, onAck);
      }
    };
    const onAck = (err) => {
      if (err) return reject(err);
      if (++done === DRAIN_N) resolve();
      else if (!queued) {
        queued = true;
        setImmediate(pump);
      }
    };
    pump();
  });
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  await client.endAsync();
  bareCpu.push((cpu.user + cpu.system) / DRAIN_N);
  return (DRAIN_N / ms) * 1000;
}

async function acceptRates(build) {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-accept-'));
  try {
    const o = await build.Outbox.open({ path: join(dir, 'outbox.db'), capacity: 10_000_000 });
    const p = (i) => ({ orgId: 'org-bench', subjectId: `subject-${i % 997}`, method: 3 });
    // One commit per punch: each accept waits for the previous one (nothing to group).
    const SINGLE = 400;
    let t0 = performance.now();
    for (let i = 0; i < SINGLE; i++) await o.accept(p(i));
    const single = (SINGLE / (performance.now() - t0)) * 1000;
    // Group commit: 1,000 producers each waiting for their own punch to be durable.
    const GROUP = 60_000;
    const PRODUCERS = 1000;
    let issued = 0;
    t0 = performance.now();
    await Promise.all(
      Array.from({ length: PRODUCERS }, async () => {
        while (issued < GROUP) await o.accept(p(issued++));
      }),
    );
    const group = (GROUP / (performance.now() - t0)) * 1000;
    await o.close();
    return { single, group };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** CPU per punch on the accept path, one punch at a time (no group commit to share it). */
async function acceptCpu(build) {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-acpu-'));
  try {
    const o = await build.Outbox.open({ path: join(dir, 'outbox.db'), capacity: 10_000_000 });
    const p = (i) => ({ orgId: 'org-bench', subjectId: `subject-${i % 997}`, method: 3 });
    const N = Number(process.env.BENCH_ACCEPT_CPU_N ?? 1500);
    for (let i = 0; i < 50; i++) await o.accept(p(i)); // warm: statements prepared, mark reserved
    const lookups0 = o.spaceLookups ?? NaN;
    let c0 = process.cpuUsage();
    let t0 = performance.now();
    for (let i = 0; i < N; i++) await o.accept(p(i));
    let cpu = process.cpuUsage(c0);
    const accept = { cpuUs: (cpu.user + cpu.system) / N, perSec: (N / (performance.now() - t0)) * 1000, statfsPerPunch: ((o.spaceLookups ?? NaN) - lookups0) / N };
    // The fleet's cycle: accepted, delivered (PUBACK), deleted; each before the next punch.
    c0 = process.cpuUsage();
    t0 = performance.now();
    for (let i = 0; i < N; i++) {
      const row = await o.accept(p(i));
      o.ack(row.seq);
      await o.flushAcks();
    }
    cpu = process.cpuUsage(c0);
    const cycle = { cpuUs: (cpu.user + cpu.system) / N, perSec: (N / (performance.now() - t0)) * 1000 };
    await o.close();
    return { accept, cycle };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function idleRss(build, url) {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-rss-'));
  const apiPort = await freePort();
  const file = join(dir, 'tallybox.yaml');
  writeFileSync(
    file,
    stringify({
      version: 1,
      device: { id: 'bench-rss', kind: 'sim', orgId: 'org-bench' },
      region: 'sg',
      dataDir: join(dir, 'data'),
      broker: { url, allowLoopback: true },
      punchApi: { enabled: true, port: apiPort },
      clock: { source: 'assume-synced' },
      log: { level: 'warn' },
    }),
  );
  // Started through its shebang, as the installed `tallybox` binary runs (with its V8 flags).
  const proc = spawn(build.cli, ['run', '--config', file], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 400; i++) {
      try {
        if ((await fetch(`http://127.0.0.1:${apiPort}/v1/state`)).ok) break;
      } catch {
        /* starting */
      }
      await sleep(25);
    }
    await sleep(3000);
    const status = readFileSync(`/proc/${proc.pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) / 1024;
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run() {
  const mosq = await Mosquitto.start();
  try {
    // Same payload size as the agent's encoded punches.
    const { EgressGate } = await import('../dist/src/link/egress.js');
    const sample = new EgressGate({ deviceId: 'bench-dev', operatorOrgId: 'org-bench' }).encodePunch(
      { eventId: '01900000-0000-7000-8000-000000000000', orgId: 'org-bench', subjectId: 'subject-123', method: 3, occurredAtMs: Date.now(), clockSynced: true, seq: 50_000, matchScore: 0, liveness: 0 },
      { bdSeq: 3, historical: true },
    );
    const all = await builds();
    const template = mkdtempSync(join(tmpdir(), 'tbx-bench-fill-'));
    const templateOf = (b) => join(template, b.name.replace(/\W+/g, '-'));
    const bare = [];
    const drains = new Map(all.map((b) => [b.name, []]));
    const accepts = new Map(all.map((b) => [b.name, []]));
    const rss = new Map(all.map((b) => [b.name, []]));
    const acpu = new Map(all.map((b) => [b.name, []]));
    try {
      for (const b of all) await fill(b.Outbox, join(templateOf(b), 'outbox.db'), DRAIN_N);
      for (let r = 0; r < REPS; r++) {
        bare.push(await bareDrain(mosq.url, sample.length));
        for (const b of all) drains.get(b.name).push(await agentDrain(b, templateOf(b), mosq.url));
      }
    } finally {
      rmSync(template, { recursive: true, force: true });
    }
    if (!DRAIN_ONLY) for (let r = 0; r < REPS; r++) for (const b of all) accepts.get(b.name).push(await acceptRates(b));
    if (!DRAIN_ONLY || process.env.BENCH_ACCEPT_CPU === '1') for (let r = 0; r < REPS; r++) for (const b of all) acpu.get(b.name).push(await acceptCpu(b));
    if (!DRAIN_ONLY) for (let r = 0; r < REPS; r++) for (const b of all) rss.get(b.name).push(await idleRss(b, mosq.url));

    const rows = [];
    const bareMed = median(bare);
    for (const b of all) {
      const tag = b.name === 'this build' ? '' : ` [${b.name}]`;
      const d = drains.get(b.name);
      const online = median(d.map((x) => x.online));
      const withStart = median(d.map((x) => x.withStart));
      const a = accepts.get(b.name);
      const single = median(a.map((x) => x.single));
      const group = median(a.map((x) => x.group));
      const m = median(rss.get(b.name));
      const cpuUs = median(d.map((x) => x.cpuUs));
      const bareCpuUs = median(bareCpu);
      // Each repetition's agent run follows its own bare run: the ratio within a repetition is what load drift distorts least.
      const perRep = median(d.map((x, i) => x.online / bare[i]));
      const cpuPerRep = median(d.map((x, i) => x.cpuUs / bareCpu[i]));
      rows.push(
        {
          bench: 'punch-path',
          metric: `drain ${DRAIN_N.toLocaleString('en-US')} queued → Mosquitto, from link up${tag}`,
          value: online,
          unit: 'msg/s',
          baseline: bareMed,
          ratio: online / bareMed,
          target: '≥ 0.9× bare mqtt',
          ok: online / bareMed >= 0.9,
        },
        { bench: 'punch-path', metric: `  median of the ${REPS} per-repetition ratios${tag}`, value: perRep, unit: '×', ratio: perRep, target: '≥ 0.9×', ok: perRep >= 0.9 },
        { bench: 'punch-path', metric: `  same, agent start-up included${tag}`, value: withStart, unit: 'msg/s', baseline: bareMed, ratio: withStart / bareMed },
        // µs per message = ms per 1,000 messages.
        { bench: 'punch-path', metric: `  CPU per 1,000 messages drained (process, all threads) vs bare${tag}`, value: cpuUs, unit: 'ms', baseline: bareCpuUs, ratio: cpuUs / bareCpuUs },
        { bench: 'punch-path', metric: `  same, median of the ${REPS} per-repetition CPU ratios${tag}`, value: cpuPerRep, unit: '×', ratio: cpuPerRep },
      );
      const ac = acpu.get(b.name);
      if (ac.length > 0) {
        const before = acpu.get('before');
        const ref = b.name === 'this build' && before?.length ? before : undefined;
        const one = median(ac.map((x) => x.accept.cpuUs));
        const cyc = median(ac.map((x) => x.cycle.cpuUs));
        rows.push(
          {
            bench: 'punch-path',
            metric: `accept one at a time: CPU per punch${ref ? ' vs before' : ''}${tag}`,
            value: one,
            unit: 'µs',
            baseline: ref ? median(ref.map((x) => x.accept.cpuUs)) : undefined,
            ratio: ref ? one / median(ref.map((x) => x.accept.cpuUs)) : undefined,
          },
          { bench: 'punch-path', metric: `  statfs per punch${tag}`, value: median(ac.map((x) => x.accept.statfsPerPunch)), unit: '' },
          { bench: 'punch-path', metric: `  accepts/s, one at a time (fsync each)${tag}`, value: median(ac.map((x) => x.accept.perSec)), unit: 'punch/s' },
          {
            bench: 'punch-path',
            metric: `accept + PUBACK delete, one at a time: CPU per punch${ref ? ' vs before' : ''}${tag}`,
            value: cyc,
            unit: 'µs',
            baseline: ref ? median(ref.map((x) => x.cycle.cpuUs)) : undefined,
            ratio: ref ? cyc / median(ref.map((x) => x.cycle.cpuUs)) : undefined,
          },
        );
      }
      if (!DRAIN_ONLY) {
        rows.push(
          { bench: 'punch-path', metric: `durable accept, group commit${tag}`, value: group, unit: 'punch/s', baseline: single, ratio: group / single, target: '≥ 10× and ≥ 20,000/s', ok: group / single >= 10 && group >= 20_000 },
          { bench: 'punch-path', metric: `agent RSS at idle${tag}`, value: m, unit: 'MB', target: '≤ 80 MB', ok: m <= 80 },
        );
      }
    }
    process.stderr.write(`punch-path raw: ${JSON.stringify({ bare, bareCpu, drains: Object.fromEntries(drains), accepts: Object.fromEntries(accepts), rss: Object.fromEntries(rss), acceptCpu: Object.fromEntries(acpu) })}\n`);
    return rows;
  } finally {
    await mosq.stop();
  }
}
