// Fleet benchmarks (issue 13 §4, §5), against a Mosquitto of their own:
//   fleet:  1,000 full agents × 1 punch/s for BENCH_FLEET_SEC (default 60) s, two consumers on a
//           shared subscription: delivered/s, loss, p99 accept → consumer, RSS and CPU per device.
//           Baseline in the same run: 1,000 bare mqtt clients at the same rate through the same
//           consumers and ordering stage (what a synthetic load tool would do).
//           Then the larger fleets (BENCH_FLEET_SIZES, default 2000,5000; BENCH_FLEET_SEARCH_SEC, default
//           30 s of production each, drain bounded by BENCH_FLEET_SEARCH_DRAIN_SEC, default 90 s: a fleet the
//           machine cannot carry backs up, and waiting out a five-minute backlog says nothing more): the
//           largest with p99 < 1 s and nothing lost. The whole file runs in about 10 minutes on a quiet machine.
//           Per-device costs at a small size: bench/fleet-cost.bench.mjs (also run by `npm run bench -- fleet`).
//   leave:  what a consumer leaving mid-stream costs on Mosquitto: two consumers share a stream,
//           one is cut off (socket destroyed, no DISCONNECT: as a SIGKILL) while it holds
//           un-PUBACKed messages; clean session vs persistent session (back after 2 s, or never).
import mqtt from 'mqtt';
import { Mosquitto } from '../dist/simulators/cloud/mosquitto.js';
import { PunchConsumer } from '../dist/simulators/cloud/consumer.js';
import { runFleet } from '../dist/simulators/fleet/run.js';
import { EgressGate } from '../dist/src/link/egress.js';
import { uuidv7 } from '../dist/src/util/uuidv7.js';
import { sleep } from '../dist/simulators/lib/ports.js';
import os from 'node:os';

const SEC = Number(process.env.BENCH_FLEET_SEC ?? 60);
const SIZES = (process.env.BENCH_FLEET_SIZES ?? '2000,5000').split(',').filter(Boolean).map(Number);
const BASE = Number(process.env.BENCH_FLEET_N ?? 1000);
const SEARCH_SEC = Number(process.env.BENCH_FLEET_SEARCH_SEC ?? 30);
const SEARCH_DRAIN_SEC = Number(process.env.BENCH_FLEET_SEARCH_DRAIN_SEC ?? 90);

const load = () => os.loadavg()[0];

async function fleet(devices, mode, durationSec = SEC, drainTimeoutSec = 300) {
  const l0 = load();
  const t0 = performance.now();
  const r = await runFleet({ devices, rate: 1, durationSec, consumers: 2, broker: 'mosquitto', mode, drainTimeoutSec });
  process.stderr.write(`fleet ${mode} ${devices}: ${((performance.now() - t0) / 1000).toFixed(0)} s in all\n`);
  process.stderr.write(`fleet ${mode} ${devices}: ${JSON.stringify({ ...r, delivery: { ...r.delivery, worst: r.delivery.worst.slice(0, 3), perDevice: undefined } })}\n`);
  return { ...r, load: [l0, load()] };
}

/** One consumer-leave scenario: N punches at RATE/s shared by consumers A and B; A cut off at 1 s. */
async function leave(url, scenario) {
  const N = 3000;
  const RATE = 1000;
  const stage = new Map(); // seq → copies
  const forwardedBy = { A: 0, B: 0 };
  const holdMs = 300; // A's ordering-stage round trip, slow: it holds un-PUBACKed messages when cut off
  const cutOff = new Set();
  const mk = (name, slot, session, delay) => {
    const c = new PunchConsumer({
      url,
      group: `leave-${scenario.name}`,
      slot,
      session,
      forward: async (batch) => {
        if (delay) await sleep(delay);
        // A killed process forwards nothing more: what it held dies with it.
        if (cutOff.has(c)) throw new Error('consumer gone');
        for (const p of batch) stage.set(p.seq, (stage.get(p.seq) ?? 0) + 1);
        forwardedBy[name] += batch.length;
      },
    });
    return c;
  };
  const session = scenario.session;
  let a = mk('A', 1, session, holdMs);
  const b = mk('B', 2, session, 0);
  await a.start();
  await b.start();
  const pub = await mqtt.connectAsync(url, { clientId: `leave-pub-${scenario.name}`, protocolVersion: 5, clean: true });
  const gate = new EgressGate({ deviceId: 'leave-probe', operatorOrgId: 'org-leave' });
  let acked = 0;
  const t0 = performance.now();
  let cut = false;
  let heldAtCut = 0;
  for (let s = 1; s <= N; s++) {
    const due = t0 + (s / RATE) * 1000;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    if (!cut && performance.now() - t0 >= 1000) {
      cut = true;
      heldAtCut = a.counters.received - a.counters.forwarded;
      cutOff.add(a);
      a.abort();
      if (scenario.returnAfterMs !== undefined) {
        setTimeout(() => {
          a = mk('A', 1, session, 0);
          void a.start();
        }, scenario.returnAfterMs);
      }
    }
    const payload = gate.encodePunch({ eventId: uuidv7(), orgId: 'org-leave', subjectId: 'probe', method: 3, occurredAtMs: Date.now(), clockSynced: true, seq: s, matchScore: 0, liveness: 0 }, { bdSeq: 1, historical: false });
    pub.publish('tallybox/v1/org-leave/leave-probe/punch', Buffer.from(payload), { qos: 1 }, () => acked++);
  }
  while (acked < N) await sleep(20);
  // Time for redeliveries (the returning consumer) to arrive.
  const settle = performance.now() + 5000 + (scenario.returnAfterMs ?? 0);
  while (performance.now() < settle && stage.size < N) await sleep(50);
  await sleep(500);
  const lost = N - stage.size;
  const duplicates = [...stage.values()].reduce((n, c) => n + c - 1, 0);
  await pub.endAsync();
  await b.stop();
  await a.stop().catch(() => undefined);
  return { name: scenario.name, published: N, heldAtCut, lost, duplicates, forwardedByB: forwardedBy.B };
}

export async function run() {
  const rows = [];
  const mosq = await Mosquitto.start();
  try {
    const scenarios = [
      { name: 'clean session, consumer gone', session: 'clean' },
      { name: 'persistent session, back after 2 s', session: 'persistent', returnAfterMs: 2000 },
      { name: 'persistent session, never back', session: 'persistent' },
    ];
    for (const sc of scenarios) {
      const r = await leave(mosq.url, sc);
      process.stderr.write(`fleet leave: ${JSON.stringify(r)}\n`);
      rows.push(
        { bench: 'fleet', metric: `consumer leaves mid-stream (${r.name}): messages it held un-PUBACKed`, value: r.heldAtCut, unit: 'msg' },
        { bench: 'fleet', metric: `  lost of ${r.published}`, value: r.lost, unit: 'msg' },
        { bench: 'fleet', metric: '  duplicates (same event id twice)', value: r.duplicates, unit: 'msg' },
      );
    }
  } finally {
    await mosq.stop();
  }

  const agents = await fleet(BASE, 'agent');
  const bare = await fleet(BASE, 'bare');
  const okLoss = (r) => r.delivery.lost === 0 && r.delivery.conflicts === 0 && !r.timedOut;
  const cloudCpu = (r) => r.cpu.consumersMsPerPunch + r.cpu.coordinatorMsPerPunch + r.cpu.brokerMsPerPunch;
  rows.push(
    {
      bench: 'fleet',
      metric: `${BASE} agents × 1 punch/s, ${SEC} s: delivered while producing`,
      value: agents.throughputPerSec,
      unit: 'punch/s',
      baseline: bare.throughputPerSec,
      ratio: agents.throughputPerSec / bare.throughputPerSec,
      target: `≥ ${BASE}/s`,
      ok: agents.throughputPerSec >= BASE * 0.98,
    },
    { bench: 'fleet', metric: '  lost / seq reused (agents)', value: `${agents.delivery.lost} / ${agents.delivery.conflicts}`, unit: '', baseline: `${bare.delivery.lost} / ${bare.delivery.conflicts}`, target: '0 / 0', ok: okLoss(agents) },
    { bench: 'fleet', metric: '  p99 accept → consumer', value: agents.latencyMs.p99, unit: 'ms', baseline: bare.latencyMs.p99, ratio: agents.latencyMs.p99 / bare.latencyMs.p99, target: '< 1,000 ms', ok: agents.latencyMs.p99 < 1000 },
    { bench: 'fleet', metric: '  p50 accept → consumer', value: agents.latencyMs.p50, unit: 'ms', baseline: bare.latencyMs.p50, ratio: agents.latencyMs.p50 / bare.latencyMs.p50 },
    { bench: 'fleet', metric: '  RSS per device', value: agents.memory.rssPerDeviceMb, unit: 'MB', baseline: bare.memory.rssPerDeviceMb, ratio: agents.memory.rssPerDeviceMb / bare.memory.rssPerDeviceMb },
    { bench: 'fleet', metric: '  CPU per punch, device processes', value: agents.cpuMsPerPunch, unit: 'ms', baseline: bare.cpuMsPerPunch, ratio: agents.cpuMsPerPunch / bare.cpuMsPerPunch },
    { bench: 'fleet', metric: '  CPU per punch, consumers + ordering stage + Mosquitto', value: cloudCpu(agents), unit: 'ms', baseline: cloudCpu(bare), ratio: cloudCpu(agents) / cloudCpu(bare) },
    { bench: 'fleet', metric: '  CPU per idle connected device per second', value: agents.cpu.idleMsPerDeviceSec, unit: 'ms', baseline: bare.cpu.idleMsPerDeviceSec, ratio: agents.cpu.idleMsPerDeviceSec / bare.cpu.idleMsPerDeviceSec },
    { bench: 'fleet', metric: '  start-up (all connected)', value: agents.startSec, unit: 's', baseline: bare.startSec },
    { bench: 'fleet', metric: '  load average (1 min) before / after', value: `${agents.load[0].toFixed(1)} / ${agents.load[1].toFixed(1)}`, unit: '' },
  );
  let largest = agents.latencyMs.p99 < 1000 && okLoss(agents) ? BASE : 0;
  for (const n of SIZES) {
    const r = await fleet(n, 'agent', SEARCH_SEC, SEARCH_DRAIN_SEC);
    const ok = r.latencyMs.p99 < 1000 && okLoss(r);
    if (ok) largest = Math.max(largest, n);
    rows.push(
      { bench: 'fleet', metric: `${n} agents × 1 punch/s, ${SEARCH_SEC} s, ${r.procs} processes: delivered while producing`, value: r.throughputPerSec, unit: 'punch/s', target: `≥ ${n}/s`, ok: r.throughputPerSec >= n * 0.98 },
      {
        bench: 'fleet',
        metric: `  p99 accept → consumer (${r.timedOut ? `backlog not drained in ${SEARCH_DRAIN_SEC} s` : `lost ${r.delivery.lost}`}, load ${r.load[0].toFixed(1)} → ${r.load[1].toFixed(1)})`,
        value: r.latencyMs.p99,
        unit: 'ms',
        target: '< 1,000 ms',
        ok,
      },
      { bench: 'fleet', metric: '  RSS per device / CPU per punch', value: `${r.memory.rssPerDeviceMb.toFixed(2)} MB / ${r.cpuMsPerPunch.toFixed(3)} ms`, unit: '' },
    );
  }
  rows.push({ bench: 'fleet', metric: 'largest fleet with p99 < 1 s and nothing lost', value: largest, unit: 'devices' });
  return rows;
}
