/**
 * One punch consumer as its own process (forked with an IPC channel by the
 * fleet coordinator, which runs the ordering stage): punches go up the
 * channel in batches, PUBACKs wait for the coordinator's "taken".
 *
 *   fork(consumer-process.js, [JSON.stringify({ url, group, slot, shared, session })])
 *
 * Messages up:   { t: 'ready' } | { t: 'punches', id, items: [deviceId, seq, eventId, receivedHrMs][] } | { t: 'stats', ... }
 * Messages down: { t: 'taken', id } | { t: 'stop' }
 * The channel closing (the coordinator died) ends the process: nobody would take its punches.
 */
import { processCpuMs } from '../fleet/cpu.js';
import { PunchConsumer, type ConsumedPunch, type PunchConsumerOptions } from './consumer.js';

export type ConsumerSpec = Omit<PunchConsumerOptions, 'forward'>;
export type ConsumerUp = { t: 'ready' } | { t: 'punches'; id: number; items: [string, number, string, number][] } | { t: 'stats'; received: number; forwarded: number; malformed: number; pubacksDropped: number; cpuMs: number };
export type ConsumerDown = { t: 'taken'; id: number } | { t: 'stop' };

async function main(): Promise<void> {
  const send = (m: ConsumerUp) => process.send?.(m);
  const spec = JSON.parse(process.argv[2] ?? '{}') as ConsumerSpec;
  const waiting = new Map<number, () => void>();
  let nextId = 0;
  const forward = (batch: ConsumedPunch[]) =>
    new Promise<void>((resolve) => {
      const id = nextId++;
      waiting.set(id, resolve);
      send({ t: 'punches', id, items: batch.map((p) => [p.deviceId, p.seq, p.eventId, p.receivedHrMs]) });
    });
  const consumer = new PunchConsumer({ ...spec, forward });
  process.on('message', (m: ConsumerDown) => {
    if (m.t === 'taken') {
      waiting.get(m.id)?.();
      waiting.delete(m.id);
    } else if (m.t === 'stop') {
      void consumer.stop().finally(() => process.exit(0));
    }
  });
  process.on('disconnect', () => process.exit(0));
  await consumer.start();
  // Every 250 ms: the fleet report's CPU per punch reads the last one.
  const stats = setInterval(() => send({ t: 'stats', ...consumer.counters, cpuMs: processCpuMs() }), 250);
  stats.unref();
  send({ t: 'ready' });
}

main().catch((err: unknown) => {
  process.stderr.write(`tallybox-sim consumer: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
