/**
 * The cloud side of the punch path: subscribes to every device's punches,
 * state and results, decodes them, de-duplicates punches by event id and
 * counts sequence gaps per device. It connects to any MQTT broker (the
 * embedded aedes or a real Mosquitto).
 */
import mqtt, { type MqttClient } from 'mqtt';
import { pb, type CommandBodyProps, type CommandResult, type DeviceState, type PunchEvent } from '../../src/proto/index.js';
import { TOPIC_ROOT, parseTopic, topic } from '../../src/link/topics.js';
import { PRINT_JOB_STATUS_REASON } from '../../src/roles/p1/states.js';
import { TallyboxError } from '../../src/util/errors.js';
import type { CommandSigner } from './signer.js';

export interface SinkStats {
  /** Distinct event ids received. */
  received: number;
  duplicates: number;
  historical: number;
  malformed: number;
  /** Sum over devices of sequence numbers missing between the lowest and highest seen. */
  gaps: number;
}

interface DeviceSeqs {
  seqs: Set<number>;
  min: number;
  max: number;
}

export interface CloudSinkOptions {
  url: string;
  clientId?: string;
  /**
   * Keep a persistent session (clean=false): the broker queues QoS 1 messages
   * while the sink is away, as a production cloud consumer would. Needs a fixed clientId.
   */
  persistent?: boolean;
  onPunch?: (p: PunchEvent, info: { duplicate: boolean }) => void;
  onState?: (s: DeviceState, topic: string) => void;
  onResult?: (r: CommandResult, topic: string) => void;
}

export class CloudSink {
  private readonly events = new Map<string, PunchEvent>();
  private readonly devices = new Map<string, DeviceSeqs>();
  private readonly latestState = new Map<string, DeviceState>();
  private readonly results: { result: CommandResult; raw: Buffer; topic: string }[] = [];
  private readonly counters = { duplicates: 0, historical: 0, malformed: 0 };
  private waiters: { n: number; resolve: () => void }[] = [];

  private constructor(
    readonly client: MqttClient,
    private readonly opts: CloudSinkOptions,
  ) {}

  static async connect(opts: CloudSinkOptions): Promise<CloudSink> {
    const client = mqtt.connect(opts.url, {
      clientId: opts.clientId ?? `tallybox-cloud-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
      clean: !opts.persistent,
      reconnectPeriod: 200,
      protocolVersion: 4,
    });
    const sink = new CloudSink(client, opts);
    client.on('message', (t, payload) => sink.onMessage(t, payload));
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await client.subscribeAsync([`${TOPIC_ROOT}/+/+/punch`, `${TOPIC_ROOT}/+/+/state`, `${TOPIC_ROOT}/+/+/result`], { qos: 1 });
    return sink;
  }

  private onMessage(t: string, payload: Buffer): void {
    const parsed = parseTopic(t);
    if (!parsed) return;
    try {
      if (parsed.kind === 'punch') this.onPunch(pb.PunchEvent.decode(payload));
      else if (parsed.kind === 'state') {
        if (payload.length === 0) return; // retained message cleared
        const s = pb.DeviceState.decode(payload);
        this.latestState.set(parsed.deviceId, s);
        this.opts.onState?.(s, t);
      } else if (parsed.kind === 'result') {
        const r = pb.CommandResult.decode(payload);
        this.results.push({ result: r, raw: Buffer.from(payload), topic: t });
        this.opts.onResult?.(r, t);
      }
    } catch {
      this.counters.malformed++;
    }
  }

  private onPunch(p: PunchEvent): void {
    const duplicate = this.events.has(p.eventId);
    if (duplicate) this.counters.duplicates++;
    else {
      this.events.set(p.eventId, p);
      if (p.historical) this.counters.historical++;
      let d = this.devices.get(p.deviceId);
      if (!d) this.devices.set(p.deviceId, (d = { seqs: new Set(), min: p.seq, max: p.seq }));
      d.seqs.add(p.seq);
      d.min = Math.min(d.min, p.seq);
      d.max = Math.max(d.max, p.seq);
    }
    this.opts.onPunch?.(p, { duplicate });
    if (!duplicate) this.resolveWaiters();
  }

  private resolveWaiters(): void {
    const n = this.events.size;
    this.waiters = this.waiters.filter((w) => (w.n <= n ? (w.resolve(), false) : true));
  }

  stats(): SinkStats {
    let gaps = 0;
    for (const d of this.devices.values()) gaps += d.max - d.min + 1 - d.seqs.size;
    return { received: this.events.size, ...this.counters, gaps };
  }

  has(eventId: string): boolean {
    return this.events.has(eventId);
  }

  punches(): PunchEvent[] {
    return [...this.events.values()];
  }

  state(deviceId: string): DeviceState | undefined {
    return this.latestState.get(deviceId);
  }

  commandResults(): readonly CommandResult[] {
    return this.results.map((r) => r.result);
  }

  /** Results with their exact bytes (signature checks are byte-exact). */
  rawResults(): readonly { result: CommandResult; raw: Buffer; topic: string }[] {
    return this.results;
  }

  /**
   * Resolve with the command's answer: the first result with this counter that
   * is not a print job's later status (those share the PrintJob's counter).
   */
  async waitForResult(counter: number, timeoutMs = 30_000): Promise<{ result: CommandResult; raw: Buffer; topic: string }> {
    const end = performance.now() + timeoutMs;
    for (;;) {
      const hit = this.results.find((r) => r.result.counter === counter && r.result.reason !== PRINT_JOB_STATUS_REASON);
      if (hit) return hit;
      if (performance.now() > end) throw new Error(`timed out waiting for the result of command ${counter}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Resolve when `n` distinct punches have arrived; reject after `timeoutMs`. */
  waitForPunches(n: number, timeoutMs = 30_000): Promise<void> {
    if (this.events.size >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${n} punches (have ${this.events.size})`)), timeoutMs);
      this.waiters.push({ n, resolve: () => (clearTimeout(t), resolve()) });
    });
  }

  /** Sign a command and publish it to the device's cmd topic. */
  async sendCommand(signer: CommandSigner, orgId: string, deviceId: string, body: CommandBodyProps): Promise<Buffer> {
    const bytes = signer.sign({ deviceId, orgId, ...body });
    const to = topic(orgId, deviceId, 'cmd');
    this.refuseOversized(deviceId, to, bytes);
    await this.client.publishAsync(to, bytes, { qos: 1 });
    return bytes;
  }

  /**
   * A device drops a packet over its announced limit unread (it cannot even
   * learn the command id to answer it), so the cloud must refuse to send one:
   * otherwise it waits for a result that never comes. The limit is taken from
   * the device's latest DeviceState; a device not heard from yet is not checked.
   */
  private refuseOversized(deviceId: string, to: string, payload: Buffer): void {
    const limit = Number(this.latestState.get(deviceId)?.maxIncomingPacketBytes ?? 0);
    if (limit <= 0) return;
    const bytes = publishPacketBytes(to, payload.length);
    if (bytes > limit) {
      throw new TallyboxError('COMMAND_TOO_LARGE', `a command of ${bytes} bytes exceeds device ${deviceId}'s incoming packet limit of ${limit} bytes: it would be dropped unread and never answered`, { deviceId, bytes, limit });
    }
  }

  /** Publish raw bytes to a device's cmd topic (replay and forgery tests). */
  async sendRaw(orgId: string, deviceId: string, bytes: Buffer): Promise<void> {
    await this.client.publishAsync(topic(orgId, deviceId, 'cmd'), bytes, { qos: 1 });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

/**
 * Upper bound of a QoS 1 PUBLISH's size on the wire: type byte, remaining
 * length (≤ 4 bytes), topic length + topic, packet id, MQTT 5 properties
 * length (1 byte, none sent), payload.
 */
export function publishPacketBytes(topicName: string, payloadBytes: number): number {
  return 1 + 4 + 2 + Buffer.byteLength(topicName) + 2 + 1 + payloadBytes;
}
