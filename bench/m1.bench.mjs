// M1 fingerprint role benchmarks (issue 4), over a REAL pseudo-terminal (socat) to the
// fingerprint simulator, with the real agent (outbox on disk, MQTT to an embedded broker).
//   overhead:  agent-side time from the module's Search reply to the punch being durably
//              accepted, over >= 1000 punches (target p99 <= 5 ms); baseline: agent.punch()
//              alone, measured in the same run.
//   reconcile: start-up reconciliation of a 1,000-template library: steady (module and vault
//              agree), cold (empty module: 1,000 DownChar + Store), mixed (500 missing, 24
//              pages the vault does not know); total time split into protocol round trips and
//              agent work (vault decryption, bookkeeping).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { enrolFinger, startM1Stack } from '../dist/src/cli/demo-m1.js';
import { sealPageEnvelope } from '../dist/src/roles/m1/envelope.js';

const PUNCHES = Number(process.env.BENCH_M1_PUNCHES ?? 1200);
const WARMUP = 50;
const LIBRARY = 1000;

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function overhead(where, dir) {
  const s = await startM1Stack({ ...(dir ? { dir } : {}), role: { repeatWindowSec: 0, requireLift: false, pollMs: 5 } });
  try {
    for (let i = 0; i < 200 && !s.agent.session; i++) await new Promise((r) => setTimeout(r, 20));
    await s.role.start();
    await s.vault.upsertSubject(s.orgId, { subjectId: 'bench-1', displayName: 'bench', minor: false, consents: [{ kind: 'biometric' }] });
    await enrolFinger(s, s.orgId, 'bench-1', { person: 'bench', finger: 1 });

    // Baseline: the durable accept alone, same agent, same disk.
    const base = [];
    for (let i = 0; i < PUNCHES; i++) {
      const t0 = performance.now();
      await s.agent.punch({ orgId: s.orgId, subjectId: 'bench-base', method: 1 });
      base.push(performance.now() - t0);
    }

    const over = [];
    const own = [];
    const cycle = [];
    let last = performance.now();
    const done = new Promise((resolve) => {
      s.role.on('punch', (e) => {
        const now = performance.now();
        over.push(e.overheadMs);
        own.push(e.roleMs);
        cycle.push(now - last);
        last = now;
        if (over.length >= PUNCHES + WARMUP) resolve();
      });
    });
    // The finger stays on the sensor: GenImg → Img2Tz → HighSpeedSearch → punch, back to back.
    s.sim.device.placeFinger({ person: 'bench', finger: 1 });
    await done;
    s.sim.device.liftFinger();
    const o = over.slice(WARMUP);
    const r = own.slice(WARMUP);
    const c = cycle.slice(WARMUP);
    const p99 = pct(o, 99);
    const b99 = pct(base.slice(WARMUP), 99);
    const b50 = pct(base.slice(WARMUP), 50);
    return [
      { bench: 'm1', metric: `[${where}] search reply → punch durable, p50 (${o.length} punches)`, value: pct(o, 50), unit: 'ms', baseline: b50, ratio: pct(o, 50) / b50 },
      { bench: 'm1', metric: `[${where}] search reply → punch durable, p99 (${o.length} punches)`, value: p99, unit: 'ms', baseline: b99, ratio: p99 / b99, target: '≤ 5 ms', ok: p99 <= 5 },
      { bench: 'm1', metric: `[${where}] search reply → punch durable, max`, value: Math.max(...o), unit: 'ms' },
      { bench: 'm1', metric: `[${where}] of which role work (page lookup, repeat window, bucket), p99`, value: pct(r, 99), unit: 'ms' },
      { bench: 'm1', metric: `[${where}] identification cycle over the pty (GenImg..punch), p50`, value: pct(c, 50), unit: 'ms' },
    ];
  } finally {
    await s.close();
  }
}

async function reconcile() {
  // 1,024 pages (the largest R30x library): room for pages the vault does not know.
  const s = await startM1Stack({ capacity: 1024, timeoutMs: 2000 });
  const rows = [];
  try {
    const org = s.orgId;
    const ids = Array.from({ length: LIBRARY }, (_, i) => `bench-${String(i).padStart(4, '0')}`);
    await s.vault.upsertSubjects(
      org,
      ids.map((subjectId) => ({ subjectId, displayName: 'bench', minor: false, consents: [{ kind: 'biometric' }] })),
    );
    const models = ids.map((_, i) => s.sim.device.modelOf({ person: `p${i}`, finger: 0 }));
    await s.vault.enrolTemplates(
      org,
      ids.map((subjectId, i) => ({ subjectId, modality: 'fingerprint', slot: 0, bytes: sealPageEnvelope(i, models[i]) })),
    );

    // Bytes on the wire, to estimate the same reconciliation on a real UART.
    const wire = { bytes: 0 };
    const t = s.driver.transport;
    const write = t.write.bind(t);
    t.write = (b) => ((wire.bytes += b.length), write(b));
    t.on('data', (c) => (wire.bytes += c.length));
    const run = async (name, prepare) => {
      await s.role.stop();
      prepare();
      wire.bytes = 0;
      const t0 = performance.now();
      await s.role.start();
      const wall = performance.now() - t0;
      const r = s.role.lastReconcile;
      if (s.role.status !== 'ready' || !r) throw new Error(`reconcile ${name}: role ${s.role.status}`);
      if (s.sim.device.pages().length !== LIBRARY) throw new Error(`reconcile ${name}: ${s.sim.device.pages().length} pages on the module`);
      rows.push(
        { bench: 'm1', metric: `reconcile 1,000 pages, ${name}: total (${r.deleted} deleted, ${r.restored} restored, ${r.roundTrips} round trips)`, value: r.ms.total, unit: 'ms' },
        { bench: 'm1', metric: `reconcile 1,000 pages, ${name}: protocol round trips`, value: r.ms.protocol, unit: 'ms' },
        { bench: 'm1', metric: `reconcile 1,000 pages, ${name}: agent work (vault decrypt, bookkeeping)`, value: r.ms.agent, unit: 'ms' },
        { bench: 'm1', metric: `reconcile 1,000 pages, ${name}: start() wall (open, VfyPwd, ReadSysPara, reconcile)`, value: wall, unit: 'ms' },
        // 10 bits per byte (8N1); module processing time (flash writes) not included.
        { bench: 'm1', metric: `reconcile 1,000 pages, ${name}: same bytes on a 57600-baud UART (${wire.bytes} B, estimate)`, value: (wire.bytes * 10) / 57.6, unit: 'ms' },
      );
    };
    await s.role.start(); // first start fills the module; not measured
    await run('steady (module = vault)', () => undefined);
    await run('cold (empty module)', () => s.sim.device.clearLibrary());
    await run('mixed (500 missing, 24 unknown)', () => {
      for (let i = 0; i < 500; i++) s.sim.device.deletePage(i * 2);
      for (let i = LIBRARY; i < 1024; i++) s.sim.device.enrolDirect(i, { person: `stranger-${i}`, finger: 0 });
    });
    return rows;
  } finally {
    await s.close();
  }
}

export async function run() {
  const rows = await overhead('disk');
  // The same on tmpfs: the agent's work without the disk's fsync jitter (not durable; for the split only).
  if (existsSync('/dev/shm')) {
    const dir = mkdtempSync(join('/dev/shm', 'tallybox-m1-bench-'));
    try {
      rows.push(...(await overhead('tmpfs', dir)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return [...rows, ...(await reconcile())];
}
