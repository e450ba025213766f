/**
 * The egress gate: the ONLY code that publishes to the broker. It accepts
 * exactly four message types — PunchEvent, DeviceState, CommandResult, IncidentReport —
 * (and, before a device has an id, its one ClaimRequest: publishClaimRequest)
 * builds each field by field from a typed input, and encodes it with the
 * generated protobuf code. There is no method that takes bytes or an arbitrary
 * object, so nothing else (a template, a name, a card number) can be handed to
 * it to send.
 *
 * Structural, not by convention (issue 8 §1): outside src/link a connection is
 * an `EgressChannel`, an opaque handle with no methods whose MQTT client sits in
 * a module-private WeakMap. Holding one lets code ask this gate to publish one
 * of the three typed messages, and nothing more; no property, cast or
 * reflection on it yields the client. test/link/egress-types.test.ts compiles
 * a file of attempts that must each fail to type-check.
 */
import type { MqttClient } from 'mqtt';
import { pb, type DeviceStateProps, type CommandResultProps, type IncidentKind, type PunchMethod, type ScoreBucket } from '../proto/index.js';
import { topic } from './topics.js';

/** A connection's client and its in-flight budget. */
interface Wire {
  client: MqttClient;
  /** The broker's Receive Maximum (MQTT 5 CONNACK): QoS 1 publishes it accepts unacknowledged at once. */
  limit: number;
  inflight: number;
  waiting: (() => void)[];
}

const wires = new WeakMap<EgressChannel, Wire>();

/** One live connection, as the rest of the agent sees it: something the gate can publish through. */
export class EgressChannel {
  // A private member makes the type nominal: no object literal or other class is assignable
  // to it. `declare`: type-only, so the instance has no own properties at all.
  declare private readonly nominal: never;
  private constructor() {}

  /**
   * Wrap a client (src/link/connection.ts does, once per connection). Goes one
   * way: nothing unwraps outside this module. `receiveMaximum`: from the MQTT 5
   * CONNACK; mqtt.js does not enforce it, and sending more is a protocol error
   * (the drain's window, 256 by default, is larger than many brokers' 10-32).
   */
  static wrap(client: MqttClient, opts: { receiveMaximum?: number | undefined } = {}): EgressChannel {
    const ch = new EgressChannel();
    const limit = opts.receiveMaximum !== undefined && opts.receiveMaximum >= 1 ? opts.receiveMaximum : Infinity;
    wires.set(ch, { client, limit, inflight: 0, waiting: [] });
    return ch;
  }
}

/** The fields of an incident record that may leave the device (src/incident). */
export interface OutgoingIncident {
  incidentId: string;
  seq: number;
  kind: IncidentKind;
  atMs: number;
  orgIds: readonly string[];
  counts: Readonly<Record<string, number>>;
  detail: string;
  resend: number;
}

/** The fields of a punch that may leave the device. */
export interface OutgoingPunch {
  eventId: string;
  orgId: string;
  subjectId: string;
  method: PunchMethod;
  occurredAtMs: number;
  clockSynced: boolean;
  seq: number;
  matchScore: ScoreBucket;
  liveness: ScoreBucket;
}

export interface EgressOptions {
  deviceId: string;
  /** Organisation operating the device (state and result topics). */
  operatorOrgId: string;
}

async function publish(channel: EgressChannel, t: string, payload: Uint8Array, retain: boolean): Promise<void> {
  const wire = wires.get(channel);
  if (!wire) throw new Error('not an egress channel');
  while (wire.inflight >= wire.limit) await new Promise<void>((r) => wire.waiting.push(r));
  wire.inflight++;
  try {
    await new Promise<void>((resolve, reject) => {
      // QoS 1: the callback fires on PUBACK, which is what the outbox waits for.
      wire.client.publish(t, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), { qos: 1, retain }, (err) => (err ? reject(err) : resolve()));
    });
  } finally {
    wire.inflight--;
    wire.waiting.shift()?.();
  }
}

export class EgressGate {
  constructor(private readonly opts: EgressOptions) {}

  encodePunch(p: OutgoingPunch, ctx: { bdSeq: number; historical: boolean }): Uint8Array {
    return pb.PunchEvent.encode({
      eventId: p.eventId,
      orgId: p.orgId,
      deviceId: this.opts.deviceId,
      subjectId: p.subjectId,
      method: p.method,
      occurredAtMs: p.occurredAtMs,
      clockSynced: p.clockSynced,
      seq: p.seq,
      bdSeq: ctx.bdSeq,
      historical: ctx.historical,
      matchScore: p.matchScore,
      liveness: p.liveness,
    }).finish();
  }

  /** Resolves on PUBACK. */
  publishPunch(channel: EgressChannel, p: OutgoingPunch, ctx: { bdSeq: number; historical: boolean }): Promise<void> {
    return publish(channel, topic(p.orgId, this.opts.deviceId, 'punch'), this.encodePunch(p, ctx), false);
  }

  encodeState(s: DeviceStateProps): Uint8Array {
    return pb.DeviceState.encode({ ...s, deviceId: this.opts.deviceId }).finish();
  }

  stateTopic(): string {
    return topic(this.opts.operatorOrgId, this.opts.deviceId, 'state');
  }

  /** Retained, so a cloud that subscribes later sees the current state. */
  publishState(channel: EgressChannel, s: DeviceStateProps): Promise<void> {
    return publish(channel, this.stateTopic(), this.encodeState(s), true);
  }

  publishResult(channel: EgressChannel, orgId: string, r: CommandResultProps): Promise<void> {
    const payload = pb.CommandResult.encode({ ...r, deviceId: this.opts.deviceId }).finish();
    return publish(channel, topic(orgId, this.opts.deviceId, 'result'), payload, false);
  }

  /**
   * An incident record (src/incident), on the operating org's incident topic,
   * built field by field: kind, counts and org ids, never personal data.
   */
  publishIncident(channel: EgressChannel, i: OutgoingIncident): Promise<void> {
    const payload = pb.IncidentReport.encode({
      deviceId: this.opts.deviceId,
      incidentId: i.incidentId,
      seq: i.seq,
      kind: i.kind,
      atMs: i.atMs,
      orgIds: [...i.orgIds],
      counts: Object.entries(i.counts).map(([name, value]) => ({ name, value })),
      detail: i.detail,
      resend: i.resend,
    }).finish();
    return publish(channel, topic(this.opts.operatorOrgId, this.opts.deviceId, 'incident'), payload, false);
  }

  /** The MQTT will: a retained DEATH on the state topic, registered at connect. */
  will(s: DeviceStateProps): { topic: string; payload: Buffer; qos: 1; retain: true } {
    return { topic: this.stateTopic(), payload: Buffer.from(this.encodeState(s)), qos: 1, retain: true };
  }
}

/** What a device sends when it claims its identity (src/link/claim.ts): no personal data, nothing but these fields. */
export interface OutgoingClaimRequest {
  claimCode: string;
  region: string;
  /** Raw 32-byte Ed25519 public key, base64 (a string: the gate takes no bytes from callers). */
  devicePublicKeyBase64: string;
  /** The request nonce, hex (16 bytes): also the topic level. */
  nonceHex: string;
  sentAtMs: number;
  agentVersion: string;
}

/** Provisioning only: the claim request, built field by field, QoS 1 (resolves on PUBACK). */
export function publishClaimRequest(channel: EgressChannel, claimTopic: string, c: OutgoingClaimRequest): Promise<void> {
  const payload = pb.ClaimRequest.encode({
    claimCode: c.claimCode,
    region: c.region,
    devicePublicKey: Buffer.from(c.devicePublicKeyBase64, 'base64'),
    nonce: Buffer.from(c.nonceHex, 'hex'),
    sentAtMs: c.sentAtMs,
    agentVersion: c.agentVersion,
  }).finish();
  return publish(channel, claimTopic, payload, false);
}
