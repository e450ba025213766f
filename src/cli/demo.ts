/**
 * `tallybox demo`: the whole punch path on one machine, in one process tree —
 * an embedded broker, the cloud emulator, the agent, and a simulated badge
 * reader producing identified punches.
 *
 *   tallybox demo                       ~20 punches with a short broker outage in the middle
 *   tallybox demo --json --punches N    one JSON line per punch the cloud receives, then
 *                                       {"received":N,"duplicates":D,"lost":L}; exit 0 when lost is 0
 *   --keep-data DIR                     leave the device's data directory in DIR
 *   --outage                            also stop the broker for a moment in --json mode
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Agent } from '../agent/agent.js';
import { validateConfig } from '../config/load.js';
import { PunchMethod, type PunchEvent } from '../proto/index.js';
import { silentLogger, createLogger } from '../util/log.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';

export interface DemoOptions {
  json: boolean;
  punches: number;
  keepData?: string;
  outage: boolean;
  /** Milliseconds between simulated punches (0: as fast as the agent accepts). */
  intervalMs: number;
  out?: (line: string) => void;
}

const METHOD_NAMES: Record<number, string> = {
  [PunchMethod.PUNCH_METHOD_FINGERPRINT]: 'FINGERPRINT',
  [PunchMethod.PUNCH_METHOD_FACE]: 'FACE',
  [PunchMethod.PUNCH_METHOD_CARD]: 'CARD',
  [PunchMethod.PUNCH_METHOD_WIFI]: 'WIFI',
  [PunchMethod.PUNCH_METHOD_PIN]: 'PIN',
};

/** Opaque subject ids of the simulated staff: the device never needs their names to punch. */
const ROSTER = Array.from({ length: 12 }, (_, i) => `sub-${String(i + 1).padStart(4, '0')}`);
const METHODS = [PunchMethod.PUNCH_METHOD_CARD, PunchMethod.PUNCH_METHOD_FINGERPRINT, PunchMethod.PUNCH_METHOD_FACE];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runDemo(opts: DemoOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const say = (l: string) => {
    if (!opts.json) out(l);
  };
  const dataDir = opts.keepData ? resolve(opts.keepData) : mkdtempSync(join(tmpdir(), 'tallybox-demo-'));
  let broker: EmbeddedBroker = await startEmbeddedBroker();
  const port = broker.port;
  const orgId = 'acme';
  const deviceId = 'demo-m1-0001';
  const accepted = new Set<string>();

  const sink = await CloudSink.connect({
    url: broker.url,
    onPunch: (p: PunchEvent, { duplicate }) => {
      if (duplicate) return;
      if (opts.json) {
        out(JSON.stringify({ eventId: p.eventId, orgId: p.orgId, deviceId: p.deviceId, subjectId: p.subjectId, method: METHOD_NAMES[p.method] ?? 'UNSPECIFIED', seq: p.seq, bdSeq: p.bdSeq, historical: p.historical, occurredAtMs: p.occurredAtMs }));
      } else {
        const at = new Date(p.occurredAtMs).toISOString().slice(11, 23);
        say(`  cloud ← punch #${p.seq}  ${p.subjectId}  ${(METHOD_NAMES[p.method] ?? '?').padEnd(11)} at ${at}  bd_seq=${p.bdSeq}${p.historical ? '  (historical: replayed backlog)' : ''}`);
      }
    },
  });

  const config = validateConfig({
    version: 1,
    device: { id: deviceId, kind: 'sim', orgId },
    region: 'sg',
    dataDir,
    broker: { url: broker.url, allowLoopback: true, keepaliveSec: 5, reconnectMinMs: 200, reconnectMaxMs: 1000 },
    clock: { source: 'assume-synced' },
    outbox: { backlogRatePerSec: 0 },
    log: { level: opts.json ? 'silent' : 'warn' },
  });
  const logger = opts.json ? silentLogger() : createLogger({ level: 'error', base: { deviceId } });
  const agent = await Agent.start({ config, logger });
  // Start punching once the device is online, so live punches are not flagged as backlog.
  for (let waited = 0; !agent.session && waited < 10_000; waited += 20) await sleep(20);

  say(`Tallybox demo: broker ${broker.url}, device ${deviceId} (org ${orgId}), data in ${dataDir}`);
  say(`A simulated reader punches ${opts.punches} times; the cloud emulator prints what it receives.\n`);

  const outageAt = opts.outage ? Math.floor(opts.punches / 3) : -1;
  const outageEnd = opts.outage ? Math.floor((opts.punches * 2) / 3) : -1;
  const inflight: Promise<void>[] = [];
  for (let i = 0; i < opts.punches; i++) {
    if (i === outageAt) {
      say(`  ** broker outage: stopping the broker; punches keep being accepted into the outbox **`);
      await broker.close();
    }
    if (i === outageEnd) {
      broker = await startEmbeddedBroker({ port });
      say(`  ** broker back: the backlog drains, flagged historical **`);
    }
    const subjectId = ROSTER[i % ROSTER.length]!;
    const method = METHODS[i % METHODS.length]!;
    const p = agent.punch({ orgId, subjectId, method }).then(
      (row) => {
        accepted.add(row.eventId);
        if (outageAt <= i && i < outageEnd) say(`  device: punch #${row.seq} ${subjectId} accepted (queued: ${agent.outbox.depth})`);
      },
      (err: unknown) => {
        say(`  device: punch refused: ${(err as Error).message}`);
      },
    );
    if (opts.intervalMs > 0) {
      await p;
      await sleep(opts.intervalMs);
    } else inflight.push(p);
  }
  await Promise.all(inflight);

  // Wait for the cloud to see everything accepted (generous: includes a reconnect).
  const deadline = Date.now() + 30_000 + accepted.size * 2;
  while (Date.now() < deadline && [...accepted].some((id) => !sink.has(id))) await sleep(50);

  const stats = sink.stats();
  const lost = [...accepted].filter((id) => !sink.has(id)).length;
  await agent.stop();
  await sink.close();
  await broker.close();
  if (!opts.keepData) rmSync(dataDir, { recursive: true, force: true });

  if (opts.json) out(JSON.stringify({ received: stats.received, duplicates: stats.duplicates, lost }));
  else {
    say(`\nDone: ${stats.received} punches received by the cloud, ${stats.duplicates} duplicates (same event id, de-duplicated), ${lost} lost, ${stats.historical} replayed as historical, ${stats.gaps} sequence gaps.`);
    if (opts.keepData) say(`Device data left in ${dataDir}`);
  }
  return lost === 0 ? 0 : 1;
}
