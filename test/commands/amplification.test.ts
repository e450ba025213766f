/**
 * Issue 9 §3 "No amplification", over a real broker (embedded aedes) and the
 * real agent (vault, device identity, outbox):
 * - 250 garbage messages on the device's own cmd topic give at most the
 *   bucket's burst plus its rate in results, none written to the outbox, and
 *   250 more on an unserved org's cmd topic give none at all;
 * - a retained command is replayed by the broker on every reconnect: the
 *   first delivery is accepted (one result), every replay gets a REPLAYED
 *   result that names the first counter, with the same signature bytes each
 *   time (no new signature work);
 * - the gate itself: token bucket on an injected monotonic clock, bounded
 *   queue while offline, sent in order once back online.
 * Before this change: 250 garbage → 250 signed results, each an fsync'd
 * outbox row, published to whatever org the topic named.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { RejectionGate } from '../../src/link/commands/index.js';
import { topic } from '../../src/link/topics.js';
import { pb, ResultCode, type CommandResult, type CommandResultProps } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { commandConfig } from '../helpers/agent-config.js';
import { sleep, waitUntil } from '../helpers/ports.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const DEV = 'dev-amp';
const BURST = 20;
const RATE = 2;

async function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-amp-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const broker = await startEmbeddedBroker();
  cleanups.push(() => broker.close());
  const signer = new CommandSigner({ keyId: 'cloud-amp' });
  const dataDir = join(dir, 'data');
  const config = validateConfig({
    version: 1,
    device: { id: DEV, kind: 'sim', orgId: 'org-a' },
    region: 'sg',
    dataDir,
    broker: { url: broker.url, allowLoopback: true, reconnectMinMs: 50, reconnectMaxMs: 200 },
    ...(await commandConfig(dir, dataDir, signer)),
    clock: { source: 'assume-synced' },
    outbox: { backlogRatePerSec: 0 },
    log: { level: 'silent' },
  });
  const agent = await Agent.start({ config, logger: silentLogger() });
  cleanups.push(() => agent.stop());
  await waitUntil(() => agent.session !== undefined, 10_000, 'online');
  const results: { topic: string; raw: Buffer; result: CommandResult }[] = [];
  const cloud = await mqtt.connectAsync(broker.url, { clientId: 'cloud-amp', protocolVersion: 4 });
  cleanups.push(() => cloud.endAsync(true));
  cloud.on('message', (t, payload) => {
    if (t.endsWith('/result')) results.push({ topic: t, raw: Buffer.from(payload), result: pb.CommandResult.decode(payload) });
  });
  await cloud.subscribeAsync(`tallybox/v1/+/${DEV}/result`, { qos: 1 });
  return { agent, signer, cloud, results };
}

describe('no amplification over a real broker', () => {
  it('250 garbage messages on the own cmd topic → at most burst + rate·t results, no outbox row; 250 on an unserved org → nothing', async () => {
    const { agent, cloud, results } = await setup();
    const enqueue = vi.spyOn(agent.outbox, 'enqueueResult');
    const sign = vi.spyOn(agent.privacy!.identity, 'sign');
    const t0 = performance.now();
    for (let i = 0; i < 250; i++) {
      await cloud.publishAsync(topic('org-a', DEV, 'cmd'), randomBytes(20 + (i % 200)), { qos: 1 });
      await cloud.publishAsync(topic('org-zzz', DEV, 'cmd'), randomBytes(20 + (i % 200)), { qos: 1 });
    }
    await waitUntil(() => agent.intakeStats()!.offered >= 500, 20_000, 'all 500 garbage messages processed');
    await sleep(500); // let anything sent reach the subscriber
    const seconds = (performance.now() - t0) / 1000;
    const allowed = BURST + Math.ceil(RATE * seconds) + 1;
    expect(results.length).toBeGreaterThan(0);
    expect(results.length).toBeLessThanOrEqual(allowed);
    expect(results.every((r) => r.topic === `tallybox/v1/org-a/${DEV}/result`)).toBe(true);
    expect(results.every((r) => r.result.code !== ResultCode.RESULT_CODE_OK)).toBe(true);
    // Only what was sent was signed; nothing went through the durable outbox.
    expect(sign.mock.calls.length).toBe(results.length);
    expect(enqueue).not.toHaveBeenCalled();
    expect(await agent.outbox.pendingResults(1000)).toEqual([]);
    const st = agent.intakeStats()!;
    expect(st.unrouted).toBe(250);
    expect(st.sent + st.limited + st.queued).toBe(250);
    // eslint-disable-next-line no-console
    console.log(`amplification: 500 garbage in ${seconds.toFixed(2)} s → ${results.length} results (limit ${allowed}), ${st.limited} rate-limited, ${st.unrouted} unrouted, 0 outbox rows`);
  }, 60_000);

  it('a retained command replayed on every reconnect: one acceptance, then REPLAYED results naming it, with no new signature', async () => {
    const { agent, signer, cloud, results } = await setup();
    const cmd = signer.sign({ deviceId: DEV, orgId: 'org-a', ping: { note: 'retained' } });
    const counter = signer.lastCounter;
    await cloud.publishAsync(topic('org-a', DEV, 'cmd'), cmd, { qos: 1, retain: true });
    await waitUntil(() => results.some((r) => r.result.counter === counter), 10_000, 'first result');
    expect(results.filter((r) => r.result.counter === counter).map((r) => r.result.code)).toEqual([ResultCode.RESULT_CODE_OK]);
    const sign = vi.spyOn(agent.privacy!.identity, 'sign');
    const RECONNECTS = 6;
    for (let i = 0; i < RECONNECTS; i++) {
      const before = agent.session;
      agent.link.recycle('test: reconnect');
      await waitUntil(() => agent.session !== undefined && agent.session !== before, 10_000, 'reconnected');
      await waitUntil(() => results.filter((r) => r.result.counter === counter).length >= i + 2, 10_000, `replay result ${i + 1}`);
    }
    const replays = results.filter((r) => r.result.counter === counter).slice(1);
    expect(replays).toHaveLength(RECONNECTS);
    for (const r of replays) {
      expect({ code: r.result.code, reason: r.result.reason, firstCounter: Number(r.result.firstCounter) }).toEqual({ code: ResultCode.RESULT_CODE_REPLAYED, reason: 'nonce_seen', firstCounter: counter });
      expect(r.raw.equals(replays[0]!.raw)).toBe(true);
    }
    // One signature for the first replay's result, none for the rest.
    expect(sign.mock.calls.length).toBe(1);
    await expect(agent.outbox.pendingResults(10)).resolves.toEqual([]);
    await cloud.publishAsync(topic('org-a', DEV, 'cmd'), Buffer.alloc(0), { qos: 1, retain: true }); // clear the retained message
  }, 60_000);
});

describe('the rejection gate', () => {
  const result = (n: number): CommandResultProps => ({ deviceId: 'd', counter: n, code: ResultCode.RESULT_CODE_MALFORMED });

  it('is a token bucket on the monotonic clock: burst, then the rate; builds (signs) only what it lets through', async () => {
    let mono = 1000;
    const sent: number[] = [];
    let built = 0;
    const gate = new RejectionGate({ ratePerSec: 2, burst: 5, mono: () => mono, send: async (_o, r) => void sent.push(r.counter as number), logger: silentLogger() });
    for (let i = 0; i < 50; i++) gate.offer('org-a', () => (built++, result(i)));
    await sleep(5);
    expect(sent).toEqual([0, 1, 2, 3, 4]);
    expect(built).toBe(5);
    mono += 1000; // one second: two more tokens
    for (let i = 50; i < 60; i++) gate.offer('org-a', () => (built++, result(i)));
    await sleep(5);
    expect(sent).toEqual([0, 1, 2, 3, 4, 50, 51]);
    mono -= 10_000; // a clock that went back mints nothing
    expect(gate.offer('org-a', () => result(99))).toBe('limited');
    expect(gate.offer(undefined, () => result(100))).toBe('unrouted');
    expect(gate.stats()).toMatchObject({ offered: 62, sent: 7, limited: 54, unrouted: 1, overflow: 0 });
    gate.close();
  });

  it('holds results in a bounded queue while offline, drops (and counts) the overflow, sends in order when back', async () => {
    let online = false;
    const sent: number[] = [];
    const gate = new RejectionGate({ ratePerSec: 1000, burst: 1000, capacity: 3, send: async (_o, r) => (online ? void sent.push(r.counter as number) : Promise.reject(new Error('offline'))), logger: silentLogger() });
    for (let i = 0; i < 10; i++) gate.offer('org-a', () => result(i));
    await sleep(10);
    expect(gate.stats()).toMatchObject({ queued: 3, overflow: 7, sent: 0 });
    online = true;
    gate.resume();
    await waitUntil(() => sent.length === 3, 2000, 'sent');
    expect(sent).toEqual([0, 1, 2]);
    gate.close();
  });
});
