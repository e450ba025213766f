#!/usr/bin/env node
// CPU per message drained, by thread (issue 10 §5): the event loop, V8's helper threads (GC),
// and libuv's pool (SQLite, fs), from /proc/self/task, for the agent or a bare mqtt.js client.
//   node bench/drain-threads.mjs [--bare] [ROOT]     (ROOT: a built checkout, default this one)
// Agent: fills an outbox with 100,000 punches (that build's layout), drains it into a local
// Mosquitto from this process. Bare: 100,000 QoS 1 publishes of the same size, window 256,
// refilled once per event-loop turn (the punch-path bench's baseline).
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import mqtt from 'mqtt';

const bare = process.argv.includes('--bare');
const root = resolve(process.argv.slice(2).find((a) => a !== '--bare') ?? new URL('..', import.meta.url).pathname);
const N = 100_000;
const { Mosquitto } = await import(join(root, 'dist/simulators/cloud/mosquitto.js'));
/** CPU ticks (user + system) per thread id. */
const threads = () => {
  const out = new Map();
  for (const t of readdirSync('/proc/self/task')) {
    const f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8').split(') ')[1].split(' ');
    out.set(Number(t), Number(f[11]) + Number(f[12]));
  }
  return out;
};
const report = (label, t0, t1, ms) => {
  const us = (ids) => (ids.reduce((a, id) => a + t1.get(id) - (t0.get(id) ?? 0), 0) * 10 * 1000) / N; // ticks of 10 ms
  // V8 starts its platform workers before anything else; libuv's pool comes with the first fs/SQLite call.
  const others = [...t1.keys()].filter((id) => id !== process.pid).sort((a, b) => a - b);
  console.log(`${label}: ${Math.round((N / ms) * 1000)} msg/s; µs per message: main ${us([process.pid]).toFixed(1)}, V8 helpers ${us(others.slice(0, 4)).toFixed(1)}, libuv pool and others ${us(others.slice(4)).toFixed(1)}`);
};
const mosq = await Mosquitto.start();
const dir = mkdtempSync(join(tmpdir(), 'tbx-threads-'));
try {
  if (bare) {
    const client = await mqtt.connectAsync(mosq.url, { clientId: `bare-${process.pid}`, clean: true, protocolVersion: 5, reconnectPeriod: 0 });
    const payload = Buffer.alloc(95, 0x42);
    const t0 = threads();
    const w0 = performance.now();
    let next = 0;
    let done = 0;
    await new Promise((res) => {
      let queued = false;
      const pump = () => {
        queued = false;
        while (next < N && next - done < 256) {
          next++;
          client.publish('tallybox/v1/org-bench/bench-dev/punch', payload, { qos: 1 }, onAck);
        }
      };
      const onAck = () => {
        if (++done === N) res();
        else if (!queued) {
          queued = true;
          setImmediate(pump);
        }
      };
      pump();
    });
    report('bare mqtt.js', t0, threads(), performance.now() - w0);
    await client.endAsync();
  } else {
    const { Outbox } = await import(join(root, 'dist/src/outbox/outbox.js'));
    const { Agent } = await import(join(root, 'dist/src/agent/agent.js'));
    const { validateConfig } = await import(join(root, 'dist/src/config/load.js'));
    const { silentLogger } = await import(join(root, 'dist/src/util/log.js'));
    const o = await Outbox.open({ path: join(dir, 'outbox.db'), capacity: 1_000_000 });
    for (let i = 0; i < N; i += 5000) await Promise.all(Array.from({ length: 5000 }, (_, k) => o.accept({ orgId: 'org-bench', subjectId: `subject-${(i + k) % 997}`, method: 3 })));
    await o.close();
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
    const t0 = threads();
    const w0 = performance.now();
    while (agent.outbox.depth > 0) await new Promise((r) => setTimeout(r, 1));
    report(`agent (${root})`, t0, threads(), performance.now() - w0);
    await agent.stop();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
  await mosq.stop();
}
