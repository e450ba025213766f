/**
 * The shared ordering and de-duplication stage behind the scaled-out punch
 * consumers (simulators/cloud/consumer.ts).
 *
 * Why one stage and not per-consumer state: with MQTT 5 shared subscriptions
 * the broker deals ONE device's punches round-robin over the group, so no
 * single consumer sees a device's whole stream — a consumer can neither tell
 * a duplicate (the copy went to a sibling) nor a gap (the missing seq is at a
 * sibling). De-duplication by event id and release in (device, seq) order
 * need every copy in one place: consumers forward each punch here and only
 * PUBACK the broker once this stage has taken it (at-least-once end to end).
 * In production the same stage is a table with `event_id` primary key and
 * UNIQUE (device, seq) in the cloud's database; here it is in memory in the
 * fleet coordinator, which chaos never kills.
 *
 * What it counts, per device, from (device, seq) alone:
 * - duplicate: an event id seen before (an outbox replay after a crash, a
 *   broker redelivery) — expected, harmless, dropped;
 * - conflict: a NEW event id for a (device, seq) already held — a device that
 *   reused a sequence number; never expected;
 * - out of order: a first copy arriving with a seq lower than one already
 *   seen for that device (normal with several consumers; the release below
 *   puts them back in order);
 * - released: punches handed on in seq order without holes; `released` per
 *   device is the contiguous prefix 1..n;
 * - missing: at the end, seqs up to the device's last accepted seq that never arrived.
 */

export interface LedgerPunch {
  deviceId: string;
  seq: number;
  eventId: string;
}

export interface DeviceAccount {
  deviceId: string;
  /** Distinct punches (first copies). */
  received: number;
  duplicates: number;
  conflicts: number;
  outOfOrder: number;
  /** Highest seq released in order (the contiguous prefix from `firstSeq`). */
  releasedThrough: number;
  highestSeen: number;
  /** Waiting for a lower seq before they can be released. */
  held: number;
}

export type Verdict = 'new' | 'duplicate' | 'conflict';

interface DeviceState {
  account: DeviceAccount;
  /** seq → event id for everything not yet released (released seqs keep their event id in `events`). */
  pending: Map<number, string>;
  /** seq → event id for every first copy (to tell a conflict from a duplicate). */
  bySeq: Map<number, string>;
}

export class PunchLedger {
  private readonly devices = new Map<string, DeviceState>();
  private readonly events = new Set<string>();
  private totals = { received: 0, duplicates: 0, conflicts: 0, outOfOrder: 0 };

  /**
   * @param firstSeq the seq a fresh device starts at (the outbox numbers from 1)
   * @param onRelease called for each punch in (device, seq) order, exactly once per seq
   */
  constructor(private readonly opts: { firstSeq?: number; onRelease?: (p: LedgerPunch) => void } = {}) {}

  add(p: LedgerPunch): Verdict {
    const d = this.device(p.deviceId);
    if (this.events.has(p.eventId)) {
      d.account.duplicates++;
      this.totals.duplicates++;
      return 'duplicate';
    }
    const holder = d.bySeq.get(p.seq);
    if (holder !== undefined) {
      d.account.conflicts++;
      this.totals.conflicts++;
      return 'conflict';
    }
    this.events.add(p.eventId);
    d.bySeq.set(p.seq, p.eventId);
    d.account.received++;
    this.totals.received++;
    if (p.seq < d.account.highestSeen) {
      d.account.outOfOrder++;
      this.totals.outOfOrder++;
    }
    d.account.highestSeen = Math.max(d.account.highestSeen, p.seq);
    d.pending.set(p.seq, p.eventId);
    this.release(p.deviceId, d);
    return 'new';
  }

  private release(deviceId: string, d: DeviceState): void {
    for (;;) {
      const next = d.account.releasedThrough + 1;
      const eventId = d.pending.get(next);
      if (eventId === undefined) break;
      d.pending.delete(next);
      d.account.releasedThrough = next;
      this.opts.onRelease?.({ deviceId, seq: next, eventId });
    }
    d.account.held = d.pending.size;
  }

  private device(id: string): DeviceState {
    let d = this.devices.get(id);
    if (!d) {
      const first = this.opts.firstSeq ?? 1;
      d = { account: { deviceId: id, received: 0, duplicates: 0, conflicts: 0, outOfOrder: 0, releasedThrough: first - 1, highestSeen: 0, held: 0 }, pending: new Map(), bySeq: new Map() };
      this.devices.set(id, d);
    }
    return d;
  }

  has(eventId: string): boolean {
    return this.events.has(eventId);
  }

  account(deviceId: string): DeviceAccount | undefined {
    const d = this.devices.get(deviceId);
    return d ? { ...d.account } : undefined;
  }

  stats(): { received: number; duplicates: number; conflicts: number; outOfOrder: number; devices: number } {
    return { ...this.totals, devices: this.devices.size };
  }

  /**
   * Per-device delivery against what each device says it accepted (its
   * outbox's last seq): the seqs in firstSeq..lastSeq that never arrived.
   */
  reconcile(lastAccepted: ReadonlyMap<string, number>): DeliveryReport {
    const first = this.opts.firstSeq ?? 1;
    const devices: DeviceDelivery[] = [];
    for (const [deviceId, last] of lastAccepted) {
      const d = this.devices.get(deviceId);
      const missing: number[] = [];
      for (let s = first; s <= last; s++) if (!d?.bySeq.has(s)) missing.push(s);
      const a = d?.account;
      devices.push({
        deviceId,
        lastAccepted: last,
        received: a?.received ?? 0,
        missing,
        duplicates: a?.duplicates ?? 0,
        conflicts: a?.conflicts ?? 0,
        outOfOrder: a?.outOfOrder ?? 0,
        releasedThrough: a?.releasedThrough ?? first - 1,
        complete: missing.length === 0 && (a?.conflicts ?? 0) === 0 && (a?.releasedThrough ?? first - 1) >= last,
      });
    }
    // A device the producers never reported but the consumers heard from: its punches are unexplained.
    const unknown = [...this.devices.keys()].filter((id) => !lastAccepted.has(id));
    const lost = devices.reduce((n, d) => n + d.missing.length, 0);
    return {
      devices,
      lost,
      duplicates: devices.reduce((n, d) => n + d.duplicates, 0),
      conflicts: devices.reduce((n, d) => n + d.conflicts, 0),
      outOfOrder: devices.reduce((n, d) => n + d.outOfOrder, 0),
      incompleteDevices: devices.filter((d) => !d.complete).map((d) => d.deviceId),
      unknownDevices: unknown,
    };
  }
}

export interface DeviceDelivery {
  deviceId: string;
  lastAccepted: number;
  received: number;
  missing: number[];
  duplicates: number;
  conflicts: number;
  outOfOrder: number;
  releasedThrough: number;
  complete: boolean;
}

export interface DeliveryReport {
  devices: DeviceDelivery[];
  lost: number;
  duplicates: number;
  conflicts: number;
  outOfOrder: number;
  incompleteDevices: string[];
  unknownDevices: string[];
}
