/**
 * The cloud's punch consumer, scaled out: K of these (processes) share the
 * punch stream through an MQTT 5 shared subscription
 * (`$share/GROUP/tallybox/v1/+/+/punch`). Each decodes a punch and forwards
 * it to the shared ordering/de-duplication stage (consumer-ledger.ts, reached
 * through `forward`); the PUBACK goes to the broker only once `forward` has
 * resolved, so a consumer killed between receiving and forwarding leaves the
 * message unacknowledged and the broker sends it again (at-least-once; the
 * stage drops the second copy by event id).
 *
 * Sessions are persistent by default (clean start off, a session expiry, a
 * fixed client id per consumer slot): a consumer that restarts under the same
 * id gets its unacknowledged in-flight messages again. With a clean session
 * the broker drops them when the consumer leaves (measured in BENCHMARKS.md).
 *
 * The embedded aedes has no shared subscriptions: `shared: false` subscribes
 * to the plain filter (run ONE consumer then, or every consumer gets every punch).
 */
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { pb } from '../../src/proto/index.js';
import { TOPIC_ROOT, parseTopic } from '../../src/link/topics.js';
import { TallyboxError } from '../../src/util/errors.js';

export const PUNCH_FILTER = `${TOPIC_ROOT}/+/+/punch`;

export interface ConsumedPunch {
  deviceId: string;
  seq: number;
  eventId: string;
  /** CLOCK_MONOTONIC (process.hrtime, shared by every process on the host) when the consumer decoded it, in ms. */
  receivedHrMs: number;
}

export interface PunchConsumerOptions {
  url: string;
  /** Shared-subscription group; every consumer of one cloud uses the same group. */
  group?: string;
  /** Consumer slot: the client id is `tallybox-consumer-GROUP-SLOT`, so a restart resumes the session. */
  slot: number;
  /** false: plain subscription (aedes, or a single consumer). Default true. */
  shared?: boolean;
  /** 'persistent' (default): in-flight messages survive a restart; 'clean': they are the broker's to drop. */
  session?: 'persistent' | 'clean';
  /** Hand a batch to the ordering stage; PUBACKs wait for it. */
  forward: (batch: ConsumedPunch[]) => Promise<void>;
  /** Largest batch handed to `forward` at once. */
  batchMax?: number;
  /**
   * How long a batch collects before it goes to the ordering stage, ms
   * (default 5; 0: until the event loop has read what it had). Punches from
   * many devices arrive one by one; each batch is one round trip to the stage,
   * so a few milliseconds of collecting cut the consumer's and the stage's CPU
   * per punch (BENCHMARKS.md, fleet section) for a latency the p99 does not see.
   */
  batchWindowMs?: number;
}

/** The one private mqtt.js method the consumer wraps (see deferPubacks). */
type SendPacket = (packet: { cmd: string; messageId?: number }, cb?: (err?: Error) => void, ...rest: unknown[]) => void;

/**
 * mqtt.js's private `_sendPacket`, which every outgoing packet (PUBACK
 * included) goes through; checked, so an mqtt.js that renamed it fails the
 * consumer's start with a clear error instead of PUBACKing at once unnoticed.
 */
export function privateSendPacket(client: unknown): { get: () => SendPacket; set: (f: SendPacket) => void } {
  const c = client as { _sendPacket?: unknown };
  if (typeof c._sendPacket !== 'function')
    throw new TallyboxError('CONSUMER_MQTT_INTERNALS', 'this mqtt.js has no _sendPacket: the consumer cannot hold PUBACKs until the ordering stage has a punch (mqtt 5.16 has it; see simulators/cloud/consumer.ts)');
  return { get: () => c._sendPacket as SendPacket, set: (f) => void (c._sendPacket = f) };
}

export const hrNowMs = (): number => Number(process.hrtime.bigint() / 1000n) / 1000;

export class PunchConsumer {
  private client: MqttClient | undefined;
  private batch: { punch: ConsumedPunch; messageId: number | undefined }[] = [];
  private flushTimer: { cancel: () => void } | undefined;
  /** messageId → the forward that must finish before its PUBACK goes out (this connection only). */
  private readonly gates = new Map<number, Promise<void>>();
  private generation = 0;
  counters = { received: 0, forwarded: 0, malformed: 0, pubacksDropped: 0 };

  constructor(private readonly opts: PunchConsumerOptions) {}

  get clientId(): string {
    return `tallybox-consumer-${this.opts.group ?? 'cloud'}-${this.opts.slot}`;
  }

  get filter(): string {
    return this.opts.shared === false ? PUNCH_FILTER : `$share/${this.opts.group ?? 'cloud'}/${PUNCH_FILTER}`;
  }

  async start(): Promise<void> {
    const persistent = this.opts.session !== 'clean';
    const options: IClientOptions = {
      clientId: this.clientId,
      protocolVersion: this.opts.shared === false ? 4 : 5,
      clean: !persistent,
      reconnectPeriod: 200,
      // Bounded in-flight window from the broker (MQTT 5 receive maximum).
      ...(this.opts.shared === false ? {} : { properties: { sessionExpiryInterval: persistent ? 3600 : 0, receiveMaximum: 1000 } }),
    };
    const client = mqtt.connect(this.opts.url, options);
    this.client = client;
    try {
      this.deferPubacks(client);
    } catch (err) {
      client.end(true);
      throw err;
    }
    client.handleMessage = (packet, cb) => {
      this.onPublish(packet);
      cb();
    };
    client.on('connect', () => {
      // A new connection: PUBACKs still waiting belong to the old one (the broker resends those messages).
      this.generation++;
      this.gates.clear();
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    // Subscribed on every connection: a clean session lost it, and re-subscribing a persistent one is harmless.
    await client.subscribeAsync(this.filter, { qos: 1 });
    client.on('connect', () => void client.subscribeAsync(this.filter, { qos: 1 }).catch(() => undefined /* the next reconnect subscribes again */));
  }

  /**
   * mqtt.js's public way to delay a PUBACK is handleMessage(packet, callback)
   * (or the MQTT 5 option customHandleAcks): the PUBACK goes out when it calls
   * back. But mqtt.js also reads the next packet only then (it handles
   * incoming packets one at a time), so waiting there for the ordering stage
   * allows one message per round trip to the stage and no batching: measured
   * on Mosquitto, one consumer whose stage is another process took 2,600
   * msg/s that way against 5,650 msg/s here at load 8, and each message is its
   * own IPC round trip (BENCHMARKS.md, fleet section). So handleMessage calls
   * back at once and the PUBACK packet itself is held until that message's
   * forward has resolved (and dropped if the connection changed meanwhile, so
   * a stale PUBACK never acknowledges a different message on a new
   * connection). test/fleet/consumer-puback.test.ts pins the property.
   */
  private deferPubacks(client: MqttClient): void {
    const c = privateSendPacket(client);
    const send = c.get().bind(client) as SendPacket;
    c.set((packet, cb, ...rest) => {
      const gate = packet.cmd === 'puback' && packet.messageId !== undefined ? this.gates.get(packet.messageId) : undefined;
      if (!gate) return send(packet, cb, ...rest);
      this.gates.delete(packet.messageId!);
      const gen = this.generation;
      cb?.(); // let mqtt.js read on; the acknowledgement follows the forward
      gate.then(
        () => {
          if (gen === this.generation && client.connected) send(packet, undefined, ...rest);
          else this.counters.pubacksDropped++;
        },
        () => {
          // Not forwarded: no PUBACK, the broker redelivers it (on this session's next connection).
          this.counters.pubacksDropped++;
        },
      );
    });
  }

  private onPublish(packet: IPublishPacket): void {
    const parsed = parseTopic(packet.topic);
    if (parsed?.kind !== 'punch') return;
    let p: ReturnType<typeof pb.PunchEvent.decode>;
    try {
      p = pb.PunchEvent.decode(packet.payload as Buffer);
    } catch {
      this.counters.malformed++;
      return; // acknowledged and dropped: a payload that does not decode will not decode next time either
    }
    this.counters.received++;
    const punch: ConsumedPunch = { deviceId: p.deviceId, seq: Number(p.seq), eventId: p.eventId, receivedHrMs: hrNowMs() };
    const entry = { punch, messageId: packet.qos > 0 ? packet.messageId : undefined };
    this.batch.push(entry);
    const forwarded = this.flushPromise();
    if (entry.messageId !== undefined) this.gates.set(entry.messageId, forwarded);
    if (this.batch.length >= (this.opts.batchMax ?? 500)) this.flush();
  }

  private pending: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | undefined;

  /** The promise of the batch being collected (resolved when it is forwarded). */
  private flushPromise(): Promise<void> {
    if (!this.pending) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      promise.catch(() => undefined); // observed per message in deferPubacks
      this.pending = { promise, resolve, reject };
      const windowMs = this.opts.batchWindowMs ?? 5;
      if (windowMs > 0) {
        const t = setTimeout(() => this.flush(), windowMs);
        this.flushTimer = { cancel: () => clearTimeout(t) };
      } else {
        const t = setImmediate(() => this.flush());
        this.flushTimer = { cancel: () => clearImmediate(t) };
      }
    }
    return this.pending.promise;
  }

  private flush(): void {
    this.flushTimer?.cancel();
    this.flushTimer = undefined;
    const batch = this.batch;
    const pending = this.pending;
    this.batch = [];
    this.pending = undefined;
    if (batch.length === 0) return pending?.resolve();
    this.opts.forward(batch.map((b) => b.punch)).then(
      () => {
        this.counters.forwarded += batch.length;
        pending?.resolve();
      },
      (err: unknown) => pending?.reject(err),
    );
  }

  /** Leave with a DISCONNECT, after the PUBACKs of what was forwarded. */
  async stop(): Promise<void> {
    await this.client?.endAsync(false);
  }

  /** Leave as a SIGKILL would: socket destroyed, no DISCONNECT, no reconnect (measurements of a consumer leaving). */
  abort(): void {
    this.client?.end(true);
  }
}
