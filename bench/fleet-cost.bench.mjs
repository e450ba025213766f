// What a fleet device costs, at a size a loaded machine runs without queueing (issue 13 §4):
// `npm run bench -- fleet-cost` (also part of `npm run bench -- fleet`).
//   BENCH_FLEET_COST_N devices (default 200) × 1 punch/s for BENCH_FLEET_COST_SEC s (default 20), one
//   worker process, against a Mosquitto of its own with two shared-subscription consumers: full agents,
//   then bare mqtt clients at the same rate (the baseline). Reported: CPU per punch by part (device
//   processes, consumers, ordering stage, broker), CPU per idle connected device per second (measured
//   before production), RSS per device. CPU time is what the host's load changes least: the latency
//   figures of bench/fleet.bench.mjs are queueing on a shared machine, these are not.
import os from 'node:os';
import { runFleet } from '../dist/simulators/fleet/run.js';

const N = Number(process.env.BENCH_FLEET_COST_N ?? 200);
const SEC = Number(process.env.BENCH_FLEET_COST_SEC ?? 20);

async function one(mode) {
  const l0 = os.loadavg()[0];
  const r = await runFleet({ devices: N, rate: 1, durationSec: SEC, consumers: 2, procs: 1, broker: 'mosquitto', mode, idleSec: 5 });
  process.stderr.write(`fleet-cost ${mode} ${N}: ${JSON.stringify({ cpu: r.cpu, memory: r.memory, latencyMs: r.latencyMs, lost: r.delivery.lost, load: [l0, os.loadavg()[0]] })}\n`);
  return { ...r, load: [l0, os.loadavg()[0]] };
}

export async function run() {
  const agents = await one('agent');
  const bare = await one('bare');
  const row = (metric, a, b, unit) => ({ bench: 'fleet-cost', metric, value: a, unit, baseline: b, ratio: a / b });
  const total = (r) => r.cpu.workersMsPerPunch + r.cpu.consumersMsPerPunch + r.cpu.coordinatorMsPerPunch + r.cpu.brokerMsPerPunch;
  return [
    row(`${N} agents × 1 punch/s, ${SEC} s (baseline: bare clients): CPU per punch, device processes`, agents.cpu.workersMsPerPunch, bare.cpu.workersMsPerPunch, 'ms'),
    row('  CPU per punch, consumers (2)', agents.cpu.consumersMsPerPunch, bare.cpu.consumersMsPerPunch, 'ms'),
    row('  CPU per punch, ordering stage + report', agents.cpu.coordinatorMsPerPunch, bare.cpu.coordinatorMsPerPunch, 'ms'),
    row('  CPU per punch, Mosquitto', agents.cpu.brokerMsPerPunch, bare.cpu.brokerMsPerPunch, 'ms'),
    row('  CPU per punch, all of it', total(agents), total(bare), 'ms'),
    row('  CPU per idle connected device per second', agents.cpu.idleMsPerDeviceSec, bare.cpu.idleMsPerDeviceSec, 'ms'),
    row('  RSS per device', agents.memory.rssPerDeviceMb, bare.memory.rssPerDeviceMb, 'MB'),
    { bench: 'fleet-cost', metric: '  lost (agents / bare)', value: `${agents.delivery.lost} / ${bare.delivery.lost}`, unit: '', ok: agents.delivery.lost === 0 && bare.delivery.lost === 0 && !agents.timedOut && !bare.timedOut },
    { bench: 'fleet-cost', metric: '  load average (1 min) before / after', value: `${agents.load[0].toFixed(1)} / ${bare.load[1].toFixed(1)}`, unit: '' },
  ];
}
