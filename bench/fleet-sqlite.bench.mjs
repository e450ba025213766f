// What a fleet agent's SQLite connections cost in memory (issue 13 §4 follow-up):
// `npm run bench -- fleet-sqlite`. BENCH_FLEET_SQLITE_N agents (default 200) in one process, as the
// fleet worker runs them; each variant measured twice, alternating, in a process of its own
// (bench/fleet-sqlite-child.mjs). Baseline: the agent as it is (three connections: outbox writer,
// outbox reader, incidents.db). Variants: a 64 KiB page cache on every connection; no incidents.db
// connection (a measurement-only patch: the incident monitor is part of the agent).
import { execFileSync } from 'node:child_process';
import os from 'node:os';

const N = Number(process.env.BENCH_FLEET_SQLITE_N ?? 200);
const child = new URL('./fleet-sqlite-child.mjs', import.meta.url).pathname;

function measure(variant) {
  const out = execFileSync(process.execPath, ['--expose-gc', child, variant, String(N)], { encoding: 'utf8', timeout: 300_000 });
  return JSON.parse(out.trim().split('\n').pop());
}

export async function run() {
  const l0 = os.loadavg()[0];
  const got = { full: [], 'small-cache': [], 'no-incidents': [] };
  for (let round = 0; round < 2; round++) for (const v of Object.keys(got)) got[v].push(measure(v).rssPerAgentMb);
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const base = mean(got.full);
  const row = (metric, v) => ({ bench: 'fleet-sqlite', metric, value: v, unit: 'MB', baseline: base, ratio: v / base });
  return [
    row(`${N} agents in one process: RSS per agent, 64 KiB page cache on every connection (baseline: as shipped)`, mean(got['small-cache'])),
    row('  RSS per agent without the incidents.db connection (measurement only)', mean(got['no-incidents'])),
    {
      bench: 'fleet-sqlite',
      metric: '  runs (MB per agent): as shipped / small cache / no incidents.db',
      value: `${got.full.map((x) => x.toFixed(3)).join(', ')} / ${got['small-cache'].map((x) => x.toFixed(3)).join(', ')} / ${got['no-incidents'].map((x) => x.toFixed(3)).join(', ')}`,
      unit: '',
    },
    { bench: 'fleet-sqlite', metric: '  load average (1 min) before / after', value: `${l0.toFixed(1)} / ${os.loadavg()[0].toFixed(1)}`, unit: '' },
  ];
}
