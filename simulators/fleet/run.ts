/**
 * The fleet coordinator: a broker (its own Mosquitto, the embedded aedes, or
 * a URL), K punch consumers sharing the stream (processes), P worker
 * processes running the devices, the ordering/de-duplication stage
 * (PunchLedger) fed by the consumers, optional chaos, and the report.
 *
 * Latency is accept → consumer: the worker stamps CLOCK_MONOTONIC
 * (process.hrtime) when it calls agent.punch(), the consumer stamps it when
 * it decodes the punch; both are the same host clock, so the difference is a
 * monotonic duration across processes. Joined on (device, seq).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedBroker, type EmbeddedBroker } from '../cloud/broker.js';
import { PunchLedger, type DeliveryReport } from '../cloud/consumer-ledger.js';
import type { ConsumerDown, ConsumerSpec, ConsumerUp } from '../cloud/consumer-process.js';
import { Mosquitto } from '../cloud/mosquitto.js';
import { planSourceAddresses } from './addresses.js';
import { processCpuMs, procCpuMs } from './cpu.js';
import type { WorkerDown, WorkerSpec, WorkerUp } from './worker.js';

export interface FleetOptions {
  devices: number;
  /** 'mosquitto' (default: start one on a free port), 'embedded' (aedes), or a broker URL. */
  broker?: string;
  /** Punches per second per device. */
  rate: number;
  durationSec: number;
  /** Shared-subscription consumers (forced to 1 on aedes, which has no shared subscriptions). */
  consumers?: number;
  /** Worker processes (default: defaultProcs()). */
  procs?: number;
  /** Source addresses for the devices' connections (default: planSourceAddresses decides; addresses.ts). */
  sourceAddresses?: string[];
  /** The ephemeral port range the source-address plan assumes (default: this host's; tests make it small). */
  portRange?: [number, number];
  /** Quiet seconds after every device connected, before production: the start-up tail settles, then idle CPU is measured (default 2 + 3). */
  settleSec?: number;
  idleSec?: number;
  chaos?: boolean;
  /** Seconds between chaos events: uniform in [min, max]. Default [3, 8]. */
  chaosEverySec?: [number, number];
  /** 'bare' runs bare mqtt clients instead of agents (the benchmark's baseline). */
  mode?: 'agent' | 'bare';
  consumerSession?: 'persistent' | 'clean';
  /** Where the devices' data dirs go (default a temp dir under /dev/shm, removed afterwards); a real disk: --data-dir. */
  root?: string;
  /** Give up waiting for the last punches after this long (default 120 s). */
  drainTimeoutSec?: number;
  onProgress?: (p: FleetProgress) => void;
  /** Fault injection for the report's own check (tests): see PunchLedger. */
  tamper?: (items: [string, number, string, number][]) => [string, number, string, number][];
}

export interface FleetProgress {
  phase: 'starting' | 'running' | 'draining';
  elapsedSec: number;
  devices: number;
  connected: number;
  accepted: number;
  queued: number;
  received: number;
  duplicates: number;
  /** p99 accept → consumer over the last second, ms. */
  lagP99Ms: number | undefined;
}

export interface ChaosEvent {
  atSec: number;
  target: 'worker' | 'consumer';
  index: number;
  /** From the kill until the process said it was ready again. */
  downMs?: number;
}

export interface FleetReport {
  mode: 'agent' | 'bare';
  broker: string;
  sharedSubscriptions: boolean;
  devices: number;
  procs: number;
  consumers: number;
  ratePerDevice: number;
  durationSec: number;
  startSec: number;
  accepted: number;
  refused: number;
  /** Distinct punches the consumers delivered while the producers ran, per second. */
  throughputPerSec: number;
  acceptedPerSec: number;
  latencyMs: { samples: number; p50: number; p90: number; p99: number; max: number };
  delivery: Omit<DeliveryReport, 'devices'> & {
    devicesComplete: number;
    /** Devices with something to say (missing, duplicates, seq reused), worst first, at most 20. */
    worst: DeliveryReport['devices'];
    /** Every device: last accepted seq, received, missing seqs, duplicates, seq reused, out-of-order arrivals. */
    perDevice: DeliveryReport['devices'];
  };
  /** heapPerDeviceMb: the JavaScript heap's share of it (the rest: SQLite, sockets, buffers, code). */
  memory: { rssPerDeviceMb: number; heapPerDeviceMb: number; rssTotalMb: number; rssBasePerProcMb: number };
  /** Worker CPU (all threads) per punch accepted while producing, ms: what the host's load changes least. */
  cpuMsPerPunch: number;
  /**
   * CPU per punch accepted while producing, ms, by part (NaN with chaos, or
   * where it cannot be read): the device processes, the consumer processes, the
   * coordinator (ordering stage and report), the broker (own Mosquitto only);
   * and what a connected, idle device costs per second (measured before production).
   */
  cpu: { workersMsPerPunch: number; consumersMsPerPunch: number; coordinatorMsPerPunch: number; brokerMsPerPunch: number; idleMsPerDeviceSec: number };
  /** Source addresses the devices' connections were spread over ([]: one, the kernel's choice) and why. */
  sourceAddresses: { addresses: string[]; reason: string };
  chaos: ChaosEvent[];
  drainedInSec: number;
  timedOut: boolean;
  notes: string[];
}

/** The compiled child scripts: beside this file when compiled, under dist/ when run from source (vitest). */
/**
 * Worker processes for a fleet: at least one per core (each worker's event
 * loop is one core's worth of JavaScript at most); more for ~500 punches/s per
 * worker (a 500-device worker at 1 punch/s keeps its event loop about half
 * busy; BENCHMARKS.md) but not past two per core (more only split the same
 * cores, at ~75 MB each before any device); and always few enough devices per
 * worker for its file descriptor limit (each agent holds ~11: two outbox
 * connections with WAL and shared memory, the incident store's, a lock, a
 * sequence mark, a socket).
 */
export function defaultProcs(devices: number, ratePerDevice: number, cores = availableParallelism(), fdLimit = openFileLimit()): number {
  const byFds = Math.ceil(devices / Math.max(1, Math.floor((fdLimit - 256) / FDS_PER_AGENT)));
  const byRate = Math.min(2 * cores, Math.ceil((devices * ratePerDevice) / PUNCHES_PER_SEC_PER_WORKER));
  return Math.max(1, Math.min(devices, Math.max(cores, byRate, byFds)));
}
const FDS_PER_AGENT = 12;
const PUNCHES_PER_SEC_PER_WORKER = 500;

/** This process's soft limit on open files (a forked worker inherits it); 1024 where it cannot be read. */
function openFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m) return m[1] === 'unlimited' ? 1 << 20 : Number(m[1]);
  } catch {
    // Not Linux: the common default below.
  }
  return 1024;
}

function script(rel: string): string {
  const here = dirname(fileURLToPath(import.meta.url));
  if (import.meta.url.endsWith('.ts')) return resolve(here, '../../dist/simulators', rel);
  return resolve(here, '..', rel);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** A bound on a wait that does not keep the process alive once the wait is over. */
const bound = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

interface Worker {
  index: number;
  spec: WorkerSpec;
  proc: ChildProcess;
  ready: boolean;
  status?: Extract<WorkerUp, { t: 'status' }>;
  rssBaseMb?: number;
  heapBaseMb?: number;
  rssReadyMb?: number;
  startMs?: number;
  drained?: Record<string, number>;
}

interface Consumer {
  slot: number;
  proc: ChildProcess;
  ready: boolean;
  cpuMs?: number;
}

export async function runFleet(opts: FleetOptions): Promise<FleetReport> {
  const mode = opts.mode ?? 'agent';
  const notes: string[] = [];
  let mosquitto: Mosquitto | undefined;
  let embedded: EmbeddedBroker | undefined;
  const brokerArg = opts.broker ?? 'mosquitto';
  let url: string;
  if (brokerArg === 'mosquitto') url = (mosquitto = await Mosquitto.start()).url;
  else if (brokerArg === 'embedded') url = (embedded = await startEmbeddedBroker()).url;
  else url = brokerArg;
  const shared = brokerArg !== 'embedded';
  let consumerCount = Math.max(1, opts.consumers ?? 2);
  if (!shared && consumerCount > 1) {
    notes.push(`the embedded broker (aedes) has no shared subscriptions: one consumer instead of ${consumerCount}`);
    consumerCount = 1;
  }
  const procs = Math.max(1, Math.min(opts.devices, opts.procs ?? defaultProcs(opts.devices, opts.rate)));
  const sources = planSourceAddresses({
    connections: opts.devices + consumerCount,
    brokerHost: new URL(url).hostname,
    ...(opts.sourceAddresses ? { explicit: opts.sourceAddresses } : {}),
    ...(opts.portRange ? { range: opts.portRange } : {}),
  });
  if (sources.addresses.length === 0 && !sources.reason.startsWith('one source')) notes.push(sources.reason);
  const ownRoot = !opts.root;
  // Default: memory-backed (/dev/shm) when there is one. Each real device fsyncs its own flash; a thousand
  // outboxes on one host share one disk, whose fsync queue would be what the run measured (BENCHMARKS.md).
  const root = opts.root ?? mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'tbx-fleet-'));
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const orgId = 'org-fleet';
  const ids = Array.from({ length: opts.devices }, (_, i) => `fleet-${String(i).padStart(5, '0')}`);

  // The ordering stage, and the join of accept times with receive times on (device, seq).
  const ledger = new PunchLedger();
  const acceptAt = new Map<string, number>();
  const receivedAt = new Map<string, number>();
  const recent: number[] = [];
  let accepted = 0;
  let windowStart = Number.POSITIVE_INFINITY;
  let windowEnd = Number.POSITIVE_INFINITY;
  let receivedInWindow = 0;
  const hrNow = () => Number(process.hrtime.bigint() / 1000n) / 1000;
  const latencyOf = (key: string) => {
    const a = acceptAt.get(key);
    const r = receivedAt.get(key);
    return a !== undefined && r !== undefined ? r - a : undefined;
  };

  const workers: Worker[] = [];
  const consumers: Consumer[] = [];
  let stopping = false;
  let producing = false;

  const spawnConsumer = (slot: number): Consumer => {
    const spec: ConsumerSpec = { url, group: 'tallybox-cloud', slot, shared, session: opts.consumerSession ?? 'persistent' };
    const proc = fork(script('cloud/consumer-process.js'), [JSON.stringify(spec)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const c: Consumer = { slot, proc, ready: false };
    proc.on('message', (m: ConsumerUp) => {
      if (m.t === 'ready') c.ready = true;
      else if (m.t === 'stats') c.cpuMs = m.cpuMs;
      else if (m.t === 'punches') {
        const items = opts.tamper ? opts.tamper(m.items) : m.items;
        for (const [deviceId, seq, eventId, hr] of items) {
          if (ledger.add({ deviceId, seq, eventId }) !== 'new') continue;
          const key = `${deviceId}#${seq}`;
          receivedAt.set(key, hr);
          if (hr >= windowStart && hr <= windowEnd) receivedInWindow++;
          const l = latencyOf(key);
          if (l !== undefined) recent.push(l);
        }
        // Taken: the consumer may PUBACK these now.
        if (proc.connected) proc.send({ t: 'taken', id: m.id } satisfies ConsumerDown);
      }
    });
    return c;
  };

  const spawnWorker = (index: number, spec: WorkerSpec): Worker => {
    // TALLYBOX_FLEET_WORKER_NODE_ARGS: node flags for the workers only (profiling: --cpu-prof --cpu-prof-dir=DIR).
    const execArgv = (process.env.TALLYBOX_FLEET_WORKER_NODE_ARGS ?? '').split(' ').filter(Boolean);
    // libuv threads for the agents' SQLite work: on memory (the default) that work is CPU, and with a worker
    // per core more than 4 only queue for the same cores; on a disk (--data-dir) threads wait in fsync.
    const threads = process.env.UV_THREADPOOL_SIZE ?? (ownRoot && root.startsWith('/dev/shm/') ? '4' : '8');
    const proc = fork(script('fleet/worker.js'), [JSON.stringify(spec)], { execArgv, stdio: ['ignore', 'ignore', 'inherit', 'ipc'], env: { ...process.env, UV_THREADPOOL_SIZE: threads } });
    const w: Worker = { index, spec, proc, ready: false };
    proc.on('message', (m: WorkerUp) => {
      if (m.t === 'started') {
        w.rssBaseMb = m.rssBaseMb;
        w.heapBaseMb = m.heapBaseMb;
      } else if (m.t === 'ready') {
        w.ready = true;
        w.rssReadyMb = m.rssMb;
        w.startMs = m.startMs;
        if (producing && proc.connected) proc.send({ t: 'produce' } satisfies WorkerDown);
      } else if (m.t === 'status') w.status = m;
      else if (m.t === 'accepts') {
        for (const [deviceId, seq, t] of m.items) {
          accepted++;
          const key = `${deviceId}#${seq}`;
          acceptAt.set(key, t);
          const l = latencyOf(key);
          if (l !== undefined) recent.push(l);
        }
      } else if (m.t === 'drained') w.drained = m.lastSeq;
    });
    return w;
  };

  const exited = (p: ChildProcess) => (p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => p.once('exit', () => r())));
  const waitFor = async (cond: () => boolean, timeoutMs: number, what: string) => {
    const end = performance.now() + timeoutMs;
    while (!cond()) {
      if (performance.now() > end) throw new Error(`fleet: timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
      for (const w of workers) if (!stopping && w.proc.exitCode !== null && w.proc.exitCode !== 0) throw new Error(`fleet: worker ${w.index} exited with ${w.proc.exitCode}`);
      await sleep(50);
    }
  };

  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  const chaos: ChaosEvent[] = [];
  let progressTimer: NodeJS.Timeout | undefined;
  let phase: FleetProgress['phase'] = 'starting';
  const progress = (): FleetProgress => {
    const sorted = recent.splice(0).sort((a, b) => a - b);
    return {
      phase,
      elapsedSec: elapsed(),
      devices: opts.devices,
      connected: workers.reduce((n, w) => n + (w.ready ? (w.status?.connected ?? w.spec.devices.length) : 0), 0),
      accepted,
      queued: workers.reduce((n, w) => n + (w.status?.depth ?? 0), 0),
      received: ledger.stats().received,
      duplicates: ledger.stats().duplicates,
      lagP99Ms: sorted.length ? percentile(sorted, 99) : undefined,
    };
  };
  if (opts.onProgress) progressTimer = setInterval(() => opts.onProgress!(progress()), 1000);
  else progressTimer = setInterval(() => void recent.splice(0), 1000);

  let timedOut = false;
  let drainedInSec = 0;
  let startSec = 0;
  let productionSec = 0;
  let cpuPerPunch = Number.NaN;
  const cpu: FleetReport['cpu'] = { workersMsPerPunch: Number.NaN, consumersMsPerPunch: Number.NaN, coordinatorMsPerPunch: Number.NaN, brokerMsPerPunch: Number.NaN, idleMsPerDeviceSec: Number.NaN };
  try {
    for (let k = 0; k < consumerCount; k++) consumers.push(spawnConsumer(k));
    await waitFor(() => consumers.every((c) => c.ready), 60_000, 'the consumers to subscribe');
    const per = Math.ceil(opts.devices / procs);
    for (let p = 0; p < procs; p++) {
      const devices = ids.slice(p * per, (p + 1) * per);
      if (devices.length) workers.push(spawnWorker(p, { url, orgId, devices, root, rate: opts.rate, mode, sourceAddresses: sources.addresses, firstIndex: p * per }));
    }
    await waitFor(() => workers.every((w) => w.ready), 60_000 + opts.devices * 200, 'every device to connect');
    startSec = elapsed();

    // The workers report their CPU every 250 ms, the consumers every second.
    const workerCpu = () => workers.reduce((n, w) => n + (w.status?.cpuMs ?? 0), 0);
    const consumerCpu = () => consumers.reduce((n, c) => n + (c.cpuMs ?? Number.NaN), 0);
    const brokerCpu = () => procCpuMs(mosquitto?.pid) ?? Number.NaN;
    // Connected and idle: the start-up tail settles (births, first incident checks), then what idle devices cost.
    await sleep((opts.settleSec ?? 2) * 1000);
    const idleSec = opts.idleSec ?? 3;
    if (idleSec > 0) {
      const i0 = workerCpu();
      const t = performance.now();
      await sleep(idleSec * 1000);
      cpu.idleMsPerDeviceSec = (workerCpu() - i0) / ((performance.now() - t) / 1000) / opts.devices;
    }

    // Production.
    phase = 'running';
    producing = true;
    windowStart = hrNow();
    const accepted0 = accepted;
    const cpu0 = { workers: workerCpu(), consumers: consumerCpu(), coordinator: processCpuMs(), broker: brokerCpu() };
    for (const w of workers) w.proc.send({ t: 'produce' } satisfies WorkerDown);
    const endAt = performance.now() + opts.durationSec * 1000;
    const chaosJobs: Promise<void>[] = [];
    if (opts.chaos) {
      const [lo, hi] = opts.chaosEverySec ?? [3, 8];
      const nextChaos = () => performance.now() + (lo + Math.random() * (hi - lo)) * 1000;
      let at = nextChaos();
      while (performance.now() < endAt) {
        await sleep(100);
        if (performance.now() < at) continue;
        at = nextChaos();
        const ev: ChaosEvent = { atSec: elapsed(), target: chaos.length % 2 === 0 ? 'worker' : 'consumer', index: 0 }; // alternating: a short run sees both kinds
        if (ev.target === 'worker') {
          const w = workers[(ev.index = Math.floor(Math.random() * workers.length))]!;
          if (!w.ready) continue; // still restarting from the last kill: no kill, none recorded
          chaos.push(ev);
          chaosJobs.push(
            (async () => {
              const k0 = performance.now();
              w.ready = false;
              w.proc.kill('SIGKILL');
              await exited(w.proc);
              await sleep(300 + Math.random() * 1000);
              const again = spawnWorker(w.index, w.spec);
              workers[w.index] = again;
              await waitFor(() => again.ready, 60_000 + w.spec.devices.length * 200, `worker ${w.index} to restart`);
              ev.downMs = performance.now() - k0;
            })(),
          );
        } else {
          const c = consumers[(ev.index = Math.floor(Math.random() * consumers.length))]!;
          if (!c.ready) continue;
          chaos.push(ev);
          chaosJobs.push(
            (async () => {
              const k0 = performance.now();
              c.ready = false;
              c.proc.kill('SIGKILL');
              await exited(c.proc);
              await sleep(200 + Math.random() * 800);
              const again = spawnConsumer(c.slot);
              consumers[c.slot] = again;
              await waitFor(() => again.ready, 60_000, `consumer ${c.slot} to restart`);
              ev.downMs = performance.now() - k0;
            })(),
          );
        }
      }
    } else await sleep(Math.max(0, endAt - performance.now()));
    await Promise.all(chaosJobs);
    productionSec = (performance.now() - (endAt - opts.durationSec * 1000)) / 1000;
    windowEnd = hrNow();
    producing = false;
    if (!opts.chaos) {
      // (Restarts reset a process's clock: no figures with chaos.)
      const n = Math.max(1, accepted - accepted0);
      cpuPerPunch = cpu.workersMsPerPunch = (workerCpu() - cpu0.workers) / n;
      cpu.consumersMsPerPunch = (consumerCpu() - cpu0.consumers) / n;
      cpu.coordinatorMsPerPunch = (processCpuMs() - cpu0.coordinator) / n;
      cpu.brokerMsPerPunch = (brokerCpu() - cpu0.broker) / n;
    }

    // Drain: every worker's outboxes empty, then every accepted seq at the ordering stage.
    phase = 'draining';
    const d0 = performance.now();
    for (const w of workers) w.proc.send({ t: 'drain' } satisfies WorkerDown);
    const drainMs = (opts.drainTimeoutSec ?? 120) * 1000;
    try {
      await waitFor(() => workers.every((w) => w.drained), drainMs, 'the outboxes to drain');
      const last = new Map(workers.flatMap((w) => Object.entries(w.drained!)));
      await waitFor(() => [...last].every(([id, s]) => (ledger.account(id)?.releasedThrough ?? 0) >= s), Math.max(5000, drainMs - (performance.now() - d0)), 'the consumers to receive every punch');
    } catch (err) {
      timedOut = true;
      notes.push(err instanceof Error ? err.message : String(err));
    }
    drainedInSec = (performance.now() - d0) / 1000;
  } finally {
    stopping = true;
    if (progressTimer) clearInterval(progressTimer);
    for (const w of workers) if (w.proc.connected) w.proc.send({ t: 'stop' } satisfies WorkerDown);
    await Promise.race([Promise.all(workers.map((w) => exited(w.proc))), bound(30_000)]);
    for (const w of workers) w.proc.kill('SIGKILL');
    for (const c of consumers) if (c.proc.connected) c.proc.send({ t: 'stop' } satisfies ConsumerDown);
    await Promise.race([Promise.all(consumers.map((c) => exited(c.proc))), bound(10_000)]);
    for (const c of consumers) c.proc.kill('SIGKILL');
    await mosquitto?.stop();
    await embedded?.close();
    if (ownRoot) rmSync(root, { recursive: true, force: true });
  }

  // Last seq per device from the workers alive at the end (a killed worker's successor reports its devices).
  const lastSeq = new Map<string, number>();
  for (const w of workers) for (const id of w.spec.devices) lastSeq.set(id, w.drained?.[id] ?? 0);
  const d = ledger.reconcile(lastSeq);
  const latencies: number[] = [];
  for (const [key, a] of acceptAt) {
    const r = receivedAt.get(key);
    if (r !== undefined) latencies.push(r - a);
  }
  latencies.sort((a, b) => a - b);
  const { devices: perDevice, ...totals } = d;
  const rssTotal = workers.reduce((n, w) => n + (w.status?.rssMb ?? w.rssReadyMb ?? 0), 0);
  const rssBase = workers.reduce((n, w) => n + (w.rssBaseMb ?? 0), 0);
  return {
    mode,
    broker: brokerArg === 'mosquitto' ? `mosquitto (own, ${url})` : brokerArg === 'embedded' ? `embedded aedes (${url})` : url,
    sharedSubscriptions: shared,
    devices: opts.devices,
    procs,
    consumers: consumerCount,
    ratePerDevice: opts.rate,
    durationSec: productionSec,
    startSec,
    accepted,
    refused: workers.reduce((n, w) => n + (w.status?.refused ?? 0), 0),
    throughputPerSec: receivedInWindow / productionSec,
    acceptedPerSec: accepted / productionSec,
    latencyMs: { samples: latencies.length, p50: percentile(latencies, 50), p90: percentile(latencies, 90), p99: percentile(latencies, 99), max: latencies.at(-1) ?? Number.NaN },
    delivery: {
      ...totals,
      devicesComplete: perDevice.filter((x) => x.complete).length,
      // The devices with something to say, worst first (capped: the report stays readable at 5,000 devices).
      worst: perDevice
        .filter((x) => !x.complete || x.duplicates > 0 || x.conflicts > 0)
        .sort((a, b) => b.missing.length - a.missing.length || b.conflicts - a.conflicts || b.duplicates - a.duplicates)
        .slice(0, 20),
      perDevice,
    },
    memory: {
      rssPerDeviceMb: (rssTotal - rssBase) / opts.devices,
      heapPerDeviceMb: workers.reduce((n, w) => n + (w.status?.heapMb ?? 0) - (w.heapBaseMb ?? 0), 0) / opts.devices,
      rssTotalMb: rssTotal,
      rssBasePerProcMb: rssBase / workers.length,
    },
    cpuMsPerPunch: cpuPerPunch,
    cpu,
    sourceAddresses: sources,
    chaos,
    drainedInSec,
    timedOut,
    notes,
  };
}
