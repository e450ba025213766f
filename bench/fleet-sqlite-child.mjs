// One measurement of bench/fleet-sqlite.bench.mjs, in a process of its own (clean RSS):
//   node --expose-gc bench/fleet-sqlite-child.mjs VARIANT N
// N full agents as the fleet worker runs them (one process, own data dir each, one Mosquitto),
// 10 punches each, drained; prints {rssPerAgentMb}. VARIANT:
//   full           the agent as it is (outbox writer + reader, incidents.db)
//   small-cache    every SQLite connection with PRAGMA cache_size=-64 (64 KiB instead of 2 MiB)
//   no-incidents   without the incident monitor's connection: what that one connection costs
// The last two are measurement-only patches of the compiled modules, never product behaviour.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import os from 'node:os';

const D = new URL('../dist/', import.meta.url).pathname;
const { Agent } = await import(`${D}src/agent/agent.js`);
const { validateConfig } = await import(`${D}src/config/load.js`);
const { createLogger } = await import(`${D}src/util/log.js`);
const { Mosquitto } = await import(`${D}simulators/cloud/mosquitto.js`);
const { Sqlite } = await import(`${D}src/store/sqlite.js`);
const variant = process.argv[2] ?? 'full';
const N = Number(process.argv[3] ?? 200);
if (variant === 'no-incidents') (await import(`${D}src/incident/monitor.js`)).IncidentMonitor.start = async () => undefined;
if (variant === 'small-cache') {
  const open = Sqlite.open.bind(Sqlite);
  Sqlite.open = async (...args) => {
    const db = await open(...args);
    await db.exec('PRAGMA cache_size=-64');
    return db;
  };
}
const broker = await Mosquitto.start();
const root = mkdtempSync('/dev/shm/tbx-bench-sqlite-');
try {
  const logger = createLogger({ level: 'error' });
  const rss = () => process.memoryUsage.rss() / 2 ** 20;
  global.gc();
  const r0 = rss();
  const agents = [];
  for (let i = 0; i < N; i++) {
    const id = `mem-${i}`;
    mkdirSync(join(root, id), { recursive: true, mode: 0o700 });
    const config = validateConfig({
      version: 1,
      device: { id, kind: 'sim', orgId: 'org-mem' },
      region: 'sg',
      dataDir: join(root, id),
      broker: { url: broker.url, allowLoopback: true, keepaliveSec: 60 },
      clock: { source: 'assume-synced' },
      incidents: { checkSec: 60 },
      log: { level: 'error' },
    });
    agents.push(await Agent.start({ config, logger }));
  }
  while (agents.some((a) => a.session === undefined)) await new Promise((r) => setTimeout(r, 100));
  for (let s = 0; s < 10; s++) {
    await Promise.all(agents.map((a, i) => a.punch({ orgId: 'org-mem', subjectId: `s-${i % 97}`, method: 3 })));
    await new Promise((r) => setTimeout(r, 1000));
  }
  while (agents.some((a) => a.outbox.depth > 0)) await new Promise((r) => setTimeout(r, 100));
  global.gc();
  await new Promise((r) => setTimeout(r, 500));
  global.gc();
  const r1 = rss();
  process.stdout.write(`${JSON.stringify({ variant, N, rssPerAgentMb: (r1 - r0) / N, load: os.loadavg()[0] })}\n`);
  await Promise.all(agents.map((a) => a.stop()));
} finally {
  await broker.stop();
  rmSync(root, { recursive: true, force: true });
}
