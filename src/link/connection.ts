/**
 * The MQTT connection: one state machine, reconnect with full-jitter backoff,
 * a fresh `bd_seq` and will for every connection (Sparkplug-style presence),
 * a retained birth on every connect, and command intake.
 *
 * mqtt.js's own reconnect is off (reconnectPeriod 0): its will is fixed per
 * client, and each connection needs a will carrying its own bd_seq, so every
 * attempt builds a new client. Its offline queue is never relied on: the
 * outbox re-sends anything not acknowledged.
 */
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Config } from '../config/schema.js';
import type { DeviceStateProps } from '../proto/index.js';
import { Lifecycle } from '../proto/index.js';
import { TallyboxError, errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { EgressGate } from './egress.js';
import { assertBrokerAllowed } from './regions.js';
import { LinkStateMachine, backoffDelay, type LinkState } from './state-machine.js';
import { commandFilter } from './topics.js';

export interface Session {
  client: MqttClient;
  bdSeq: number;
  /** Device clock when this connection came up; older punches are backlog. */
  connectedAtMs: number;
}

export interface MqttLinkOptions {
  config: Pick<Config, 'device' | 'region' | 'broker'>;
  egress: EgressGate;
  logger: Logger;
  /** Next connection counter, persisted before use (the outbox keeps it). */
  nextBdSeq: () => Promise<number>;
  /** Current device state for birth and death messages (lifecycle and bd_seq are set here). */
  state: () => DeviceStateProps;
  onOnline?: (s: Session) => void;
  onOffline?: (reason: string) => void;
  /** Raw command bytes from .../cmd; verification happens in the handler. */
  onCommand?: (topic: string, payload: Buffer) => void;
  now?: () => number;
}

export class MqttLink {
  private readonly sm: LinkStateMachine;
  private session: Session | undefined;
  private client: MqttClient | undefined;
  private timer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private readonly now: () => number;
  private readonly tls: Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'>;

  constructor(private readonly opts: MqttLinkOptions) {
    const { broker, region } = opts.config;
    // Refuse before any socket is opened: region pinning is not a runtime retry.
    assertBrokerAllowed(broker.url, region, broker.allowLoopback);
    this.tls = loadTls(broker.tls);
    this.now = opts.now ?? Date.now;
    this.sm = new LinkStateMachine((from, to) => opts.logger.info({ event: 'link_state', from, to }, `link ${from} → ${to}`));
  }

  get state(): LinkState {
    return this.sm.state;
  }

  /** The live session, or undefined when not online. */
  get current(): Session | undefined {
    return this.sm.state === 'online' ? this.session : undefined;
  }

  start(): void {
    if (this.sm.state !== 'idle') return;
    void this.connect();
  }

  /** Drop the connection and reconnect (e.g. PUBACKs stopped arriving). */
  recycle(reason: string): void {
    if (this.sm.state !== 'online' && this.sm.state !== 'connecting') return;
    this.opts.logger.warn({ event: 'link_recycle', reason }, `reconnecting: ${reason}`);
    this.lost(reason);
  }

  /**
   * Clean shutdown: publish a DEATH (the broker only sends the will on an
   * unclean loss), then disconnect.
   */
  async stop(): Promise<void> {
    if (this.sm.state === 'closed' || this.sm.state === 'closing') return;
    const online = this.current;
    this.sm.to('closing');
    if (this.timer) clearTimeout(this.timer);
    if (online) {
      await Promise.race([
        this.opts.egress.publishState(online.client, { ...this.opts.state(), lifecycle: Lifecycle.LIFECYCLE_DEATH, bdSeq: online.bdSeq, atMs: this.now() }).catch(() => undefined),
        new Promise((r) => setTimeout(r, 2000)),
      ]);
    }
    await this.endClient();
    this.session = undefined;
    this.sm.to('closed');
  }

  private async connect(): Promise<void> {
    if (!this.sm.can('connecting')) return;
    this.sm.to('connecting');
    let bdSeq: number;
    try {
      bdSeq = await this.opts.nextBdSeq();
    } catch (err) {
      this.opts.logger.error({ event: 'link_bdseq_failed', err: errorMessage(err) }, 'cannot persist bd_seq; retrying');
      this.scheduleRetry('bd_seq not persisted');
      return;
    }
    if (this.sm.state !== 'connecting') return; // stopped meanwhile
    const { broker, device } = this.opts.config;
    const base = this.opts.state();
    const options: IClientOptions = {
      clientId: broker.clientId ?? `tallybox-${device.id}`,
      protocolVersion: 4, // MQTT 3.1.1: every broker speaks it
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: broker.connectTimeoutMs,
      keepalive: broker.keepaliveSec,
      ...(broker.username !== undefined ? { username: broker.username } : {}),
      ...(broker.password !== undefined ? { password: broker.password } : {}),
      ...this.tls,
      will: this.opts.egress.will({ ...base, lifecycle: Lifecycle.LIFECYCLE_DEATH, bdSeq, atMs: this.now() }),
    };
    const client = mqtt.connect(broker.url, options);
    this.client = client;
    let settled = false;
    client.on('connect', () => {
      if (settled || client !== this.client) return;
      settled = true;
      void this.onConnected(client, bdSeq);
    });
    client.on('error', (err) => {
      if (client !== this.client) return;
      this.opts.logger.warn({ event: 'link_error', err: errorMessage(err) }, `mqtt error: ${errorMessage(err)}`);
      // mqtt.js emits close after a connect error; `close` handles the retry.
    });
    client.on('close', () => {
      if (client !== this.client) return;
      this.lost('connection closed');
    });
    client.on('message', (t, payload) => {
      if (client !== this.client) return;
      this.opts.onCommand?.(t, payload);
    });
  }

  private async onConnected(client: MqttClient, bdSeq: number): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) =>
        client.subscribe(commandFilter(this.opts.config.device.id), { qos: 1 }, (err) => (err ? reject(err) : resolve())),
      );
      await this.opts.egress.publishState(client, { ...this.opts.state(), lifecycle: Lifecycle.LIFECYCLE_BIRTH, bdSeq, atMs: this.now() });
    } catch (err) {
      if (client === this.client) this.lost(`birth failed: ${errorMessage(err)}`);
      return;
    }
    if (client !== this.client || this.sm.state !== 'connecting') return;
    this.attempt = 0;
    this.session = { client, bdSeq, connectedAtMs: this.now() };
    this.sm.to('online');
    this.opts.logger.info({ event: 'link_online', bdSeq }, `online (bd_seq ${bdSeq})`);
    this.opts.onOnline?.(this.session);
  }

  private lost(reason: string): void {
    const wasOnline = this.sm.state === 'online';
    if (!this.sm.can('backoff')) return;
    this.session = undefined;
    void this.endClient();
    this.scheduleRetry(reason);
    if (wasOnline) this.opts.onOffline?.(reason);
  }

  private scheduleRetry(reason: string): void {
    this.sm.to('backoff');
    const { reconnectMinMs, reconnectMaxMs } = this.opts.config.broker;
    const delay = backoffDelay(this.attempt++, reconnectMinMs, reconnectMaxMs);
    this.opts.logger.info({ event: 'link_backoff', reason, delayMs: delay, attempt: this.attempt }, `offline (${reason}); retry in ${delay} ms`);
    this.timer = setTimeout(() => void this.connect(), delay);
  }

  private async endClient(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    if (!c) return;
    // force: do not wait for in-flight acks; the outbox re-sends unacknowledged rows.
    await new Promise<void>((resolve) => c.end(true, {}, () => resolve()));
  }
}

function loadTls(tls: Config['broker']['tls']): Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'> {
  if (!tls) return {};
  const read = (key: string, file: string | undefined): Buffer | undefined => {
    if (file === undefined) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new TallyboxError('CONFIG_INVALID', `broker.tls.${key}: cannot read ${file}: ${errorMessage(err)}`);
    }
  };
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new TallyboxError('CONFIG_INVALID', 'broker.tls: certFile and keyFile go together (client certificate for mTLS)');
  }
  const out: Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'> = { rejectUnauthorized: tls.rejectUnauthorized };
  const ca = read('caFile', tls.caFile);
  const cert = read('certFile', tls.certFile);
  const key = read('keyFile', tls.keyFile);
  if (ca) out.ca = ca;
  if (cert) out.cert = cert;
  if (key) out.key = key;
  return out;
}
