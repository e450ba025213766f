/**
 * The ordering/de-duplication stage's accounting, each check seen failing:
 * a dropped, a duplicated, a reordered and a seq-reusing message.
 */
import { describe, expect, it } from 'vitest';
import { PunchLedger, type LedgerPunch } from '../../simulators/cloud/consumer-ledger.js';

const p = (deviceId: string, seq: number, eventId = `${deviceId}-e${seq}`): LedgerPunch => ({ deviceId, seq, eventId });

describe('PunchLedger', () => {
  it('a clean stream: complete, nothing counted', () => {
    const released: number[] = [];
    const l = new PunchLedger({ onRelease: (x) => released.push(x.seq) });
    for (let s = 1; s <= 5; s++) expect(l.add(p('a', s))).toBe('new');
    const r = l.reconcile(new Map([['a', 5]]));
    expect(r).toMatchObject({ lost: 0, duplicates: 0, conflicts: 0, outOfOrder: 0, incompleteDevices: [], unknownDevices: [] });
    expect(released).toEqual([1, 2, 3, 4, 5]);
  });

  it('a dropped message is a loss on that device, and holds back release after it', () => {
    const released: number[] = [];
    const l = new PunchLedger({ onRelease: (x) => released.push(x.seq) });
    for (const s of [1, 2, 4, 5]) l.add(p('a', s));
    const r = l.reconcile(new Map([['a', 5]]));
    expect(r.lost).toBe(1);
    expect(r.incompleteDevices).toEqual(['a']);
    expect(r.devices[0]).toMatchObject({ missing: [3], releasedThrough: 2, complete: false });
    expect(released).toEqual([1, 2]);
  });

  it('a loss at the tail (last seq never arrived) is seen against the device-reported last seq', () => {
    const l = new PunchLedger();
    for (const s of [1, 2, 3]) l.add(p('a', s));
    expect(l.reconcile(new Map([['a', 4]])).devices[0]).toMatchObject({ missing: [4], complete: false });
    // A device that never delivered anything.
    expect(l.reconcile(new Map([['b', 2]])).devices[0]).toMatchObject({ missing: [1, 2], complete: false });
  });

  it('a duplicated message (same event id) is counted and dropped, not released twice', () => {
    const released: number[] = [];
    const l = new PunchLedger({ onRelease: (x) => released.push(x.seq) });
    l.add(p('a', 1));
    l.add(p('a', 2));
    expect(l.add(p('a', 2))).toBe('duplicate');
    const r = l.reconcile(new Map([['a', 2]]));
    expect(r).toMatchObject({ lost: 0, duplicates: 1, conflicts: 0, incompleteDevices: [] });
    expect(released).toEqual([1, 2]);
  });

  it('a reordered message is counted as out of order and released in seq order', () => {
    const released: number[] = [];
    const l = new PunchLedger({ onRelease: (x) => released.push(x.seq) });
    for (const s of [1, 3, 2, 4]) l.add(p('a', s));
    const r = l.reconcile(new Map([['a', 4]]));
    expect(r).toMatchObject({ lost: 0, outOfOrder: 1, incompleteDevices: [] });
    expect(released).toEqual([1, 2, 3, 4]);
  });

  it('a different event id for a seq already held (a device reusing a seq) is a conflict, not a duplicate', () => {
    const l = new PunchLedger();
    l.add(p('a', 1));
    expect(l.add(p('a', 1, 'other-event'))).toBe('conflict');
    const r = l.reconcile(new Map([['a', 1]]));
    expect(r).toMatchObject({ conflicts: 1, duplicates: 0, incompleteDevices: ['a'] });
  });

  it('punches from a device nobody reported are unexplained', () => {
    const l = new PunchLedger();
    l.add(p('ghost', 1));
    expect(l.reconcile(new Map()).unknownDevices).toEqual(['ghost']);
  });
});
