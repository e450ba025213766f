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
import type { PunchRecords } from '../outbox/records.js';
import { encodePunchRecords, type EncodedBatch } from './punch-encoder.js';
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

const QOS1 = { qos: 1, retain: false } as const;
const QOS1_RETAIN = { qos: 1, retain: true } as const;

/**
 * Publish at QoS 1; `done` runs on the PUBACK (or the error). Callback-shaped, not a
 * promise: the drain publishes up to its whole window per event-loop turn, and a promise
 * pair and an async frame per message cost it as much as mqtt.js's own work (issue 10 §5).
 * Over the broker's Receive Maximum the publish waits in the connection's queue.
 */
function send(wire: Wire, t: string, payload: Buffer, retain: boolean, done: (err?: Error) => void): void {
  if (wire.inflight >= wire.limit) {
    wire.waiting.push(() => send(wire, t, payload, retain, done));
    return;
  }
  wire.inflight++;
  const settle = (err?: Error): void => {
    wire.inflight--;
    wire.waiting.shift()?.();
    // An error is reported on a later microtask, as a rejected promise would be: mqtt.js fails
    // every in-flight publish synchronously inside end(), i.e. inside the link's own teardown,
    // which must not be re-entered (recycle → lost → end → recycle …).
    if (err) queueMicrotask(() => done(err));
    else done();
  };
  try {
    // QoS 1: the callback fires on PUBACK, which is what the outbox waits for.
    wire.client.publish(t, payload, retain ? QOS1_RETAIN : QOS1, settle);
  } catch (err) {
    // mqtt.js throws from publish on a client already closed (its store is gone): an error like any other.
    settle(err instanceof Error ? err : new Error(String(err)));
  }
}

function wireOf(channel: EgressChannel): Wire {
  const wire = wires.get(channel);
  if (!wire) throw new Error('not an egress channel');
  return wire;
}

function publish(channel: EgressChannel, t: string, payload: Uint8Array, retain: boolean): Promise<void> {
  let wire: Wire;
  try {
    wire = wireOf(channel);
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise<void>((resolve, reject) => send(wire, t, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), retain, (err) => (err ? reject(err) : resolve())));
}

/** What an EncodedPunches holds: module-private, like the wires (nothing outside reads or forges it). */
interface Encoded {
  batch: EncodedBatch;
  topics: string[];
}

const encodedBatches = new WeakMap<EncodedPunches, Encoded>();

/**
 * A batch of queued punches encoded by the gate (EgressGate.encodeRecords),
 * ready to publish one by one. Opaque: only the gate makes one, and holding
 * one lets code ask the gate to publish those punches, nothing else.
 */
export class EncodedPunches {
  declare private readonly nominal: never;
  private constructor() {}

  get count(): number {
    return encodedBatches.get(this)?.batch.ends.length ?? 0;
  }
}

function makeEncoded(batch: EncodedBatch, topicOf: (org: string) => string): EncodedPunches {
  const topics: string[] = new Array(batch.orgs.length);
  let t = '';
  for (let i = 0; i < batch.orgs.length; i++) {
    const o = batch.orgs[i]!;
    if (i === 0 || o !== batch.orgs[i - 1]) t = topicOf(o);
    topics[i] = t;
  }
  // The private constructor keeps every other module from making one; this module makes it without running it.
  const e = Object.create(EncodedPunches.prototype) as EncodedPunches;
  encodedBatches.set(e, { batch, topics });
  return e;
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

  /**
   * Encode a batch of queued punches read from the outbox, each as a PunchEvent of
   * this device and connection; punches at or below `historicalUpTo` are flagged historical.
   */
  encodeRecords(recs: PunchRecords, ctx: { bdSeq: number; historicalUpTo: number }): EncodedPunches {
    return makeEncoded(encodePunchRecords(recs, this.opts.deviceId, ctx.bdSeq, ctx.historicalUpTo), (org) => topic(org, this.opts.deviceId, 'punch'));
  }

  /** Publish punch i of an encoded batch; `done` runs on its PUBACK (or with the error). */
  publishEncoded(channel: EgressChannel, batch: EncodedPunches, i: number, done: (err?: Error) => void): void {
    const e = encodedBatches.get(batch);
    if (!e) throw new Error('not an encoded batch');
    const { buf, ends } = e.batch;
    send(wireOf(channel), e.topics[i]!, buf.subarray(i === 0 ? 0 : ends[i - 1]!, ends[i]!), false, done);
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
