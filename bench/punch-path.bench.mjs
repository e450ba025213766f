// Punch path benchmarks (issue 2). Each figure is compared with a baseline measured in the
// same run, and repeated; the table quotes medians.
//   drain:   100,000 queued punches to a local Mosquitto vs a bare mqtt client publishing the
//            same number of QoS 1 messages of the same size with the same in-flight window
//   accept:  durable accepts/s with group commit vs one commit per punch
//   rss:     agent process RSS at idle after start
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { dump as stringify } from 'js-yaml';
import { Agent } from '../dist/src/agent/agent.js';
import { validateConfig } from '../dist/src/config/load.js';
import { Outbox } from '../dist/src/outbox/outbox.js';
import { silentLogger } from '../dist/src/util/log.js';
import { Mosquitto } from '../dist/simulators/cloud/mosquitto.js';
import { freePort, sleep } from '../dist/simulators/lib/ports.js';
import { median } from './stats.mjs';

const DRAIN_N = Number(process.env.BENCH_DRAIN_N ?? 100_000);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const WINDOW = 256; // the agent's default outbox.inflight
const CLI = new URL('../dist/src/cli/tallybox.js', import.meta.url).pathname;

function config(dataDir, url, extra = {}) {
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

async function fill(path, n) {
  const o = await Outbox.open({ path, capacity: 1_000_000 });
  for (let i = 0; i < n; i += 5000) {
    await Promise.all(Array.from({ length: Math.min(5000, n - i) }, (_, k) => o.accept({ orgId: 'org-bench', subjectId: `subject-${(i + k) % 997}`, method: 3 })));
  }
  await o.close();
}

async function agentDrain(url) {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-drain-'));
  try {
    await fill(join(dir, 'outbox.db'), DRAIN_N);
    const t0 = performance.now();
    const agent = await Agent.start({ config: config(dir, url), logger: silentLogger() });
    while (agent.outbox.depth > 0) await sleep(5);
    const ms = performance.now() - t0;
    await agent.stop();
    return (DRAIN_N / ms) * 1000;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function bareDrain(url, payloadSize) {
  const client = await mqtt.connectAsync(url, { clientId: `bench-bare-${process.pid}`, clean: true, protocolVersion: 4, reconnectPeriod: 0 });
  const payload = Buffer.alloc(payloadSize, 0x42);
  const t0 = performance.now();
  let next = 0;
  let done = 0;
  await new Promise((resolve, reject) => {
    const pump = () => {
      while (next < DRAIN_N && next - done < WINDOW) {
        next++;
        client.publish('tallybox/v1/org-bench/bench-bare/punch', payload, { qos: 1 }, (err) => {
          if (err) return reject(err);
          if (++done === DRAIN_N) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  const ms = performance.now() - t0;
  await client.endAsync();
  return (DRAIN_N / ms) * 1000;
}

async function acceptRates() {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-accept-'));
  try {
    const o = await Outbox.open({ path: join(dir, 'outbox.db'), capacity: 10_000_000 });
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
    await Promise.all(Array.from({ length: PRODUCERS }, async () => {
      while (issued < GROUP) await o.accept(p(issued++));
    }));
    const group = (GROUP / (performance.now() - t0)) * 1000;
    await o.close();
    return { single, group };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function idleRss(url) {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-rss-'));
  const apiPort = await freePort();
  const file = join(dir, 'tallybox.yaml');
  writeFileSync(file, stringify({ version: 1, device: { id: 'bench-rss', kind: 'sim', orgId: 'org-bench' }, region: 'sg', dataDir: join(dir, 'data'), broker: { url, allowLoopback: true }, punchApi: { enabled: true, port: apiPort }, clock: { source: 'assume-synced' }, log: { level: 'warn' } }));
  // Started through its shebang, as the installed `tallybox` binary runs (with its V8 flags).
  const proc = spawn(CLI, ['run', '--config', file], { stdio: 'ignore' });
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
    const bare = [];
    const agent = [];
    for (let r = 0; r < REPS; r++) {
      bare.push(await bareDrain(mosq.url, sample.length));
      agent.push(await agentDrain(mosq.url));
    }
    const accepts = [];
    for (let r = 0; r < REPS; r++) accepts.push(await acceptRates());
    const rss = [];
    for (let r = 0; r < REPS; r++) rss.push(await idleRss(mosq.url));

    const drainRatio = median(agent) / median(bare);
    const single = median(accepts.map((a) => a.single));
    const group = median(accepts.map((a) => a.group));
    return [
      { bench: 'punch-path', metric: `drain ${DRAIN_N.toLocaleString('en-US')} queued → Mosquitto`, value: median(agent), unit: 'msg/s', baseline: median(bare), ratio: drainRatio, target: '≥ 0.7× bare mqtt', ok: drainRatio >= 0.7 },
      { bench: 'punch-path', metric: 'durable accept, group commit', value: group, unit: 'punch/s', baseline: single, ratio: group / single, target: '≥ 10× and ≥ 20,000/s', ok: group / single >= 10 && group >= 20_000 },
      { bench: 'punch-path', metric: 'agent RSS at idle', value: median(rss), unit: 'MB', target: '≤ 80 MB', ok: median(rss) <= 80 },
    ];
  } finally {
    await mosq.stop();
  }
}
