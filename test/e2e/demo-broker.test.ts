// `tallybox demo --broker URL`: the demos run against a broker they do not
// own (here an embedded aedes started by the test, standing in for a site's
// Mosquitto), and the punches land on that broker, seen by an independent
// subscriber (the cloud emulator's sink in this process).
import { execFile } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { CLI } from '../helpers/agent-process.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function demo(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'demo', ...args], { encoding: 'utf8', timeout: 90_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

async function external(): Promise<{ broker: EmbeddedBroker; sink: CloudSink }> {
  const broker = await startEmbeddedBroker();
  cleanups.push(() => broker.close());
  const sink = await CloudSink.connect({ url: broker.url });
  cleanups.push(() => sink.close());
  return { broker, sink };
}

describe('demo --broker URL', () => {
  it.each(['m1', 'm2'])(
    '--device %s --json: every punch reaches the external broker',
    async (device) => {
      const { broker, sink } = await external();
      const r = await demo(['--device', device, '--json', '--punches', '3', '--broker', broker.url]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const lines = r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.at(-1)).toEqual({ received: 3, duplicates: 0, lost: 0 });
      const ids = lines.slice(0, -1).map((l) => l.eventId as string);
      expect(ids).toHaveLength(3);
      for (const id of ids) expect(sink.has(id), `punch ${id} seen on the external broker`).toBe(true);
    },
    120_000,
  );

  it('the sim demo too; a bad URL is a usage error', async () => {
    const { broker, sink } = await external();
    const r = await demo(['--json', '--punches', '5', '--broker', broker.url]);
    expect(r.code, r.stderr).toBe(0);
    expect(sink.stats().received).toBeGreaterThanOrEqual(5);
    const bad = await demo(['--broker', 'localhost:1883']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--broker must be an mqtt/);
  }, 120_000);
});
