// C1 (Wi-Fi presence): join → punch accepted in the outbox, from a hostapd event
// (p99 ≤ 5 ms) and from a dnsmasq lease-file rewrite (p99 ≤ 50 ms, watcher latency
// included); baseline in the same run: agent.punch() alone. And the idle RSS of
// `tallybox run` with the c1 role (≤ 70 MB; baseline: an idle `node -e`). And a 5,000-lease
// file rewritten every second for LEASE_LOAD_SEC (default 60): the watcher's CPU (≤ 5 % of a
// core; baseline: a watcher that only reads the file) and RSS (flat), in a child process.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { percentile } from './stats.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => join(root, 'dist', p);
const { startC1Stack } = await import(dist('src/cli/demo-c1.js'));
const { makeMac, WifiOffice } = await import(dist('simulators/wifi/office.js'));
const { PunchMethod } = await import(dist('src/proto/index.js'));
const N = Number(process.env.C1_BENCH_N ?? 1000);

async function enrolDirect(stack, count) {
  // Enrolment is not what is measured: subjects and MACs go straight into the vault (as a SubjectUpsert would put them).
  const macs = [];
  for (let i = 0; i < count; i++) {
    const id = `b-${i}`;
    const mac = makeMac(i % 2 === 1);
    await stack.dev.vault.upsertSubject(stack.orgId, { subjectId: id, displayName: `Bench ${i}`, minor: false, consents: [] });
    await stack.dev.vault.putCredential(stack.orgId, 'wifi_mac', mac, id);
    macs.push(mac);
  }
  return macs;
}

const nextPunch = (role) => new Promise((r) => role.once('punch', r));

/**
 * Durability alone, on the disk the agent's data directory is on, in the same run: a bare
 * SQLite commit (WAL, synchronous=FULL: the outbox's settings, through the project's wrapper)
 * of one small row, and an fdatasync of a 64-byte write. The accepted punch cannot be faster
 * than these.
 */
async function durabilityBaselines(dir, n) {
  const { Sqlite } = await import(dist('src/store/sqlite.js'));
  const { openSync, writeSync, fdatasyncSync, closeSync } = await import('node:fs');
  const db = await Sqlite.open(join(dir, 'bench-commit.db'));
  const commit = [];
  const sync = [];
  try {
    await db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)');
    const ins = await db.prepared('INSERT INTO t (v) VALUES (?)');
    const row = Buffer.alloc(96, 7); // about a punch row
    for (let i = 0; i < n + 20; i++) {
      const t = performance.now();
      await ins.run([row]);
      if (i >= 20) commit.push(performance.now() - t);
    }
  } finally {
    await db.close();
  }
  const fd = openSync(join(dir, 'bench-fdatasync.bin'), 'w');
  try {
    const buf = Buffer.alloc(64, 1);
    for (let i = 0; i < n + 20; i++) {
      const t = performance.now();
      writeSync(fd, buf, 0, buf.length, (i % 64) * 64);
      fdatasyncSync(fd);
      if (i >= 20) sync.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
  }
  return { commit99: percentile(commit, 99), commit50: percentile(commit, 50), sync99: percentile(sync, 99), sync50: percentile(sync, 50) };
}

/**
 * One run: `n` enrolled phones join back to back (each as soon as the previous punch was
 * accepted, so every join meets the previous punch's delivery: publish, PUBACK, delete).
 * `broker` is where the agent publishes: a Mosquitto of its own process with nobody subscribed
 * (the router's case: the broker and the cloud are other machines), or undefined: the demo's
 * embedded broker and cloud emulator inside the agent's process (what the bench measured before:
 * their CPU competes with the agent's on every join).
 */
async function hostapdRun(n, broker) {
  const stack = await startC1Stack({ sources: 'hostapd', ...(broker ? { brokerUrl: broker } : {}) });
  try {
    const macs = await enrolDirect(stack, n + 20);
    // With a broker of its own, nobody in this process consumes the punches.
    if (broker) await stack.dev.sink.close();
    const durable = await durabilityBaselines(stack.dev.dataDir, n);
    // baseline: agent.punch() alone
    const base = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await stack.dev.agent.punch({ orgId: stack.orgId, subjectId: `b-${i}`, method: PunchMethod.PUNCH_METHOD_WIFI });
      base.push(performance.now() - t);
    }
    // Where the time goes: the moment the punch gate calls agent.punch() splits the presence path
    // (datagram → parse → presence → HMAC lookup → rules → gate) from the durable accept.
    const agent = stack.dev.agent;
    const punch = agent.punch.bind(agent);
    let calledAt = 0;
    agent.punch = (input) => {
      calledAt = performance.now();
      return punch(input);
    };
    const ap = stack.office.aps.get('wlan0');
    const lat = [];
    const pre = [];
    const accept = [];
    for (let i = 0; i < n + 20; i++) {
      const p = nextPunch(stack.role);
      const t = performance.now();
      ap.connect(macs[i]);
      await p;
      const done = performance.now();
      if (i < 20) continue; // the first ones warm the JIT and the statement cache
      lat.push(done - t);
      pre.push(calledAt - t);
      accept.push(done - calledAt);
    }
    delete agent.punch;
    return { lat, pre, accept, base, ...durable };
  } finally {
    await stack.close();
  }
}

const median = (xs) => percentile(xs, 50);

/** The V8, malloc and libuv settings the agent runs with (packaging/tallybox.service, the CLI's shebang). */
const DEPLOYED_FLAGS = ['--max-semi-space-size=1', '--v8-pool-size=1'];
const DEPLOYED_ENV = { MALLOC_ARENA_MAX: '2', UV_THREADPOOL_SIZE: process.env.C1_BENCH_UV_THREADS ?? '2', NODE_ENV: 'production' };

/**
 * hostapdRun in a child process started as the service starts the agent (a 1 MB young generation,
 * one V8 worker thread): its garbage collections are the device's, not this bench process's.
 */
async function hostapdRunAsDeployed(broker) {
  const child = spawn(process.execPath, [...DEPLOYED_FLAGS, fileURLToPath(import.meta.url)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...DEPLOYED_ENV, C1_HOSTAPD_CHILD: broker ?? '', C1_BENCH_N: String(N) },
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const code = await new Promise((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`the hostapd bench child exited with ${code}`);
  return JSON.parse(out.slice(out.lastIndexOf('\n{') + 1));
}

/**
 * HOSTAPD_REPS runs (default 3) of N joins each, the agent in a process of its own started as
 * deployed, against a Mosquitto of its own (when installed; else the embedded broker, said in the
 * rows); and one run in this process with the broker and cloud emulator beside the agent (as
 * measured before). Percentiles are per run; the table quotes the median run (noisy machine).
 */
async function hostapdLatency() {
  const { Mosquitto, mosquittoPath } = await import(dist('simulators/cloud/mosquitto.js'));
  const reps = Number(process.env.HOSTAPD_REPS ?? 3);
  const mosq = mosquittoPath() ? await Mosquitto.start() : undefined;
  const runs = [];
  try {
    for (let r = 0; r < reps; r++) runs.push(await hostapdRunAsDeployed(mosq?.url));
  } finally {
    await mosq?.stop();
  }
  const inProcess = await hostapdRun(N, undefined);
  const per = (run) => ({
    p99: percentile(run.lat, 99),
    p50: percentile(run.lat, 50),
    pre99: percentile(run.pre, 99),
    pre50: percentile(run.pre, 50),
    accept99: percentile(run.accept, 99),
    accept50: percentile(run.accept, 50),
    base: percentile(run.base, 99),
    base50: percentile(run.base, 50),
    commit99: run.commit99,
    commit50: run.commit50,
    sync99: run.sync99,
    sync50: run.sync50,
  });
  const each = runs.map(per);
  const out = {};
  for (const k of Object.keys(each[0])) out[k] = median(each.map((e) => e[k]));
  return { ...out, runs: each.map((e) => e.p99), separate: Boolean(mosq), inProcess: per(inProcess) };
}

async function leaseRewriteLatency() {
  const dir = mkdtempSync(join(tmpdir(), 'tbw-bench-'));
  const leaseFile = join(dir, 'dhcp.leases');
  writeFileSync(leaseFile, '');
  const stack = await startC1Stack({ sources: 'dnsmasq', c1: { dnsmasq: { leaseFile, pollMs: 1000 } } });
  try {
    const n = Math.min(N, 200);
    const macs = await enrolDirect(stack, n);
    const lines = [];
    const lat = [];
    const exp = Math.floor(Date.now() / 1000) + 3600;
    for (let i = 0; i < n; i++) {
      lines.push(`${exp} ${macs[i]} 10.1.${i >> 8}.${i & 255} * *\n`);
      const p = nextPunch(stack.role);
      const t = performance.now();
      writeFileSync(leaseFile, lines.join('')); // dnsmasq rewrites the whole file
      await p;
      lat.push(performance.now() - t);
    }
    return { p99: percentile(lat, 99), p50: percentile(lat, 50) };
  } finally {
    await stack.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function rssOf(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function idleRss() {
  const { provisionKeyFiles } = await import(dist('src/vault/keys.js'));
  const { startEmbeddedBroker } = await import(dist('simulators/cloud/broker.js'));
  const dir = mkdtempSync(join(tmpdir(), 'tbw-rss-'));
  const broker = await startEmbeddedBroker();
  const office = new WifiOffice({ dir: join(dir, 'wifi') }).start();
  const kids = [];
  try {
    const dataDir = join(dir, 'data');
    const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    const cfg = join(dir, 'tallybox.json');
    writeFileSync(
      cfg,
      JSON.stringify({
        version: 1,
        device: { id: 'rss-c1', kind: 'c1', orgId: 'o' },
        region: 'sg',
        dataDir,
        broker: { url: broker.url, allowLoopback: true },
        vault: { kekFile: keys.kekPath },
        clock: { source: 'assume-synced' },
        log: { level: 'error' },
        // A site's time zone and working hours, as a real config has them (validated at start: zone data).
        c1: { timeZone: 'Asia/Singapore', rules: { workingHours: { from: '07:00', to: '20:00' } }, hostapd: { ctrlDir: office.ctrlDir, interfaces: ['wlan0', 'wlan1'] }, dnsmasq: { leaseFile: office.leaseFile } },
      }),
    );
    // As systemd runs it (packaging/tallybox.service, and the CLI's shebang): the same flags and MALLOC_ARENA_MAX for both.
    const flags = DEPLOYED_FLAGS;
    const env = { ...process.env, ...DEPLOYED_ENV };
    const agent = spawn(process.execPath, [...flags, dist('src/cli/tallybox.js'), 'run', '--config', cfg], { stdio: 'ignore', env });
    const base = spawn(process.execPath, [...flags, '-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore', env });
    kids.push(agent, base);
    await new Promise((r) => setTimeout(r, 8000));
    const measured = { agent: rssOf(agent.pid), base: rssOf(base.pid), attached: Object.values(office.state().ifaces).every((i) => i.monitors === 1) };
    // Then the same agent again, probed (bench/c1-rss-probe.mjs), for where the memory is: one at a time (one data directory).
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
    const out = join(dir, 'probe.json');
    const probeEnv = { ...env, C1_RSS_PROBE_OUT: out, C1_RSS_PROBE_AT: '7000' };
    const probe = join(root, 'bench', 'c1-rss-probe.mjs');
    const probed = spawn(process.execPath, [...flags, `--import=${probe}`, dist('src/cli/tallybox.js'), 'run', '--config', cfg], { stdio: 'ignore', env: probeEnv });
    const probedBase = spawn(process.execPath, [...flags, `--import=${probe}`, '-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore', env: { ...probeEnv, C1_RSS_PROBE_OUT: `${out}.base` } });
    kids.push(probed, probedBase);
    await new Promise((r) => setTimeout(r, 8000));
    const read = (f) => {
      try {
        return JSON.parse(readFileSync(f, 'utf8'));
      } catch {
        return undefined; // the probe did not write (the agent died): the rows say n/a
      }
    };
    return { ...measured, breakdown: read(out), baseBreakdown: read(`${out}.base`) };
  } finally {
    for (const k of kids) k.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    office.stop();
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A 5,000-lease file rewritten whole every second (a few leases renewed, one arriving, one leaving), for LEASE_LOAD_SEC. */
async function leaseLoad(mode) {
  const secs = Number(process.env.LEASE_LOAD_SEC ?? 60);
  const dir = mkdtempSync(join(tmpdir(), 'tbw-load-'));
  const leaseFile = join(dir, 'dhcp.leases');
  const exp0 = Math.floor(Date.now() / 1000) + 43_200;
  const leases = Array.from({ length: 5000 }, (_, i) => ({
    exp: exp0 + i,
    mac: makeMac(i % 3 === 0),
    ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    host: i % 4 === 0 ? '*' : `host-${i}`,
    cid: i % 3 === 0 ? `01:${'00'.repeat(6)}` : '*',
  }));
  const text = () => leases.map((l) => `${l.exp} ${l.mac} ${l.ip} ${l.host} ${l.cid}\n`).join('');
  writeFileSync(leaseFile, text());
  const child = spawn(process.execPath, [join(root, 'bench/c1-lease-child.mjs'), leaseFile, ...(mode === 'read-only' ? ['read-only'] : [])], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = [];
  let waiting = null;
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      lines.push(JSON.parse(buf.slice(0, nl)));
      buf = buf.slice(nl + 1);
      waiting?.();
    }
  });
  const next = () => new Promise((r) => (lines.length ? r(lines.shift()) : (waiting = () => ((waiting = null), r(lines.shift())))));
  try {
    await next(); // ready
    for (let s = 0; s < secs; s++) {
      await new Promise((r) => setTimeout(r, 1000));
      for (let k = 0; k < 5; k++) leases[(s * 7 + k * 997) % leases.length].exp += 3600; // renewals
      leases.splice((s * 13) % leases.length, 1); // one leaves
      leases.push({ exp: exp0 + 9999, mac: makeMac(true), ip: `10.9.${s & 255}.1`, host: `new-${s}`, cid: '*' }); // one arrives
      writeFileSync(leaseFile, text()); // dnsmasq rewrites the whole file
    }
    await new Promise((r) => setTimeout(r, 1500));
    child.stdin.write('report\n');
    return await next();
  } finally {
    child.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run() {
  // C1_BENCH_PARTS=latency,rss,lease (default all): one part alone while tuning it.
  const parts = new Set((process.env.C1_BENCH_PARTS ?? 'latency,rss,lease').split(','));
  const rows = [];
  if (parts.has('latency')) {
    const h = await hostapdLatency();
    const l = await leaseRewriteLatency();
    const where = h.separate ? 'broker: Mosquitto, own process' : 'broker: embedded, no Mosquitto installed';
    rows.push(
      {
        bench: 'c1',
        metric: `hostapd event → punch accepted p99 (${where}; median of ${h.runs.length} runs: ${h.runs.map((x) => x.toFixed(1)).join(', ')})`,
        value: h.p99,
        unit: 'ms',
        baseline: h.base,
        ratio: h.p99 / h.base,
        target: '≤ 5 ms',
        ok: h.p99 <= 5,
      },
      { bench: 'c1', metric: 'hostapd event → punch accepted p50', value: h.p50, unit: 'ms', baseline: h.base50, ratio: h.p50 / h.base50 },
      // The split (same events): the presence path's own cost, then the durable accept; baselines: a bare commit and an fdatasync on the same disk.
      { bench: 'c1', metric: 'of which hostapd event → agent.punch() called (presence path) p99', value: h.pre99, unit: 'ms', baseline: h.p99, ratio: h.pre99 / h.p99 },
      { bench: 'c1', metric: 'of which hostapd event → agent.punch() called p50', value: h.pre50, unit: 'ms', baseline: h.p50, ratio: h.pre50 / h.p50 },
      { bench: 'c1', metric: 'of which agent.punch() called → accepted p99', value: h.accept99, unit: 'ms', baseline: h.commit99, ratio: h.accept99 / h.commit99 },
      { bench: 'c1', metric: 'of which agent.punch() called → accepted p50', value: h.accept50, unit: 'ms', baseline: h.commit50, ratio: h.accept50 / h.commit50 },
      { bench: 'c1', metric: 'bare SQLite commit (WAL, synchronous=FULL, one row), same disk p99', value: h.commit99, unit: 'ms' },
      { bench: 'c1', metric: 'bare SQLite commit p50', value: h.commit50, unit: 'ms' },
      { bench: 'c1', metric: 'fdatasync of a 64-byte write, same disk p99', value: h.sync99, unit: 'ms' },
      { bench: 'c1', metric: 'fdatasync of a 64-byte write p50', value: h.sync50, unit: 'ms' },
      // The same joins with the demo's broker and cloud emulator inside the agent's process (as measured before): their CPU competes with the agent's.
      { bench: 'c1', metric: 'hostapd event → punch accepted p99, broker + cloud emulator in the agent process (one run)', value: h.inProcess.p99, unit: 'ms', baseline: h.inProcess.base, ratio: h.inProcess.p99 / h.inProcess.base },
      { bench: 'c1', metric: 'hostapd event → punch accepted p50, broker + cloud emulator in the agent process', value: h.inProcess.p50, unit: 'ms', baseline: h.inProcess.base50, ratio: h.inProcess.p50 / h.inProcess.base50 },
      { bench: 'c1', metric: 'lease rewrite → punch accepted p99', value: l.p99, unit: 'ms', baseline: h.base, ratio: l.p99 / h.base, target: '≤ 50 ms', ok: l.p99 <= 50 },
      { bench: 'c1', metric: 'lease rewrite → punch accepted p50', value: l.p50, unit: 'ms' },
    );
  }
  if (parts.has('rss')) {
    const m = await idleRss();
    rows.push({ bench: 'c1', metric: `idle RSS, tallybox run (c1${m.attached ? ', both radios attached' : ', NOT attached'})`, value: m.agent, unit: 'MB', baseline: m.base, ratio: m.agent / m.base, target: '≤ 70 MB', ok: m.agent <= 70 });
    // Where it is (a probed second run; baseline: the idle `node -e`, probed the same way).
    const b = m.breakdown ?? {};
    const bb = m.baseBreakdown ?? {};
    for (const [k, label] of [
      ['heapUsed', 'V8 heap used'],
      ['external', 'external (Buffers, ArrayBuffers)'],
      ['code', 'code + bytecode (in the heap)'],
      ['privateDirty', 'private dirty pages (heap, malloc, stacks)'],
      ['sharedClean', 'shared clean pages (node binary, libraries)'],
    ]) {
      rows.push({ bench: 'c1', metric: `idle RSS breakdown: ${label}`, value: b[k] ?? NaN, unit: 'MB', baseline: bb[k] ?? NaN, ratio: (b[k] ?? NaN) / (bb[k] ?? NaN) });
    }
  }
  if (parts.has('lease')) {
    const ll = await leaseLoad('watcher');
    const lb = await leaseLoad('read-only');
    const pct = (r) => (100 * r.cpuMs) / r.wallMs;
    rows.push(
      {
        bench: 'c1',
        metric: `5,000-lease file rewritten 1/s: CPU (${ll.reads} reads, ${ll.unchanged} unchanged wake-ups skipped)`,
        value: pct(ll),
        unit: '% of a core',
        baseline: pct(lb),
        ratio: pct(ll) / pct(lb),
        target: '≤ 5 %',
        ok: pct(ll) <= 5,
      },
      {
        bench: 'c1',
        metric: `5,000-lease file rewritten 1/s: RSS at the end (baseline: at a quarter of the run; max ${ll.rssMax.toFixed(1)})`,
        value: ll.rssLast,
        unit: 'MB',
        baseline: ll.rssFirst,
        ratio: ll.rssLast / ll.rssFirst,
        target: 'flat (≤ 1.1×)',
        ok: ll.rssLast <= ll.rssFirst * 1.1,
      },
    );
  }
  rows.push({ bench: 'c1', metric: 'load average (1 min) at the end', value: (await import('node:os')).loadavg()[0], unit: '' });
  return rows;
}

// As the child of hostapdRunAsDeployed: one run, its samples as JSON on stdout.
if (process.env.C1_HOSTAPD_CHILD !== undefined && process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await hostapdRun(N, process.env.C1_HOSTAPD_CHILD || undefined);
  process.stdout.write(`\n${JSON.stringify(r)}\n`);
  process.exit(0);
}
