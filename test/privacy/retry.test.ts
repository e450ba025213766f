/**
 * Issue 8 §1: a failed or unverified purge is retried on a timer with
 * backoff while the agent runs (not only at the next start), and shows in
 * DeviceState (ALARM_CODE_PURGE_INCOMPLETE, purges_pending). And §2 for the
 * command path: a command purge's receipt travels in the command result;
 * only if that result never got queued (a crash) does the journal's copy go
 * out on its own at the next start, and never twice.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { receiptResult, startPrivacyRuntime, type PrivacyRuntime } from '../../src/agent/privacy.js';
import { resultToJson } from '../../src/agent/results.js';
import { validateConfig } from '../../src/config/load.js';
import type { SignedErasureReceipt } from '../../src/privacy/receipt.js';
import type { ErasureParticipant } from '../../src/privacy/types.js';
import { AlarmCode } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { waitUntil } from '../helpers/ports.js';
import { device, enrol, open, queuedReceipts, type Device, type Opened } from './helpers.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function dev(over: Parameters<typeof device>[0] = {}): Promise<Device> {
  const d = await device(over);
  cleanups.push(() => d.cleanup());
  return d;
}

describe('purge retry while the agent runs', () => {
  it('a failed purge raises PURGE_INCOMPLETE, is retried with backoff, completes, clears the alarm and queues one receipt', async () => {
    const d = await dev({ privacy: { purgeRetryMinSec: 0.2, purgeRetryMaxSec: 1 } });
    const agent = await Agent.start({ config: validateConfig(d.configInput), logger: silentLogger() });
    cleanups.push(() => agent.stop());
    await enrol(agent.privacy!, 'org-x', 3);
    let failures = 7; // the first run's three attempts, the first retry's three, and one of the second retry's
    const calls: number[] = [];
    const flaky: ErasureParticipant = {
      name: 'sensor-flash',
      eraseOrg: async () => {
        calls.push(performance.now());
        if (failures-- > 0) throw Object.assign(new Error('module busy'), { code: 'BUSY' });
        return { ok: true, counts: { sensorSlots: 3 } };
      },
      eraseSubject: async () => ({ ok: true, counts: {} }),
    };
    agent.registerErasureParticipant(flaky);

    const first = await agent.privacy!.purger.withdrawOrg('org-x');
    expect(first.receipt).toMatchObject({ ok: false, verification: 'failed', problem: 'PARTICIPANT_FAILED' });
    await waitUntil(() => agent.state().purgesPending === 1, 5000, 'pending purge in DeviceState');
    const alarm = agent.state().alarms!.find((a) => a.code === AlarmCode.ALARM_CODE_PURGE_INCOMPLETE);
    expect(alarm?.detail).toMatch(/1 purge\(s\) not verified complete \(PARTICIPANT_FAILED\); retrying/);
    expect(await queuedReceipts(agent.outbox)).toEqual([]);

    // No restart: the timer retries (0.2 s, then 0.4 s) until the module answers.
    await waitUntil(() => agent.state().purgesPending === 0, 15_000, 'purge completed by a retry');
    expect(agent.state().alarms!.some((a) => a.code === AlarmCode.ALARM_CODE_PURGE_INCOMPLETE)).toBe(false);
    expect(calls.length).toBe(3 + 3 + 2);
    // Backoff on the monotonic clock: 0.2 s before the first retry, 0.4 s before the second.
    expect(calls[3]! - calls[2]!).toBeGreaterThanOrEqual(190);
    expect(calls[6]! - calls[5]!).toBeGreaterThanOrEqual(390);
    await waitUntil(async () => (await queuedReceipts(agent.outbox)).length > 0, 5000, 'receipt queued');
    const receipts = await queuedReceipts(agent.outbox);
    expect(receipts.map((r) => [r.orgId, r.reason, r.receipt.verification, r.receipt.resumed])).toEqual([['org-x', 'purge_resumed', 'verified', true]]);
    expect(receipts[0]!.receipt.participants).toMatchObject([{ name: 'outbox' }, { name: 'command-journal', ok: true }, { name: 'sensor-flash', ok: true, counts: { sensorSlots: 3 } }]);
  }, 30_000);
});

describe('receipts of command purges', () => {
  async function runtime(o: Opened, d: Device): Promise<PrivacyRuntime> {
    const rt = await startPrivacyRuntime({
      services: o.privacy,
      config: d.config,
      outbox: o.outbox,
      enqueue: async (orgId, r) => void (await o.outbox.enqueueResult(orgId, resultToJson(r))),
      retentionDays: () => 365,
      clockSynced: () => true,
      logger: silentLogger(),
      onChange: () => undefined,
    });
    cleanups.push(async () => rt.stop());
    return rt;
  }

  /** What the command intake queues for an OrgWithdraw: a result that carries the receipt. */
  function commandResult(o: Opened, signed: SignedErasureReceipt) {
    return { ...receiptResult({ deviceId: 'dev-priv-1', identity: o.privacy.identity, signed, ok: true, reason: 'org_withdrawn' }), counter: 7 };
  }

  it('settled once the command result carrying it is queued: no second copy, now or after a restart', async () => {
    const d = await dev();
    let o = await open(d);
    await enrol(o.privacy, 'org-c', 2);
    const rt = await runtime(o, d);
    const out = await o.privacy.purger.withdrawOrg('org-c', { requestRef: 'cmd:7' });
    expect(out.queued).toBe(true);
    expect(await queuedReceipts(o.outbox)).toEqual([]); // left to the command result
    const r = commandResult(o, out.signed);
    await o.outbox.enqueueResult('org-c', resultToJson(r));
    await rt.settleCarried(r);
    expect(await o.privacy.journal.pendingReceipts()).toEqual([]);
    rt.stop();
    await o.close();
    o = await open(d);
    cleanups.push(() => o.close());
    await runtime(o, d);
    expect((await queuedReceipts(o.outbox)).map((x) => x.receipt.receiptId)).toEqual([out.receipt.receiptId]);
  });

  it('killed before the command result was queued: the receipt goes out on its own at the next start, once', async () => {
    const d = await dev();
    let o = await open(d);
    await enrol(o.privacy, 'org-c', 2);
    await runtime(o, d);
    const out = await o.privacy.purger.withdrawOrg('org-c', { requestRef: 'cmd:8' });
    await o.close(); // the "crash": no command result, no settle
    o = await open(d);
    await runtime(o, d);
    await o.close();
    o = await open(d);
    cleanups.push(() => o.close());
    await runtime(o, d);
    const q = await queuedReceipts(o.outbox);
    expect(q.map((x) => [x.receipt.receiptId, x.reason, x.receipt.requestRef])).toEqual([[out.receipt.receiptId, 'purge_complete', 'cmd:8']]);
  });

  it('killed after the command result was queued but before the settle: found in the queue, not sent again', async () => {
    const d = await dev();
    let o = await open(d);
    await enrol(o.privacy, 'org-c', 2);
    await runtime(o, d);
    const out = await o.privacy.purger.withdrawOrg('org-c', { requestRef: 'cmd:9' });
    await o.outbox.enqueueResult('org-c', resultToJson(commandResult(o, out.signed)));
    await o.close();
    o = await open(d);
    cleanups.push(() => o.close());
    await runtime(o, d);
    expect(await o.privacy.journal.pendingReceipts()).toEqual([]);
    const q = await queuedReceipts(o.outbox);
    expect(q.map((x) => [x.receipt.receiptId, x.reason])).toEqual([[out.receipt.receiptId, 'org_withdrawn']]);
  });
});
