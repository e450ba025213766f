/**
 * The cloud emulator's incident desk: subscribes to every device's incident
 * topic (tallybox/v1/{org}/{device}/incident), keeps each record once by its
 * id (counting re-sends), and acknowledges with a signed IncidentAck command
 * through the sink's command path — automatically when `autoAck` is set.
 * An unacknowledged record keeps coming back from the device.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { pb, type IncidentKind } from '../../src/proto/index.js';
import { TOPIC_ROOT, parseTopic } from '../../src/link/topics.js';
import type { CommandSigner } from './signer.js';
import type { CloudSink } from './sink.js';

export interface ReceivedIncident {
  deviceId: string;
  orgId: string;
  incidentId: string;
  seq: number;
  kind: IncidentKind;
  atMs: number;
  orgIds: string[];
  counts: Record<string, number>;
  detail: string;
  /** How many times it arrived. */
  received: number;
  acked: boolean;
}

export interface DeskOptions {
  /** With a signer: IncidentAck commands go through the sink's command path. */
  sink?: CloudSink;
  signer?: CommandSigner;
  /** Acknowledge every record as it arrives (the emulator's default). */
  autoAck?: boolean;
  /** Told of every record the first time it arrives. */
  onIncident?: (i: ReceivedIncident) => void;
}

export class IncidentDesk {
  private readonly byId = new Map<string, ReceivedIncident>();
  malformed = 0;

  private constructor(
    readonly client: MqttClient,
    private readonly opts: DeskOptions,
  ) {}

  static async connect(opts: DeskOptions & { url: string }): Promise<IncidentDesk> {
    const client = await mqtt.connectAsync(opts.url, { clientId: `tallybox-incidents-${process.pid}-${Math.random().toString(16).slice(2, 8)}`, protocolVersion: 4, reconnectPeriod: 200 });
    const desk = new IncidentDesk(client, opts);
    client.on('message', (t, payload) => desk.onMessage(t, payload));
    await client.subscribeAsync(`${TOPIC_ROOT}/+/+/incident`, { qos: 1 });
    return desk;
  }

  private onMessage(t: string, payload: Buffer): void {
    const parsed = parseTopic(t);
    if (parsed?.kind !== 'incident') return;
    let r: ReturnType<typeof pb.IncidentReport.decode>;
    try {
      r = pb.IncidentReport.decode(payload);
    } catch {
      this.malformed++;
      return;
    }
    const known = this.byId.get(r.incidentId);
    if (known) known.received++;
    else {
      this.byId.set(r.incidentId, {
        deviceId: r.deviceId,
        orgId: parsed.orgId,
        incidentId: r.incidentId,
        seq: Number(r.seq),
        kind: r.kind,
        atMs: Number(r.atMs),
        orgIds: [...r.orgIds],
        counts: Object.fromEntries(r.counts.map((c) => [c.name, Number(c.value)])),
        detail: r.detail,
        received: 1,
        acked: false,
      });
      this.opts.onIncident?.(this.byId.get(r.incidentId)!);
    }
    if (this.opts.autoAck && this.opts.sink && this.opts.signer) {
      // A failed ack is harmless: the device sends the record again and it is acknowledged then.
      this.ack(parsed.orgId, r.deviceId, [r.incidentId]).catch(() => undefined);
    }
  }

  incidents(): ReceivedIncident[] {
    return [...this.byId.values()].sort((a, b) => a.seq - b.seq);
  }

  /** Send a signed IncidentAck for these ids (default: every one received from the device). */
  async ack(orgId: string, deviceId: string, ids?: readonly string[]): Promise<void> {
    const { sink, signer } = this.opts;
    if (!sink || !signer) throw new Error('IncidentDesk.ack needs a sink and a signer');
    const list =
      ids ??
      this.incidents()
        .filter((i) => i.deviceId === deviceId)
        .map((i) => i.incidentId);
    await sink.sendCommand(signer, orgId, deviceId, { incidentAck: { incidentIds: [...list] } });
    for (const id of list) {
      const i = this.byId.get(id);
      if (i) i.acked = true;
    }
  }

  close(): Promise<void> {
    return this.client.endAsync(true);
  }
}
