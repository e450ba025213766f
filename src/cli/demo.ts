/**
 * `tallybox demo`: the whole punch path on one machine, in one process tree —
 * an embedded broker, the cloud emulator, the agent, and a simulated badge
 * reader producing identified punches.
 *
 *   tallybox demo                       ~20 punches with a short uplink outage in the middle
 *   tallybox demo --json --punches N    one JSON line per punch the cloud receives, then
 *                                       {"received":N,"duplicates":D,"lost":L}; exit 0 when lost is 0
 *   --keep-data DIR                     leave the device's data directory in DIR
 *   --outage                            also cut the device's uplink for a moment in --json mode
 */
import { PunchMethod, pb, type PunchEvent } from '../proto/index.js';
import { createLogger } from '../util/log.js';
import { awaitDelivery, punchJsonLine, sleep, startDemoDevice } from './demo-kit.js';

export interface DemoOptions {
  json: boolean;
  punches: number;
  keepData?: string;
  outage: boolean;
  /** An external broker instead of the embedded one (`--broker URL`); the outage needs a loopback broker. */
  brokerUrl?: string;
  /** Milliseconds between simulated punches (0: as fast as the agent accepts). */
  intervalMs: number;
  out?: (line: string) => void;
}

/** Opaque subject ids of the simulated staff: the device never needs their names to punch. */
const ROSTER = Array.from({ length: 12 }, (_, i) => `sub-${String(i + 1).padStart(4, '0')}`);
const METHODS = [PunchMethod.PUNCH_METHOD_CARD, PunchMethod.PUNCH_METHOD_FINGERPRINT, PunchMethod.PUNCH_METHOD_FACE];

export async function runDemo(opts: DemoOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const say = (l: string) => {
    if (!opts.json) out(l);
  };
  const orgId = 'acme';
  const deviceId = 'demo-m1-0001';
  const accepted = new Set<string>();
  const method = (v: number) => (pb.PunchMethod as unknown as Record<number, string>)[v]?.replace('PUNCH_METHOD_', '') ?? '?';
  const dev = await startDemoDevice({
    kind: 'sim',
    deviceId,
    orgId,
    vault: false,
    uplinkProxy: true,
    // The `tallybox run` start path (a 'sim' device has no role: punches come from the simulated reader below).
    roles: {},
    ...(opts.brokerUrl ? { brokerUrl: opts.brokerUrl } : {}),
    ...(opts.keepData ? { dir: opts.keepData } : {}),
    ...(opts.json ? {} : { logger: createLogger({ level: 'error', base: { deviceId } }) }),
    onPunch: (p: PunchEvent, { duplicate }) => {
      if (duplicate) return;
      if (opts.json) out(punchJsonLine(p));
      else {
        const at = new Date(p.occurredAtMs).toISOString().slice(11, 23);
        say(`  cloud ← punch #${p.seq}  ${p.subjectId}  ${method(p.method).padEnd(11)} at ${at}  bd_seq=${p.bdSeq}${p.historical ? '  (historical: replayed backlog)' : ''}`);
      }
    },
  });
  const { agent } = dev;
  try {
    say(`Tallybox demo: broker ${dev.broker.url}, device ${deviceId} (org ${orgId}), data in ${dev.dataDir}`);
    say(`A simulated reader punches ${opts.punches} times; the cloud emulator prints what it receives.\n`);

    const outage = opts.outage && dev.uplink !== undefined;
    if (opts.outage && !outage) say(`  (no uplink outage: the broker ${dev.broker.url} is not a plain loopback one the demo can cut)`);
    const outageAt = outage ? Math.floor(opts.punches / 3) : -1;
    const outageEnd = outage ? Math.floor((opts.punches * 2) / 3) : -1;
    const inflight: Promise<void>[] = [];
    for (let i = 0; i < opts.punches; i++) {
      if (i === outageAt) {
        say(`  ** uplink outage: the device's connection to the broker is cut; punches keep being accepted into the outbox **`);
        dev.uplink!.cut(true);
      }
      if (i === outageEnd) {
        dev.uplink!.cut(false);
        say(`  ** uplink back: the backlog drains, flagged historical **`);
      }
      const subjectId = ROSTER[i % ROSTER.length]!;
      const p = agent.punch({ orgId, subjectId, method: METHODS[i % METHODS.length]! }).then(
        (row) => {
          accepted.add(row.eventId);
          if (outageAt <= i && i < outageEnd) say(`  device: punch #${row.seq} ${subjectId} accepted (queued: ${agent.outbox.depth})`);
        },
        (err: unknown) => say(`  device: punch refused: ${(err as Error).message}`),
      );
      if (opts.intervalMs > 0) {
        await p;
        await sleep(opts.intervalMs);
      } else inflight.push(p);
    }
    await Promise.all(inflight);
    const stats = await awaitDelivery(dev.sink, accepted, opts.punches);
    if (opts.json) out(JSON.stringify(stats));
    else {
      const s = dev.sink.stats();
      say(`\nDone: ${stats.received} punches received by the cloud, ${stats.duplicates} duplicates (same event id, de-duplicated), ${stats.lost} lost, ${s.historical} replayed as historical, ${s.gaps} sequence gaps.`);
      if (opts.keepData) say(`Device data left in ${dev.dataDir}`);
    }
    return stats.lost === 0 ? 0 : 1;
  } finally {
    await dev.close({ keepDir: opts.keepData !== undefined });
  }
}
