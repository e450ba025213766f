/**
 * Crash safety: SIGKILL the agent process at random moments while punches
 * stream in through its punch API, restart it, repeat (25 times). At the end
 * every punch the agent accepted (HTTP 201, i.e. committed) has reached the
 * cloud; nothing else arrived except punches whose request outcome was
 * unknown because of the kill; sequence numbers have no gaps.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { testConfig } from '../helpers/agent-config.js';
import { AgentProcess, postPunch, writeConfig } from '../helpers/agent-process.js';
import { freePort, sleep, waitUntil } from '../helpers/ports.js';

const KILLS = 25;

describe('crash safety under SIGKILL', () => {
  let broker: EmbeddedBroker;
  let sink: CloudSink;
  let agent: AgentProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'tbx-crash-'));

  afterAll(async () => {
    await agent?.kill();
    await sink?.close();
    await broker?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it(`loses no accepted punch across ${KILLS} kills`, async () => {
    broker = await startEmbeddedBroker();
    sink = await CloudSink.connect({ url: broker.url });
    const apiPort = await freePort();
    const file = writeConfig(dir, testConfig({ dataDir: join(dir, 'data'), brokerUrl: broker.url, apiPort }));
    agent = new AgentProcess(file, apiPort);

    const accepted = new Set<string>();
    const unknown = new Set<string>();
    const sent = new Set<string>();
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

    for (let k = 0; k < KILLS; k++) {
      await agent.start();
      let streaming = true;
      // Four concurrent producers, so kills land inside group commits too.
      const producers = Array.from({ length: 4 }, async (_, w) => {
        let i = 0;
        while (streaming) {
          const o = await postPunch(apiPort, { orgId: 'org-a', subjectId: `s-${w}-${i++ % 20}`, method: 'CARD' });
          sent.add(o.eventId);
          if (o.status === 'accepted') accepted.add(o.eventId);
          else if (o.status === 'unknown') {
            unknown.add(o.eventId);
            return;
          } else throw new Error(`punch refused: ${o.code}`);
        }
      });
      // The kill lands at a random moment of streaming, counted from the fifth punch this run
      // accepted (not from the start: on a loaded machine start-up alone can outlast the window;
      // and `unknown` counts this run's own kill-time outcomes only, it grows across runs).
      const before = accepted.size;
      const unknownBefore = unknown.size;
      await waitUntil(() => accepted.size >= before + 5 || unknown.size > unknownBefore, 60_000, 'punches accepted after the restart');
      await sleep(40 + rand() * 260);
      await agent.kill('SIGKILL');
      streaming = false;
      await Promise.all(producers);
    }
    await agent.start();
    await waitUntil(() => [...accepted].every((id) => sink.has(id)), 60_000, 'every accepted punch at the cloud');

    const received = sink.punches().map((p) => p.eventId);
    expect(accepted.size).toBeGreaterThan(KILLS * 4);
    for (const id of received) expect(sent.has(id), `cloud received ${id}, which was never sent`).toBe(true);
    // Anything received but not acknowledged to the producer had an unknown outcome (killed mid-request).
    for (const id of received) if (!accepted.has(id)) expect(unknown.has(id)).toBe(true);
    const stats = sink.stats();
    expect(stats.gaps).toBe(0);
    expect(stats.received).toBe(new Set(received).size);
  }, 180_000);
});
