/**
 * Fleet mode end to end (issue 13 §4, §5): full agents in worker processes
 * against a real Mosquitto, two consumers on a shared subscription, chaos
 * killing worker processes (the agents replay their outboxes) and consumers
 * (their un-PUBACKed messages come back on their persistent session).
 * Then the report's own accounting seen failing on a dropped, a duplicated
 * and a reordered message injected between the consumers and the ordering stage.
 * Needs dist/ (npm run build): the workers and consumers are the compiled scripts.
 */
import { describe, expect, it } from 'vitest';
import { fleetOk, formatReport } from '../../simulators/fleet/main.js';
import { runFleet } from '../../simulators/fleet/run.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';

const mosquitto = systemPeer('mosquitto', { pkg: 'mosquitto' });

describeWithPeer(mosquitto, 'fleet mode against Mosquitto', () => {
  it('50 agents, 2 shared-subscription consumers, chaos: nothing lost, duplicates only as repeated event ids, every seq complete', async () => {
    const report = await runFleet({ devices: 50, rate: 1, durationSec: 30, consumers: 2, procs: 2, chaos: true, chaosEverySec: [3, 6], drainTimeoutSec: 150 });
    const text = formatReport(report);
    expect(report.timedOut, text).toBe(false);
    expect(report.sharedSubscriptions).toBe(true);
    // Chaos really happened, to both kinds of process.
    expect(
      report.chaos.some((c) => c.target === 'worker'),
      text,
    ).toBe(true);
    expect(
      report.chaos.some((c) => c.target === 'consumer'),
      text,
    ).toBe(true);
    expect(report.accepted).toBeGreaterThan(0);
    expect(report.delivery.lost, text).toBe(0);
    // A repeated (device, seq) always carried the same event id: no duplicate is anything but a re-send.
    expect(report.delivery.conflicts, text).toBe(0);
    expect(report.delivery.unknownDevices).toEqual([]);
    expect(report.delivery.devicesComplete, text).toBe(50);
    expect(report.delivery.perDevice.every((d) => d.complete && d.missing.length === 0 && d.lastAccepted > 0)).toBe(true);
    expect(fleetOk(report)).toBe(true);
  }, 400_000);

  it('the report sees a dropped, a duplicated and a reordered message, and says so', async () => {
    let dropped = false;
    let duplicated = false;
    let held: [string, number, string, number] | undefined;
    const report = await runFleet({
      devices: 6,
      rate: 2,
      durationSec: 6,
      consumers: 2,
      procs: 1,
      drainTimeoutSec: 60, // a bound, not a wait: the drain ends when the outboxes are empty
      tamper: (items) => {
        const out: typeof items = [];
        for (const it of items) {
          const [device, seq] = it;
          if (!dropped && device === 'fleet-00000' && seq === 3) {
            dropped = true; // taken, so the consumer PUBACKs it: gone for good
            continue;
          }
          if (device === 'fleet-00002' && seq === 2 && !held) {
            held = it; // delivered after seq 3
            continue;
          }
          out.push(it);
          if (device === 'fleet-00002' && seq === 3 && held) out.push(held);
          if (!duplicated && device === 'fleet-00001' && seq === 2) {
            duplicated = true;
            out.push(it);
          }
        }
        return out;
      },
    });
    expect(dropped && duplicated && held !== undefined).toBe(true);
    const byId = new Map(report.delivery.worst.map((d) => [d.deviceId, d]));
    expect(report.delivery.lost).toBe(1);
    expect(report.delivery.incompleteDevices).toEqual(['fleet-00000']);
    expect(byId.get('fleet-00000')).toMatchObject({ missing: [3], complete: false });
    expect(byId.get('fleet-00001')).toMatchObject({ duplicates: 1, complete: true });
    expect(report.delivery.outOfOrder).toBeGreaterThanOrEqual(1);
    // Per device, for scripts (--json): the reordered message is on the device it was done to.
    expect(report.delivery.perDevice).toHaveLength(6);
    expect(report.delivery.perDevice.find((d) => d.deviceId === 'fleet-00002')).toMatchObject({ outOfOrder: 1, missing: [], complete: true });
    expect(fleetOk(report)).toBe(false);
    const text = formatReport(report);
    expect(text).toMatch(/lost 1,/);
    expect(text).toMatch(/fleet-00000: last seq \d+, missing 1 \(3\)/);
    expect(text).toMatch(/FAILED/);
  }, 200_000);
});

describe('fleet mode on the embedded broker', () => {
  it('aedes has no shared subscriptions: one consumer on the plain filter, and the report says so', async () => {
    const report = await runFleet({ devices: 5, rate: 2, durationSec: 4, consumers: 2, procs: 1, broker: 'embedded' });
    expect(report.sharedSubscriptions).toBe(false);
    expect(report.consumers).toBe(1);
    expect(report.notes.join(' ')).toMatch(/no shared subscriptions: one consumer instead of 2/);
    expect(report.delivery.lost).toBe(0);
    expect(report.delivery.devicesComplete).toBe(5);
    expect(report.accepted).toBeGreaterThan(0);
    expect(fleetOk(report)).toBe(true);
  }, 120_000);
});
