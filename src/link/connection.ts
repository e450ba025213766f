/**
 * The MQTT connection: one state machine, reconnect with full-jitter backoff,
 * a fresh `bd_seq` and will for every connection (Sparkplug-style presence),
 * a retained birth on every connect, and command intake.
 *
 * mqtt.js's own reconnect is off (reconnectPeriod 0): its will is fixed per
 * client, and each connection needs a will carrying its own bd_seq, so every
 * attempt builds a new client. Its offline queue is never relied on: the
 * outbox re-sends anything not acknowledged.
 *
 * The MQTT client never leaves src/link: the link keeps it in an ES
 * private field (no property, cast or reflection reaches it) and hands the
 * rest of the agent an `EgressChannel`, through which only the egress gate's
 * three typed messages can be published.
 */
import type { LookupFunction } from 'node:net';
import type { MqttClient } from 'mqtt';
import type { Config } from '../config/schema.js';
import type { DeviceStateProps } from '../proto/index.js';
import { Lifecycle, LinkStatus, LinkTransport } from '../proto/index.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { EgressChannel, type EgressGate } from './egress.js';
import { PACKET_TYPES } from './packet-gate.js';
import { brokerSecurity, type BrokerSecurity } from './security.js';
import { LinkStateMachine, backoffDelay, type LinkState } from './state-machine.js';
import { commandFilter } from './topics.js';
import { MAX_INCOMING_PACKET_BYTES, createClient, isUnsupportedVersion, loadTlsMaterial, type TlsMaterial } from './transport.js';

/** The default packet limit, for callers that size a larger one (a P1 device's inline documents); they get no client from here. */
export { MAX_INCOMING_PACKET_BYTES };

export interface Session {
  /** What the egress gate publishes through; it yields no MQTT client. */
  readonly client: EgressChannel;
  readonly bdSeq: number;
  /** Device clock when this connection came up; older punches are backlog. */
  readonly connectedAtMs: number;
}

export interface MqttLinkOptions {
  config: Pick<Config, 'device' | 'region' | 'broker'>;
  egress: EgressGate;
  logger: Logger;
  /** Next connection counter, persisted before use (the outbox keeps it). */
  nextBdSeq: () => Promise<number>;
  /** Current device state for birth and death messages (lifecycle, link and bd_seq are set here). */
  state: () => DeviceStateProps;
  onOnline?: (s: Session) => void;
  onOffline?: (reason: string) => void;
  /** Raw command bytes from .../cmd; verification happens in the handler. */
  onCommand?: (topic: string, payload: Buffer) => void;
  now?: () => number;
  /** Name resolution for the broker host (tests map a region name to 127.0.0.1). Default: DNS. */
  lookup?: LookupFunction;
  /** Largest incoming MQTT packet; larger ones are dropped unread. Default MAX_INCOMING_PACKET_BYTES. */
  maxPacketBytes?: number;
}

/** The link fields of DeviceState, as the agent reports them (GET /v1/state, UPDATE). */
export type LinkPresence = Required<Pick<DeviceStateProps, 'link' | 'linkTransport' | 'oversizedPacketsDropped' | 'maxIncomingPacketBytes'>>;

const STATUS: Readonly<Record<LinkState, LinkStatus>> = {
  idle: LinkStatus.LINK_STATUS_OFFLINE,
  connecting: LinkStatus.LINK_STATUS_CONNECTING,
  online: LinkStatus.LINK_STATUS_ONLINE,
  backoff: LinkStatus.LINK_STATUS_OFFLINE,
  closing: LinkStatus.LINK_STATUS_STOPPED,
  closed: LinkStatus.LINK_STATUS_STOPPED,
};

export class MqttLink {
  readonly #opts: MqttLinkOptions;
  readonly #sm: LinkStateMachine;
  #session: Session | undefined;
  #client: MqttClient | undefined;
  /** The bd_seq of #client's connection (its will carries it). */
  #clientBdSeq = 0;
  /** #client's channel once connected (birth, session, clean death share its in-flight budget). */
  #channel: EgressChannel | undefined;
  #timer: NodeJS.Timeout | undefined;
  #attempt = 0;
  #retryNow = false;
  #unusedBdSeq: number | undefined;
  readonly #now: () => number;
  readonly #security: BrokerSecurity;
  readonly #tls: TlsMaterial;
  readonly #maxPacketBytes: number;
  /** 5 until a broker refuses it (in 'auto'), then 3.1.1 for the life of the link. */
  #version: 4 | 5;
  #dropped = 0;

  constructor(opts: MqttLinkOptions) {
    this.#opts = opts;
    const { broker, region } = opts.config;
    // Refuse before any socket is opened: region pinning and TLS policy are not runtime retries.
    this.#security = brokerSecurity(broker, region);
    this.#tls = loadTlsMaterial(broker.tls);
    this.#version = broker.mqttVersion === '3.1.1' ? 4 : 5;
    this.#maxPacketBytes = opts.maxPacketBytes ?? MAX_INCOMING_PACKET_BYTES;
    this.#now = opts.now ?? Date.now;
    this.#sm = new LinkStateMachine((from, to) => opts.logger.info({ event: 'link_state', from, to }, `link ${from} → ${to}`));
    this.#logTransport();
  }

  get state(): LinkState {
    return this.#sm.state;
  }

  /** The live session, or undefined when not online. */
  get current(): Session | undefined {
    return this.#sm.state === 'online' ? this.#session : undefined;
  }

  /** Link fields for DeviceState. */
  presence(): LinkPresence {
    const s = this.#security;
    return {
      link: STATUS[this.#sm.state],
      linkTransport: s.allowedBy === 'verified-tls' && !s.loopback ? LinkTransport.LINK_TRANSPORT_VERIFIED_TLS : s.loopback ? LinkTransport.LINK_TRANSPORT_LOOPBACK : LinkTransport.LINK_TRANSPORT_INSECURE_BRIDGE,
      oversizedPacketsDropped: this.#dropped,
      maxIncomingPacketBytes: this.#maxPacketBytes,
    };
  }

  start(): void {
    if (this.#sm.state !== 'idle') return;
    void this.#connect();
  }

  /** Drop the connection and reconnect (e.g. PUBACKs stopped arriving). */
  recycle(reason: string): void {
    if (this.#sm.state !== 'online' && this.#sm.state !== 'connecting') return;
    this.#opts.logger.warn({ event: 'link_recycle', reason }, `reconnecting: ${reason}`);
    this.#lost(reason);
  }

  /**
   * Clean shutdown: publish a DEATH carrying the current state, then send
   * DISCONNECT, which tells the broker to discard the will. (Ending without
   * DISCONNECT made the broker publish the will — the DEATH registered at
   * connect, with that moment's queue depth and last seq — over the clean one.)
   */
  async stop(): Promise<void> {
    if (this.#sm.state === 'closed' || this.#sm.state === 'closing') return;
    const client = this.#client;
    const channel = this.#channel;
    const bdSeq = this.#clientBdSeq;
    this.#sm.to('closing');
    if (this.#timer) clearTimeout(this.#timer);
    // Connected (online, or still publishing its birth): leave a clean DEATH, not the will.
    if (client?.connected && channel) {
      const death = { ...this.#opts.state(), ...this.presence(), link: LinkStatus.LINK_STATUS_STOPPED, lifecycle: Lifecycle.LIFECYCLE_DEATH, bdSeq, atMs: this.#now() };
      await Promise.race([this.#opts.egress.publishState(channel, death).catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
      await this.#disconnect(client);
    }
    await this.#endClient();
    this.#session = undefined;
    this.#sm.to('closed');
  }

  #logTransport(): void {
    const s = this.#security;
    const { logger, config } = this.#opts;
    const fields = { event: 'link_transport', host: s.host, transport: s.transport, allowedBy: s.allowedBy };
    if (s.allowedBy === 'site-bridge') {
      logger.error(
        { ...fields, setting: `broker.insecure: ${config.broker.insecure}` },
        `INSECURE broker link: ${s.transport === 'plaintext' ? 'plaintext' : 'unverified TLS'} to ${s.host}, allowed only by broker.insecure: ${config.broker.insecure}. Anyone on this LAN can read and alter punches and impersonate the broker; region pinning rests on the host name alone.`,
      );
    } else if (s.allowedBy === 'loopback') {
      (s.transport === 'plaintext' ? logger.info : logger.warn).call(logger, fields, `broker on this machine (${s.host}): ${s.transport}`);
    } else {
      logger.info(fields, `TLS to ${s.host}${s.certificatePinned ? `, certificate names pinned to region ${config.region}` : ''}`);
    }
  }

  async #connect(): Promise<void> {
    if (!this.#sm.can('connecting')) return;
    this.#sm.to('connecting');
    let bdSeq: number;
    try {
      // After a version fallback the refused CONNECT registered no will: its bd_seq is still unused.
      bdSeq = this.#unusedBdSeq ?? (await this.#opts.nextBdSeq());
      this.#unusedBdSeq = undefined;
    } catch (err) {
      this.#opts.logger.error({ event: 'link_bdseq_failed', err: errorMessage(err) }, 'cannot persist bd_seq; retrying');
      this.#scheduleRetry('bd_seq not persisted');
      return;
    }
    if (this.#sm.state !== 'connecting') return; // stopped meanwhile
    const { broker, device, region } = this.#opts.config;
    const { logger } = this.#opts;
    const version = this.#version;
    const will = { ...this.#opts.state(), ...this.presence(), link: LinkStatus.LINK_STATUS_LOST, lifecycle: Lifecycle.LIFECYCLE_DEATH, bdSeq, atMs: this.#now() };
    const client = createClient(
      {
        security: this.#security,
        region,
        tls: this.#tls,
        maxPacketBytes: this.#maxPacketBytes,
        ...(this.#opts.lookup ? { lookup: this.#opts.lookup } : {}),
        ...(broker.localAddress ? { localAddress: broker.localAddress } : {}),
        onDrop: (p) => {
          this.#dropped++;
          const type = PACKET_TYPES[p.type] ?? `type ${p.type}`;
          logger.warn(
            { event: 'link_packet_dropped', packetType: type, bytes: p.bytes, limitBytes: this.#maxPacketBytes, dropped: this.#dropped },
            `dropped an incoming ${type} of ${p.bytes} bytes without reading it (limit ${this.#maxPacketBytes} bytes; ${this.#dropped} dropped so far)`,
          );
        },
      },
      {
        clientId: broker.clientId ?? `tallybox-${device.id}`,
        protocolVersion: version,
        clean: true,
        connectTimeout: broker.connectTimeoutMs,
        keepalive: broker.keepaliveSec,
        ...(broker.username !== undefined ? { username: broker.username } : {}),
        ...(broker.password !== undefined ? { password: broker.password } : {}),
        will: this.#opts.egress.will(will),
      },
    );
    this.#client = client;
    this.#clientBdSeq = bdSeq;
    this.#channel = undefined;
    let settled = false;
    client.on('connect', (connack) => {
      if (settled || client !== this.#client) return;
      settled = true;
      this.#channel = EgressChannel.wrap(client, { receiveMaximum: connack.properties?.receiveMaximum });
      void this.#onConnected(client, this.#channel, bdSeq, version);
    });
    client.on('error', (err) => {
      if (client !== this.#client) return;
      if (version === 5 && (broker.mqttVersion ?? 'auto') === 'auto' && isUnsupportedVersion(err)) {
        // aedes 1.x and other 3.1.1-only brokers refuse MQTT 5 at CONNACK. The
        // gate still drops oversized packets; only the announcement is lost.
        this.#version = 4;
        this.#retryNow = true;
        this.#unusedBdSeq = bdSeq;
        logger.warn({ event: 'link_mqtt_fallback' }, `broker refused MQTT 5; using MQTT 3.1.1 (no maximum packet size announced; packets over ${this.#maxPacketBytes} bytes are still dropped unread)`);
        return;
      }
      const code = (err as { code?: unknown }).code;
      (code === 'REGION_MISMATCH' ? logger.error : logger.warn).call(logger, { event: 'link_error', code, err: errorMessage(err) }, `mqtt error: ${errorMessage(err)}`);
      // mqtt.js emits close after a connect error; `close` handles the retry.
    });
    client.on('close', () => {
      if (client !== this.#client) return;
      this.#lost('connection closed');
    });
    client.on('message', (t, payload) => {
      if (client !== this.#client) return;
      this.#opts.onCommand?.(t, payload);
    });
  }

  async #onConnected(client: MqttClient, channel: EgressChannel, bdSeq: number, version: 4 | 5): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) => client.subscribe(commandFilter(this.#opts.config.device.id), { qos: 1 }, (err) => (err ? reject(err) : resolve())));
      const birth = { ...this.#opts.state(), ...this.presence(), link: LinkStatus.LINK_STATUS_ONLINE, lifecycle: Lifecycle.LIFECYCLE_BIRTH, bdSeq, atMs: this.#now() };
      await this.#opts.egress.publishState(channel, birth);
    } catch (err) {
      if (client === this.#client) this.#lost(`birth failed: ${errorMessage(err)}`);
      return;
    }
    if (client !== this.#client || this.#sm.state !== 'connecting') return;
    this.#attempt = 0;
    this.#session = { client: channel, bdSeq, connectedAtMs: this.#now() };
    this.#sm.to('online');
    this.#opts.logger.info({ event: 'link_online', bdSeq, mqttVersion: version === 5 ? '5' : '3.1.1' }, `online (bd_seq ${bdSeq}, MQTT ${version === 5 ? '5' : '3.1.1'})`);
    this.#opts.onOnline?.(this.#session);
  }

  #lost(reason: string): void {
    const wasOnline = this.#sm.state === 'online';
    if (!this.#sm.can('backoff')) return;
    this.#session = undefined;
    void this.#endClient();
    this.#scheduleRetry(reason);
    if (wasOnline) this.#opts.onOffline?.(reason);
  }

  #scheduleRetry(reason: string): void {
    this.#sm.to('backoff');
    const { reconnectMinMs, reconnectMaxMs } = this.#opts.config.broker;
    // A protocol-version fallback is a negotiation, not a failure: retry at once.
    const delay = this.#retryNow ? 0 : backoffDelay(this.#attempt++, reconnectMinMs, reconnectMaxMs);
    this.#retryNow = false;
    this.#opts.logger.info({ event: 'link_backoff', reason, delayMs: delay, attempt: this.#attempt }, `offline (${reason}); retry in ${delay} ms`);
    this.#timer = setTimeout(() => void this.#connect(), delay);
  }

  /**
   * Send DISCONNECT without waiting for in-flight publishes: mqtt.js's
   * end(false) waits until every QoS 1 publish is acknowledged, which may be
   * never; the outbox re-sends unacknowledged punches, so they are dropped
   * from mqtt.js's store first. Bounded: a broker that does not close within
   * 2 s gets the socket destroyed.
   */
  async #disconnect(c: MqttClient): Promise<void> {
    for (const id of Object.keys(c.outgoing)) c.removeOutgoingMessage(Number(id));
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        c.stream?.destroy();
        resolve();
      }, 2000);
      c.end(false, {}, () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  async #endClient(): Promise<void> {
    const c = this.#client;
    this.#client = undefined;
    if (!c) return;
    if (c.disconnecting) {
      // Already ending (a clean DISCONNECT above): end() would return at once without closing.
      c.stream?.destroy();
      return;
    }
    // force: do not wait for in-flight acks; the outbox re-sends unacknowledged rows.
    await new Promise<void>((resolve) => c.end(true, {}, () => resolve()));
  }
}
