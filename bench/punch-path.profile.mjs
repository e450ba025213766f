#!/usr/bin/env node
// Where the drain's time goes: fills an outbox with N punches, drains it into a real
// Mosquitto from this process, and (run under `node --cpu-prof`) leaves a V8 CPU profile.
//   node --cpu-prof --cpu-prof-dir=bench/results/prof bench/punch-path.profile.mjs [N]
//   node bench/punch-path.profile.mjs --summarize bench/results/prof/X.cpuprofile
// The summary groups self time by area: SQLite (the sqlite3 binding), protobuf encoding,
// mqtt.js (packet building, its store, socket writes), the drain/outbox's own code, GC, idle.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

if (process.argv[2] === '--summarize') {
  summarize(process.argv[3]);
} else if (process.argv[2] === '--fill') {
  const { Outbox } = await import('../dist/src/outbox/outbox.js');
  const N = Number(process.argv[4]);
  const o = await Outbox.open({ path: join(process.argv[3], 'outbox.db'), capacity: 1_000_000 });
  for (let i = 0; i < N; i += 5000) await Promise.all(Array.from({ length: Math.min(5000, N - i) }, (_, k) => o.accept({ orgId: 'org-bench', subjectId: `subject-${(i + k) % 997}`, method: 3 })));
  await o.close();
} else {
  const N = Number(process.argv[2] ?? 100_000);
  const { Agent } = await import('../dist/src/agent/agent.js');
  const { validateConfig } = await import('../dist/src/config/load.js');
  const { silentLogger } = await import('../dist/src/util/log.js');
  const { Mosquitto } = await import('../dist/simulators/cloud/mosquitto.js');
  const mosq = await Mosquitto.start();
  const dir = mkdtempSync(join(tmpdir(), 'tbx-prof-'));
  try {
    // Filled by another process (no profiler there): the profile is the drain's alone.
    execFileSync(process.execPath, [new URL(import.meta.url).pathname, '--fill', dir, String(N)], { stdio: 'inherit' });
    const config = validateConfig({
      version: 1,
      device: { id: 'bench-dev', kind: 'sim', orgId: 'org-bench' },
      region: 'sg',
      dataDir: dir,
      broker: { url: mosq.url, allowLoopback: true },
      outbox: { backlogRatePerSec: 0, inflight: 256, capacity: 1_000_000 },
      clock: { source: 'assume-synced' },
      log: { level: 'silent' },
    });
    const agent = await Agent.start({ config, logger: silentLogger() });
    while (!agent.session) await new Promise((r) => setTimeout(r, 1));
    const t0 = performance.now();
    const th0 = threadCpu();
    const c0 = process.cpuUsage();
    while (agent.outbox.depth > 0) await new Promise((r) => setTimeout(r, 1));
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const th = threadCpu();
    const main = (th.main - th0.main) / (N / 1000);
    const others = (th.others - th0.others) / (N / 1000);
    console.log(`drained ${N} in ${ms.toFixed(0)} ms: ${Math.round((N / ms) * 1000)} msg/s`);
    // The V8 profile sees the main thread only; SQLite runs on the libuv pool (and GC has helper threads).
    console.log(`CPU per 1,000 messages: ${((c.user + c.system) / 1000 / (N / 1000)).toFixed(2)} ms (process), of which main thread ${main.toFixed(2)} ms, ` + `other threads (libuv pool: SQLite, fs; V8 helpers) ${others.toFixed(2)} ms`);
    await agent.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await mosq.stop();
  }
}

/** CPU ms so far of this process's main thread and of all its other threads (/proc, clock ticks). */
function threadCpu() {
  const tick = 1000 / 100; // USER_HZ is 100 on Linux
  let main = 0;
  let others = 0;
  for (const t of readdirSync('/proc/self/task')) {
    let f;
    try {
      f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
    } catch {
      continue; // the thread ended meanwhile
    }
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    const ms = (Number(fields[11]) + Number(fields[12])) * tick;
    if (Number(t) === process.pid) main += ms;
    else others += ms;
  }
  return { main, others };
}

function summarize(file) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = prof.timeDeltas;
  for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (dt[i] ?? 0));
  const areas = new Map();
  const fns = new Map();
  let total = 0;
  for (const [id, us] of self) {
    const n = byId.get(id);
    const { functionName: fn, url } = n.callFrame;
    if (fn === 'spawnSync') continue; // the fill, in another process
    const area =
      fn === '(idle)'
        ? 'idle (waiting for the socket / thread pool)'
        : fn === '(garbage collector)'
          ? 'GC'
          : fn === '(program)'
            ? 'V8/native (program)'
            : fn === 'writev' || fn === 'writeBuffer' || fn === 'writeUtf8String'
              ? 'socket writes (native)'
              : /sqlite3/.test(url) || /^(Statement|Database)/.test(fn) || /\/src\/store\//.test(url)
                ? 'SQLite binding (JS side; src/store calls into it)'
                : /node_modules\/debug\//.test(url)
                  ? 'debug (mqtt.js log calls)'
                  : /node_modules\/(rfdc|bl|readable-stream)\//.test(url)
                    ? 'mqtt.js deps (packet clone, buffer list, streams)'
                    : /^node:internal\/(modules|bootstrap|child_process)/.test(url) || fn === 'spawn'
                      ? 'start-up (module loading, fill process)'
                      : /protobufjs|\/gen\//.test(url)
                        ? 'protobuf encode'
                        : /mqtt-packet/.test(url)
                          ? 'mqtt-packet (building packets)'
                          : /node_modules\/mqtt\//.test(url)
                            ? 'mqtt.js client'
                            : /\/src\/outbox\//.test(url)
                              ? 'outbox + drain'
                              : /\/src\/link\//.test(url)
                                ? 'link (egress, encoder, transport, packet gate)'
                                : /^node:|internal/.test(url) || url === ''
                                  ? 'node core (streams, net, timers, promises)'
                                  : 'other';
    areas.set(area, (areas.get(area) ?? 0) + us);
    const key = `${fn || '(anonymous)'} ${url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber + 1}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
    total += us;
  }
  const pct = (us) => `${((us / total) * 100).toFixed(1)}%`.padStart(6);
  console.log(`total sampled: ${(total / 1000).toFixed(0)} ms`);
  for (const [a, us] of [...areas].sort((x, y) => y[1] - x[1])) console.log(`${pct(us)}  ${(us / 1000).toFixed(0).padStart(6)} ms  ${a}`);
  console.log('\ntop functions (self time):');
  for (const [f, us] of [...fns].sort((x, y) => y[1] - x[1]).slice(0, 25)) console.log(`${pct(us)}  ${f}`);
}
