/**
 * The agent: composes the outbox, the MQTT link, the drain and device status.
 * Device roles (m1, m2, c1, p1) and the local punch API hand punches to
 * `punch()`; it resolves only once the punch is on disk.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { MqttLink, type Session } from '../link/connection.js';
import { EgressGate } from '../link/egress.js';
import { assertBrokerAllowed } from '../link/regions.js';
import { Drain } from '../outbox/drain.js';
import { Outbox, type OutboxAlarm, type PunchInput, type QueuedPunch } from '../outbox/outbox.js';
import { AlarmCode, ClockStatus, Lifecycle, PROTO_VERSION, type DeviceStateProps } from '../proto/index.js';
import { TallyboxError, errorMessage } from '../util/errors.js';
import { createLogger, type Logger } from '../util/log.js';
import type { CommandIntake } from '../link/commands/index.js';
import type { ErasureParticipant } from '../privacy/types.js';
import { clockSynced } from './clock.js';
import { removePidFile, writePidFile } from './pidfile.js';
import type { RuntimeSettings } from './command-handlers.js';
import type { PrivacyServices } from './privacy.js';
import { writeZeroisedMarker, zeroisedInfo, type ZeroisedInfo } from './zeroise.js';
import type { Modality } from '../vault/vault.js';
import { ResultQueue } from './results.js';
import { AGENT_VERSION } from './version.js';

export interface AgentOptions {
  config: Config;
  logger?: Logger;
}

const ALARM_CODES: Record<OutboxAlarm, AlarmCode> = {
  QUEUE_FULL: AlarmCode.ALARM_CODE_QUEUE_FULL,
  DISK_FULL: AlarmCode.ALARM_CODE_DISK_FULL,
  STORAGE_ERROR: AlarmCode.ALARM_CODE_STORAGE_ERROR,
  STORAGE_LOST: AlarmCode.ALARM_CODE_STORAGE_LOST,
};

export interface PeripheralState {
  online: boolean;
  detail: string;
}

export class Agent {
  readonly link: MqttLink;
  readonly drain: Drain;
  readonly egress: EgressGate;
  private readonly alarmsSince = new Map<OutboxAlarm, number>();
  private readonly peripherals = new Map<string, PeripheralState>();
  private stateTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  #privacy: PrivacyServices | undefined;
  /** Set when the device was zeroised after a tamper event (now or before a restart). */
  #zeroised: ZeroisedInfo | undefined;
  private intake: CommandIntake | undefined;
  private stopRetention: (() => void) | undefined;
  private clockWatch: NodeJS.Timeout | undefined;
  readonly results: ResultQueue;
  /** Values a ConfigPatch command may change at run time. */
  readonly settings: RuntimeSettings;
  private readonly subjectChanged = new Set<(orgId: string, subjectId: string, invited: readonly Modality[]) => void>();
  private readonly subjectsErased = new Set<(orgId: string, subjectIds: readonly string[] | 'all') => void>();

  private constructor(
    readonly config: Config,
    readonly outbox: Outbox,
    readonly logger: Logger,
    /** Vault and purge pipeline; undefined on a device that keeps no personal data, or once zeroised. */
    privacy: PrivacyServices | undefined,
  ) {
    this.#privacy = privacy;
    this.settings = { retentionDays: config.privacy.retentionDays, repeatWindowSec: config.m1?.repeatWindowSec ?? config.m2?.repeatWindowSec ?? 60, backlogRatePerSec: config.outbox.backlogRatePerSec };
    this.egress = new EgressGate({ deviceId: config.device.id, operatorOrgId: config.device.orgId });
    this.link = new MqttLink({
      config,
      egress: this.egress,
      logger: logger.child({ component: 'link' }),
      nextBdSeq: () => outbox.nextBdSeq(),
      state: () => this.state(),
      onOnline: (s) => {
        this.drain.online(s);
        this.results.kick();
      },
      onOffline: () => this.drain.offline(),
      onCommand: (topic, payload) => void this.intake?.handle(topic, payload),
    });
    this.results = new ResultQueue({ outbox, egress: this.egress, session: () => this.link.current, logger: logger.child({ component: 'results' }) });
    this.drain = new Drain({
      outbox,
      egress: this.egress,
      logger: logger.child({ component: 'drain' }),
      recycle: (reason) => this.link.recycle(reason),
      inflight: config.outbox.inflight,
      batch: config.outbox.batch,
      backlogRatePerSec: config.outbox.backlogRatePerSec,
      ackTimeoutMs: Math.max(10_000, config.broker.keepaliveSec * 3000),
    });
  }

  /**
   * Open storage and start connecting. Storage problems (unreadable or corrupt
   * database, no permission) throw here, before anything is written.
   */
  static async start(opts: AgentOptions): Promise<Agent> {
    const { config } = opts;
    const logger = opts.logger ?? createLogger({ level: config.log.level, base: { deviceId: config.device.id } });
    // Refuse a broker outside the device's region before anything is written.
    assertBrokerAllowed(config.broker.url, config.region, config.broker.allowLoopback);
    try {
      mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new TallyboxError('STORAGE_UNAVAILABLE', `cannot create data directory ${config.dataDir}: ${errorMessage(err)}`, {}, { cause: err });
    }
    let agent: Agent | undefined;
    const outbox = await Outbox.open({
      path: join(config.dataDir, 'outbox.db'),
      capacity: config.outbox.capacity,
      onAlarm: (alarm, active, detail) => agent?.alarm(alarm, active, detail),
      logger: logger.child({ component: 'outbox' }),
    });
    let privacy: PrivacyServices | undefined;
    try {
      // A zeroised device comes up without its vault: it delivers what it had accepted and raises the alarm.
      const zeroised = zeroisedInfo(config.dataDir);
      // Loaded only on devices that keep personal data: less resident memory elsewhere.
      privacy = config.vault && !zeroised ? await (await import('./privacy.js')).openPrivacy({ config, outbox, logger }) : undefined;
      agent = new Agent(config, outbox, logger, privacy);
      if (zeroised) {
        agent.#zeroised = zeroised;
        logger.error({ event: 'zeroised', atMs: zeroised.atMs }, `device was zeroised (${zeroised.reason}): no vault, nobody is identified; inspect it and re-provision (tallybox provision)`);
      }
      await agent.startPrivacy();
    } catch (err) {
      await agent?.intake?.close().catch(() => undefined);
      await privacy?.vault.close().catch(() => undefined);
      await outbox.close();
      throw err;
    }
    writePidFile(config.dataDir);
    agent.watchClock();
    agent.link.start();
    logger.info({ event: 'agent_started', version: AGENT_VERSION, kind: config.device.kind, queued: outbox.depth, lastSeq: outbox.lastSeq }, `tallybox ${AGENT_VERSION} started (${outbox.depth} punches queued)`);
    return agent;
  }

  /**
   * Before connecting: finish purges a power cut interrupted (their receipts
   * are queued), open the command intake, schedule retention.
   */
  private async startPrivacy(): Promise<void> {
    const { config, privacy } = this;
    if (privacy) {
      const { receiptResult, scheduleRetention } = await import('./privacy.js');
      for (const o of await privacy.purger.resumePending()) {
        await this.results.enqueue(o.receipt.orgId, receiptResult({ deviceId: config.device.id, identity: privacy.identity, signed: o.signed, ok: o.ok, reason: 'purge_resumed' }));
      }
      this.stopRetention = scheduleRetention({
        services: privacy,
        periodDays: () => this.settings.retentionDays,
        deviceId: config.device.id,
        deliver: (orgId, r) => this.results.enqueue(orgId, r),
        logger: this.logger,
      });
    }
    if (config.cloud.commandKeys.length === 0) {
      this.logger.warn({ event: 'commands_disabled' }, 'no cloud command key pinned (cloud.commandKeys): commands from the cloud are ignored');
      return;
    }
    const [{ CommandIntake }, { commandHandlers }] = await Promise.all([import('../link/commands/index.js'), import('./command-handlers.js')]);
    this.intake = await CommandIntake.open({
      dbPath: join(config.dataDir, 'commands.db'),
      deviceId: config.device.id,
      trustedKeys: config.cloud.commandKeys,
      handlers: commandHandlers({
        privacy: () => this.#privacy,
        settings: this.settings,
        logger: this.logger.child({ component: 'commands' }),
        onSubjectChanged: (org, id, invited) => this.subjectChanged.forEach((fn) => fn(org, id, invited)),
        onSubjectsErased: (org, ids) => this.subjectsErased.forEach((fn) => fn(org, ids)),
      }),
      publishResult: (orgId, r) => this.results.enqueue(orgId, r),
      ...(privacy ? { signResult: (b: Uint8Array) => privacy.identity.sign(Buffer.from(b)), resultKeyId: privacy.identity.keyId } : {}),
      logger: this.logger.child({ component: 'commands' }),
    });
  }

  /**
   * When the clock becomes synchronised, punches this process stamped with the
   * unsynchronised clock and has not delivered yet are re-stamped from the
   * monotonic clock (DESIGN reference §6).
   */
  private watchClock(): void {
    if (this.config.clock.source !== 'systemd') return;
    let synced = clockSynced(this.config.clock);
    this.clockWatch = setInterval(() => {
      const now = clockSynced(this.config.clock);
      if (now === synced) return;
      synced = now;
      this.publishStateSoon();
      if (!now) return;
      this.outbox.restampUnsynced().then(
        (n) => this.logger.info({ event: 'clock_synced', restamped: n }, `clock synchronised: ${n} queued punches re-stamped from the monotonic clock`),
        (err: unknown) => this.logger.warn({ event: 'restamp_failed', err: errorMessage(err) }, 'could not re-stamp unsynced punches'),
      );
    }, 1000);
    this.clockWatch.unref();
  }

  /** Vault and purge pipeline; undefined on a device that keeps no personal data, or once zeroised. */
  get privacy(): PrivacyServices | undefined {
    return this.#privacy;
  }

  get zeroised(): ZeroisedInfo | undefined {
    return this.#zeroised;
  }

  /**
   * Tamper response: destroy the device key (crypto-shredding every sealed
   * record), close the vault, and stay up without it — punches already
   * accepted are still delivered, nothing new is identified, the TAMPER alarm
   * is raised. Durable: a restart comes up the same way until re-provisioning.
   */
  async zeroise(reason: string): Promise<void> {
    if (this.#zeroised) return;
    const info = { atMs: Date.now(), reason };
    writeZeroisedMarker(this.config.dataDir, info);
    this.#zeroised = info;
    const p = this.#privacy;
    this.#privacy = undefined;
    if (p) {
      // Roles drop what they hold in memory (indexes, page maps) for every org.
      const orgs = await p.vault.orgs().catch(() => [] as string[]);
      for (const org of orgs) this.subjectsErased.forEach((fn) => fn(org, 'all'));
      await p.vault.close().catch(() => undefined);
      try {
        await p.keyProvider.zeroiseKek();
      } catch (err) {
        this.logger.error({ event: 'zeroise_key_failed', err: errorMessage(err) }, `the key could not be destroyed here: ${errorMessage(err)}`);
      }
    }
    this.logger.error({ event: 'zeroised', reason }, `device zeroised (${reason}): key destroyed, vault closed; punches already accepted will still be delivered`);
    this.publishStateSoon();
  }

  /** A device role that holds personal data (sensor flash, in-memory index) joins every erasure. */
  registerErasureParticipant(p: ErasureParticipant): void {
    if (!this.privacy) throw new TallyboxError('NO_VAULT', `${p.name} holds personal data but this device has no vault configured`);
    this.privacy.purger.register(p);
  }

  /** Roles hear about enrolment invitations (SubjectUpsert: who, which modalities; consent checked) and erasures. */
  onSubjectChanged(fn: (orgId: string, subjectId: string, invited: readonly Modality[]) => void): void {
    this.subjectChanged.add(fn);
  }

  onSubjectsErased(fn: (orgId: string, subjectIds: readonly string[] | 'all') => void): void {
    this.subjectsErased.add(fn);
  }

  /** Accept a punch: resolves once it is committed to disk. */
  punch(input: PunchInput): Promise<QueuedPunch> {
    if (this.stopped) return Promise.reject(new TallyboxError('AGENT_STOPPED', 'agent is stopping; punch not accepted'));
    return this.outbox.accept({ clockSynced: clockSynced(this.config.clock), ...input });
  }

  setPeripheral(name: string, online: boolean, detail = ''): void {
    const prev = this.peripherals.get(name);
    if (prev && prev.online === online && prev.detail === detail) return;
    this.peripherals.set(name, { online, detail });
    this.logger.info({ event: 'peripheral', peripheral: name, online, detail }, `${name} ${online ? 'online' : 'offline'}${detail ? `: ${detail}` : ''}`);
    this.publishStateSoon();
  }

  /** Current device status: no personal data by construction (no field can hold any). */
  state(): DeviceStateProps {
    const now = Date.now();
    return {
      lifecycle: Lifecycle.LIFECYCLE_UPDATE,
      deviceId: this.config.device.id,
      deviceKind: this.config.device.kind,
      agentVersion: AGENT_VERSION,
      protoVersion: PROTO_VERSION,
      bdSeq: this.link.current?.bdSeq ?? 0,
      queueDepth: this.outbox.depth,
      queueCapacity: this.outbox.capacity,
      lastSeq: this.outbox.lastSeq,
      clock: clockSynced(this.config.clock) ? ClockStatus.CLOCK_STATUS_SYNCED : ClockStatus.CLOCK_STATUS_UNSYNCED,
      alarms: [
        ...[...this.outbox.activeAlarms()].map(([a, detail]) => ({ code: ALARM_CODES[a], detail, sinceMs: this.alarmsSince.get(a) ?? now })),
        ...(this.#zeroised ? [{ code: AlarmCode.ALARM_CODE_TAMPER, detail: `zeroised (${this.#zeroised.reason}): device key destroyed; inspect and re-provision`, sinceMs: this.#zeroised.atMs }] : []),
      ],
      peripherals: [...this.peripherals].map(([name, p]) => ({ name, online: p.online, detail: p.detail })),
      atMs: now,
    };
  }

  get session(): Session | undefined {
    return this.link.current;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.stateTimer) clearTimeout(this.stateTimer);
    this.stopRetention?.();
    if (this.clockWatch) clearInterval(this.clockWatch);
    this.drain.stop();
    await this.link.stop();
    await this.intake?.close();
    await this.privacy?.vault.close();
    await this.outbox.close();
    removePidFile(this.config.dataDir);
    this.logger.info({ event: 'agent_stopped' }, 'tallybox stopped');
  }

  private alarm(alarm: OutboxAlarm, active: boolean, detail: string): void {
    if (active) {
      this.alarmsSince.set(alarm, Date.now());
      this.logger.error({ event: 'alarm_raised', alarm, detail }, `ALARM ${alarm}: ${detail}`);
    } else {
      this.alarmsSince.delete(alarm);
      this.logger.warn({ event: 'alarm_cleared', alarm }, `alarm ${alarm} cleared`);
    }
    this.publishStateSoon();
  }

  /** Coalesce status changes into at most one UPDATE per 200 ms. */
  private publishStateSoon(): void {
    if (this.stateTimer || this.stopped) return;
    this.stateTimer = setTimeout(() => {
      this.stateTimer = undefined;
      const s = this.link.current;
      if (!s) return; // the next birth carries it
      this.egress.publishState(s.client, { ...this.state(), bdSeq: s.bdSeq }).catch((err: unknown) => {
        this.logger.warn({ event: 'state_publish_failed', err: errorMessage(err) }, 'state update not published');
      });
    }, 200);
  }
}
