/**
 * The agent: composes the outbox, the MQTT link, the drain and device status.
 * Device roles (m1, m2, c1, p1) and the local punch API hand punches to
 * `punch()`; it resolves only once the punch is on disk.
 */
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { MqttLink, type Session, MAX_INCOMING_PACKET_BYTES } from '../link/connection.js';
import { EgressGate } from '../link/egress.js';
import { brokerSecurity } from '../link/security.js';
import { Drain } from '../outbox/drain.js';
import { Outbox, type OutboxAlarm, type PunchInput, type QueuedPunch } from '../outbox/outbox.js';
import { AlarmCode, ClockStatus, Lifecycle, PROTO_VERSION, ResultCode, type CommandResultProps, type DeviceStateProps, type PrinterSummaryProps } from '../proto/index.js';
import { TallyboxError, describeError, errorMessage } from '../util/errors.js';
import { createLogger, setLogLevel, type Logger } from '../util/log.js';
import { securePrivateDataDir } from '../util/private-fs.js';
import type { CommandHandlers, CommandIntake, HandlerOutcome, RejectionGateStats } from '../link/commands/index.js';
import { DEFAULT_MAX_BYTES } from '../link/commands/intake.js';
import type { PurgeOutcome } from '../privacy/purge.js';
import type { ErasureParticipant } from '../privacy/types.js';
import { clockSynced } from './clock.js';
import { removePidFile, writePidFile } from './pidfile.js';
import { loadPersistedSettings, persistSettings, type RuntimeSettings, type SettingsPatch } from './runtime-settings.js';
import type { PrivacyRuntime, PrivacyServices } from './privacy.js';
import { describeZeroised, writeZeroisedMarker, zeroisedInfo, type ZeroisedInfo } from './zeroise.js';
import type { Modality } from '../vault/vault.js';
import type { IncidentMonitor } from '../incident/monitor.js';
import { describeInterrupted, ResultQueue } from './results.js';
import type { WifiCommandHooks } from './command-handlers.js';
import { ServedOrgs, servedOrgsHandlers } from './served-orgs.js';
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

/** Largest command (and MQTT packet) a print box takes: an inline document plus the command around it. */
function p1CommandBytes(config: Config): number {
  return Math.max(DEFAULT_MAX_BYTES, MAX_INCOMING_PACKET_BYTES, (config.p1?.inlineMaxBytes ?? 0) + 8192);
}

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
  /** Receipt delivery, purge retry and retention (src/agent/privacy.ts). */
  private privacyRuntime: PrivacyRuntime | undefined;
  private clockWatch: NodeJS.Timeout | undefined;
  /** Security-incident records (src/incident): recorded once, re-sent until acknowledged. */
  incidents: IncidentMonitor | undefined;
  readonly results: ResultQueue;
  /** Values a ConfigPatch command may change at run time (config file values, overridden by persisted patches). */
  readonly settings: RuntimeSettings;
  /** The patched fields persisted in dataDir/settings.json. */
  private overrides: SettingsPatch;
  private readonly subjectChanged = new Set<(orgId: string, subjectId: string, invited: readonly Modality[]) => void>();
  private readonly subjectsErased = new Set<(orgId: string, subjectIds: readonly string[] | 'all') => void>();
  /** bd_seq of the last connection, so status read while offline still names it. */
  private lastBdSeq = 0;

  private constructor(
    readonly config: Config,
    readonly outbox: Outbox,
    readonly logger: Logger,
    /** Vault and purge pipeline; undefined on a device that keeps no personal data, or once zeroised. */
    privacy: PrivacyServices | undefined,
    overrides: SettingsPatch,
    /** The organisations this device serves (commands, punch API, lookups). */
    readonly servedOrgs: ServedOrgs,
  ) {
    this.#privacy = privacy;
    this.overrides = overrides;
    // An org no longer served: roles drop what they hold of it in memory at once (its data stays in the vault).
    servedOrgs.onChange((c) => c.removed.forEach((org) => this.subjectsErased.forEach((fn) => fn(org, 'all'))));
    this.settings = {
      retentionDays: config.privacy.retentionDays,
      repeatWindowSec: config.m1?.repeatWindowSec ?? config.m2?.repeatWindowSec ?? 60,
      backlogRatePerSec: config.outbox.backlogRatePerSec,
      logLevel: config.log.level,
      ...overrides,
    };
    if (overrides.logLevel) setLogLevel(logger, overrides.logLevel);
    this.egress = new EgressGate({ deviceId: config.device.id, operatorOrgId: config.device.orgId });
    this.link = new MqttLink({
      config,
      // P1: an inline document rides in its command; the packet limit follows p1.inlineMaxBytes.
      ...(config.p1 ? { maxPacketBytes: p1CommandBytes(config) } : {}),
      egress: this.egress,
      logger: logger.child({ component: 'link' }),
      nextBdSeq: () => outbox.nextBdSeq(),
      state: () => this.state(),
      onOnline: (s) => {
        this.lastBdSeq = s.bdSeq;
        this.drain.online(s);
        this.results.kick();
        this.intake?.resumeResults();
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
      backlogRatePerSec: this.settings.backlogRatePerSec,
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
    // Refuse a broker outside the device's region, or an unsafe transport, before anything is written.
    brokerSecurity(config.broker, config.region);
    // 0700, ours, no symlinks or foreign files in it: refused (DATA_DIR_INSECURE, FILE_INSECURE) or fixed and said.
    for (const f of securePrivateDataDir(config.dataDir)) logger.warn({ event: 'file_permissions_fixed', path: f.path }, f.detail);
    const overrides = loadPersistedSettings(config.dataDir); // SETTINGS_CORRUPT before anything is opened
    // Before anything is written: an unreadable served-organisations list stops the start.
    const servedOrgs = ServedOrgs.load({ dataDir: config.dataDir, configured: config.device.servedOrgs ?? [config.device.orgId], logger: logger.child({ component: 'served-orgs' }) });
    let agent: Agent | undefined;
    let outbox: Outbox | undefined;
    let privacy: PrivacyServices | undefined;
    try {
      outbox = await Outbox.open({
        path: join(config.dataDir, 'outbox.db'),
        capacity: config.outbox.capacity,
        onAlarm: (alarm, active, detail) => agent?.alarm(alarm, active, detail),
        logger: logger.child({ component: 'outbox' }),
      });
      // A zeroised device comes up without its vault: it delivers what it had accepted and raises the alarm.
      const zeroised = zeroisedInfo(config.dataDir);
      // Before the vault opens: a vanished or replaced key file is an incident even if the start fails on it.
      await (await import('../incident/monitor.js')).checkKeyFilesAtStart(config, logger);
      // Loaded only on devices that keep personal data: less resident memory elsewhere.
      privacy = config.vault && !zeroised ? await (await import('./privacy.js')).openPrivacy({ config, outbox, logger }) : undefined;
      agent = new Agent(config, outbox, logger, privacy, overrides, servedOrgs);
      if (privacy) servedOrgs.adoptHeld(await privacy.vault.orgs());
      if (zeroised) {
        agent.#zeroised = zeroised;
        logger.error({ event: 'zeroised', atMs: zeroised.atMs, key: zeroised.key }, `device was ${describeZeroised(zeroised)}: no vault, nobody is identified; inspect it and re-provision (tallybox provision)`);
        if (zeroised.key !== 'destroyed') await agent.retryKeyDestruction();
      }
      await agent.startPrivacy();
      writePidFile(config.dataDir);
      agent.watchClock();
      agent.link.start();
      agent.incidents = await (await import('../incident/monitor.js')).IncidentMonitor.start(agent);
    } catch (err) {
      // Whatever was started is stopped again: no half-started agent (link reconnecting, pid file left).
      if (agent) await agent.stop().catch((e: unknown) => logger.error({ event: 'abort_start_failed', err: e }, `stopping after a failed start: ${errorMessage(e)}`));
      else {
        await privacy?.journal.close().catch(() => undefined); // the start error is the one to report
        await privacy?.vault.close().catch(() => undefined);
        await outbox?.close().catch(() => undefined);
      }
      throw err;
    }
    logger.info({ event: 'agent_started', version: AGENT_VERSION, kind: config.device.kind, queued: outbox.depth, lastSeq: outbox.lastSeq }, `tallybox ${AGENT_VERSION} started (${outbox.depth} punches queued)`);
    return agent;
  }

  /**
   * ConfigPatch: persist the merged overrides first (throws, changing
   * nothing, when that fails), then apply every field at once.
   */
  applySettings(patch: SettingsPatch): void {
    const merged = { ...this.overrides, ...patch };
    persistSettings(this.config.dataDir, merged);
    this.overrides = merged;
    Object.assign(this.settings, patch);
    if (patch.backlogRatePerSec !== undefined) this.drain.setBacklogRatePerSec(patch.backlogRatePerSec);
    if (patch.logLevel !== undefined) setLogLevel(this.logger, patch.logLevel);
  }

  /**
   * Before connecting: finish purges a power cut interrupted (their receipts
   * are queued), open the command intake, schedule retention.
   */
  private async startPrivacy(): Promise<void> {
    const { config, privacy } = this;
    if (privacy) {
      const { startPrivacyRuntime } = await import('./privacy.js');
      this.privacyRuntime = await startPrivacyRuntime({
        services: privacy,
        config,
        outbox: this.outbox,
        enqueue: (orgId, r) => this.results.enqueue(orgId, r),
        retentionDays: () => this.settings.retentionDays,
        clockSynced: () => clockSynced(this.config.clock),
        logger: this.logger,
        onChange: () => this.publishStateSoon(),
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
      handlers: {
        ...servedOrgsHandlers(
          {
            // IncidentAck and DeviceDecommission (src/incident, src/decommission).
            ...(await import('../incident/handlers.js')).lifecycleHandlers(this),
            ...commandHandlers({
              privacy: () => this.#privacy,
              settings: this.settings,
              applySettings: (p) => this.applySettings(p),
              logger: this.logger.child({ component: 'commands' }),
              onSubjectChanged: (org, id, invited) => this.subjectChanged.forEach((fn) => fn(org, id, invited)),
              onSubjectsErased: (org, ids) => this.subjectsErased.forEach((fn) => fn(org, ids)),
              wifi: () => this.#wifiCommands,
            }),
          },
          this.servedOrgs,
        ),
        ...(config.device.kind === 'p1' ? this.#printHandlers() : {}),
      },
      // Once a result carrying an erasure receipt is queued, the purge journal's copy is settled.
      publishResult: async (orgId, r) => {
        await this.results.enqueue(orgId, r);
        await this.privacyRuntime?.settleCarried(r);
      },
      // Rejections: sent now or held in memory (bounded), never written to disk.
      publishRejection: (orgId, r) => this.results.sendNow(orgId, r),
      orgPolicy: { serves: (o) => this.servedOrgs.has(o), holds: (o) => this.servedOrgs.holds(o), operatorOrgId: config.device.orgId },
      describeInterrupted: async (e) => describeInterrupted(e, this.privacyRuntime?.resumed ?? [], privacy && e.kind === 'orgWithdraw' ? (await privacy.vault.keyVersion(e.orgId).catch(() => undefined)) !== undefined : undefined),
      ...(privacy ? { signResult: (b: Uint8Array) => privacy.identity.sign(Buffer.from(b)), resultKeyId: privacy.identity.keyId } : {}),
      logger: this.logger.child({ component: 'commands' }),
      ...(config.p1 ? { maxBytes: p1CommandBytes(config) } : {}),
    });
  }

  /** The P1 role's print commands (set when the role starts; before that they are refused). */
  #print: Pick<CommandHandlers, 'printJob' | 'cancelJob' | 'reprintJob'> | undefined;
  setPrintHandlers(h: Pick<CommandHandlers, 'printJob' | 'cancelJob' | 'reprintJob'> | undefined): void {
    this.#print = h;
  }

  #printHandlers(): Pick<CommandHandlers, 'printJob' | 'cancelJob' | 'reprintJob'> {
    const notYet: HandlerOutcome = { code: ResultCode.RESULT_CODE_FAILED, reason: 'print_role_not_started', detail: 'the print role is not running (yet): send the command again' };
    return {
      printJob: (o, c, x) => this.#print?.printJob?.(o, c, x) ?? Promise.resolve(notYet),
      cancelJob: (o, c, x) => this.#print?.cancelJob?.(o, c, x) ?? Promise.resolve(notYet),
      reprintJob: (o, c, x) => this.#print?.reprintJob?.(o, c, x) ?? Promise.resolve(notYet),
    };
  }

  /** P1: the printers' summary for DeviceState. */
  #printers: PrinterSummaryProps[] = [];
  setPrinters(printers: PrinterSummaryProps[]): void {
    this.#printers = printers;
    this.publishStateSoon();
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
   *
   * Returns what happened, and the log, DeviceState and the marker say the
   * same: the key is reported destroyed only when it was (read-only systemd
   * credentials or a failed overwrite are reported as not destroyed, with why).
   */
  async zeroise(reason: string): Promise<ZeroisedInfo> {
    if (this.#zeroised) return this.#zeroised;
    const p = this.#privacy;
    const info: ZeroisedInfo = { atMs: Date.now(), reason, key: p ? 'pending' : 'none' };
    this.#zeroised = info;
    this.#privacy = undefined;
    this.writeMarker(info);
    if (p) {
      // Roles drop what they hold in memory (indexes, page maps) for every org.
      const orgs = await p.vault.orgs().catch(() => [] as string[]); // a closed or broken vault has nothing left to drop
      for (const org of orgs) this.subjectsErased.forEach((fn) => fn(org, 'all'));
      this.privacyRuntime?.stop();
      this.privacyRuntime = undefined;
      await p.journal.close().catch((err: unknown) => this.logger.warn({ event: 'zeroise_journal_close_failed', err }, `purge journal did not close cleanly: ${errorMessage(err)}`));
      await p.vault.close().catch((err: unknown) => this.logger.warn({ event: 'zeroise_vault_close_failed', err }, `vault did not close cleanly: ${errorMessage(err)}`));
      await this.destroyKey(p.keyProvider, info);
    }
    if (info.key === 'not_destroyed') {
      this.logger.fatal(
        { event: 'zeroised', reason, key: info.key, keyError: info.keyError },
        `device zeroised (${reason}) but the device key was NOT destroyed: ${info.keyError}; vault closed, nobody is identified; destroy the key where it is stored`,
      );
    } else {
      this.logger.error({ event: 'zeroised', reason, key: info.key }, `device ${describeZeroised(info)}, vault closed; punches already accepted will still be delivered`);
    }
    this.publishStateSoon();
    return info;
  }

  private async destroyKey(provider: { zeroiseKek(): Promise<void> }, info: ZeroisedInfo): Promise<void> {
    try {
      await provider.zeroiseKek();
      info.key = 'destroyed';
      delete info.keyError;
    } catch (err) {
      info.key = 'not_destroyed';
      info.keyError = describeError(err);
    }
    this.writeMarker(info);
  }

  /** The marker could not be written (disk full, I/O error): the key is still destroyed, and this is said. */
  private writeMarker(info: ZeroisedInfo): void {
    try {
      writeZeroisedMarker(this.config.dataDir, info);
    } catch (err) {
      info.markerError = `tamper marker not written: ${describeError(err)}`;
      this.logger.fatal({ event: 'zeroise_marker_failed', err }, `${info.markerError}: after a restart the device would not know it was zeroised`);
    }
  }

  /** At start, zeroised earlier but the key not (known to be) destroyed: try again and record the outcome. */
  private async retryKeyDestruction(): Promise<void> {
    const z = this.#zeroised;
    if (!z || !this.config.vault) return;
    const { keyProviderFor } = await import('./privacy.js');
    await this.destroyKey(keyProviderFor(this.config.vault), z);
    if (z.key === 'destroyed') this.logger.error({ event: 'zeroise_key_destroyed' }, 'device key destroyed now (the zeroisation before the restart had not completed it)');
    else this.logger.fatal({ event: 'zeroise_key_failed', keyError: z.keyError }, `the device key is still NOT destroyed: ${z.keyError}`);
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

  /** Decommission (src/decommission): roles drop what they hold of the org in memory, as for an OrgWithdraw. */
  forgetOrg(orgId: string): void {
    this.subjectsErased.forEach((fn) => fn(orgId, 'all'));
  }

  /** Accept a punch: resolves once it is committed to disk. */
  punch(input: PunchInput): Promise<QueuedPunch> {
    if (this.stopped) return Promise.reject(new TallyboxError('AGENT_STOPPED', 'agent is stopping; punch not accepted'));
    return this.outbox.accept({ clockSynced: clockSynced(this.config.clock), ...input });
  }

  /** C1 role (wifi): enrolment windows and re-enrolment lists for command results (set by the role). */
  #wifiCommands: WifiCommandHooks | undefined;
  setWifiCommands(hooks: WifiCommandHooks | undefined): void {
    this.#wifiCommands = hooks;
  }

  /**
   * A result that answers no command now (a C1 enrolment window closing):
   * counter 0, signed by the device identity, queued durably like every result.
   */
  async publishLateResult(orgId: string, r: Omit<CommandResultProps, 'deviceId' | 'counter' | 'atMs' | 'keyId' | 'signature'>): Promise<void> {
    const identity = this.#privacy?.identity;
    const unsigned: CommandResultProps = { ...r, deviceId: this.config.device.id, counter: 0, atMs: Date.now(), ...(identity ? { keyId: identity.keyId } : {}) };
    const { resultSigningBytes } = await import('../link/commands/result.js');
    await this.results.enqueue(orgId, identity ? { ...unsigned, signature: identity.sign(Buffer.from(resultSigningBytes(unsigned))) } : unsigned);
  }

  /** C1 role (wifi): subjects whose phone needs re-enrolment, a count for DeviceState. */
  #wifiReenrolmentNeeded = 0;
  setWifiReenrolmentNeeded(count: number): void {
    if (count === this.#wifiReenrolmentNeeded) return;
    this.#wifiReenrolmentNeeded = count;
    this.publishStateSoon();
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
      bdSeq: this.link.current?.bdSeq ?? this.lastBdSeq,
      queueDepth: this.outbox.depth,
      queueCapacity: this.outbox.capacity,
      lastSeq: this.outbox.lastSeq,
      clock: clockSynced(this.config.clock) ? ClockStatus.CLOCK_STATUS_SYNCED : ClockStatus.CLOCK_STATUS_UNSYNCED,
      alarms: [
        ...[...this.outbox.activeAlarms()].map(([a, detail]) => ({ code: ALARM_CODES[a], detail, sinceMs: this.alarmsSince.get(a) ?? now })),
        ...(this.#zeroised ? [{ code: AlarmCode.ALARM_CODE_TAMPER, detail: `${describeZeroised(this.#zeroised)}; inspect and re-provision`, sinceMs: this.#zeroised.atMs }] : []),
        ...(this.privacyRuntime?.alarms(now) ?? []),
      ],
      purgesPending: this.privacyRuntime?.purgesPending() ?? 0,
      peripherals: [...this.peripherals].map(([name, p]) => ({ name, online: p.online, detail: p.detail })),
      wifiReenrolmentNeeded: this.#wifiReenrolmentNeeded,
      ...(this.#printers.length ? { printers: this.#printers } : {}),
      atMs: now,
      // Link state, transport and dropped oversized packets (src/link/connection.ts).
      ...this.link.presence(),
    };
  }

  /** Results of rejected commands: sent, rate-limited, unrouted, dropped, held (undefined without an intake). */
  intakeStats(): RejectionGateStats | undefined {
    return this.intake?.rejectionStats();
  }

  get session(): Session | undefined {
    return this.link.current;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.stateTimer) clearTimeout(this.stateTimer);
    this.privacyRuntime?.stop();
    if (this.clockWatch) clearInterval(this.clockWatch);
    this.drain.stop();
    await this.link.stop();
    await this.intake?.close();
    await this.incidents?.stop();
    await this.privacy?.journal.close();
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
