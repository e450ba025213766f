/**
 * The C1 role: staff who opted in are clocked in when their phone joins the
 * office Wi-Fi. Presence sources (sources.ts) → the union of every radio
 * (PresenceTracker) → an enrolled phone (the vault's org-keyed HMAC lookup of
 * its MAC) → the join rules (rules.ts) → the kit's punch gate (repeats).
 *
 * A MAC is personal data: it lives only in memory here, is looked up as an
 * HMAC, and never reaches a punch, a log line, DeviceState or a result.
 * A randomised MAC matches only when it was enrolled itself; when a
 * subject's enrolled phone is gone while an unknown private MAC with the same
 * DHCP fingerprint appears, the subject needs re-enrolment: counted in
 * DeviceState, never guessed into a punch.
 */
import { EventEmitter } from 'node:events';
import { isRandomisedMac, type DhcpFingerprint } from '../../../firmware-bridge/wifi/events.js';
import { PresenceTracker } from '../../../firmware-bridge/wifi/presence.js';
import type { ErasureParticipant, ErasureReport } from '../../privacy/types.js';
import type { WifiCommandHooks } from '../../agent/command-handlers.js';
import { PunchMethod, ResultCode, type CommandResultProps, type WifiEnrolmentOutcomeProps } from '../../proto/index.js';
import { silentLogger, type Logger } from '../../util/log.js';
import type { PunchGate } from '../kit/punch-gate.js';
import { SerialQueue } from '../kit/serial-queue.js';
import { errorCode, type PeripheralSink } from '../kit/supervisor.js';
import type { C1Config } from './config.js';
import { phoneTagger, wifiCredentialValue } from './credential.js';
import { EnrolmentWindows, type EnrolmentEnd, type EnrolmentRequest } from './enrolment.js';
import { sameDevice } from './fingerprint.js';
import { decideJoin, siteClock, type SubjectHistory } from './rules.js';
import { createSources, type C1Sources } from './sources.js';
import { WindowStore, restoreWindow, systemCheckpointClock, type CheckpointClock } from './window-store.js';

export interface C1Vault {
  /** Who holds any of these values (org, subject, which value), among the organisations `accept` admits: one vault turn. */
  identifyCredentials(kind: 'wifi_mac', values: readonly string[], accept?: (orgId: string) => boolean): Promise<Array<{ orgId: string; subjectId: string; value: string }>>;
  /** Organisations with a live data key that the device serves: who a phone is looked up in; a saved window of any other was erased with its org. */
  orgs(): Promise<string[]>;
  putCredential(orgId: string, kind: 'wifi_mac', value: string, subjectId: string): Promise<void>;
}

export interface C1Sink extends PeripheralSink {
  /** DeviceState: subjects whose phone needs re-enrolment (a count). */
  setWifiReenrolmentNeeded?(count: number): void;
  /** Command results: the role's enrolment windows and re-enrolment list (undefined: unregister). */
  setWifiCommands?(hooks: WifiCommandHooks | undefined): void;
  /** A result of its own (an enrolment window closing), signed and queued by the agent. */
  publishLateResult?(orgId: string, r: Omit<CommandResultProps, 'deviceId' | 'counter' | 'atMs' | 'keyId' | 'signature'>): Promise<void>;
}

const END_RESULT: Record<EnrolmentEnd, { code: ResultCode; reason: string }> = {
  enrolled: { code: ResultCode.RESULT_CODE_OK, reason: 'wifi_enrolled' },
  expired: { code: ResultCode.RESULT_CODE_FAILED, reason: 'wifi_enrolment_expired' },
  conflict: { code: ResultCode.RESULT_CODE_REFUSED, reason: 'wifi_enrolment_conflict' },
  cancelled: { code: ResultCode.RESULT_CODE_FAILED, reason: 'wifi_enrolment_cancelled' },
};

export interface C1RoleOptions {
  config: C1Config;
  dataDir: string;
  vault: C1Vault;
  gate: PunchGate;
  sink: C1Sink;
  logger?: Logger;
  wallClock?: () => number;
  monotonic?: () => number;
  backoff?: { minMs: number; maxMs: number };
  /** Whether the wall clock is synchronised (the agent's clock source); default: never (a reboot then expires restored windows). */
  clockSynced?: () => boolean;
  /** The clocks armed windows are checkpointed with (tests: another boot); default: the system's. */
  checkpointClock?: (wallSynced: boolean) => CheckpointClock;
  /** How often the time left of armed windows is saved (default 10 s). */
  checkpointMs?: number;
}

interface SubjectState extends SubjectHistory {
  orgId: string;
  subjectId: string;
  /** Presence keys (SSID NUL MAC) of this subject's enrolled phones present now (memory only). */
  present: Set<string>;
  /** The last enrolled phone seen and its fingerprint (memory only). */
  lastPhone?: { mac: string; fp: DhcpFingerprint };
}

export interface C1Stats {
  joins: number;
  enrolledJoins: number;
  punches: number;
  repeats: number;
  notPunched: number;
  unknown: number;
  reenrolmentNeeded: number;
  /** Joins on an SSID the phone is not enrolled for (scoped elsewhere): no punch. */
  otherSsid: number;
  enrolled: number;
}

const key = (orgId: string, subjectId: string) => `${orgId}\u0000${subjectId}`;
const pkey = (group: string, mac: string) => `${group}\u0000${mac}`;

export class C1Role extends EventEmitter<{ punch: [eventId: string | undefined] }> implements ErasureParticipant {
  readonly name = 'c1';
  readonly tracker: PresenceTracker;
  readonly sources: C1Sources;
  readonly #o: C1RoleOptions;
  readonly #log: Logger;
  readonly #wall: () => number;
  readonly #mono: () => number;
  readonly #queue = new SerialQueue();
  readonly #subjects = new Map<string, SubjectState>();
  /** Presence key (SSID NUL MAC) → subjects it is enrolled for (memory only, while present). */
  readonly #known = new Map<string, string[]>();
  /** Unknown private MACs present now (memory only). */
  readonly #unknownPrivate = new Set<string>();
  readonly #reenrol = new Set<string>();
  readonly stats: C1Stats = { joins: 0, enrolledJoins: 0, punches: 0, repeats: 0, notPunched: 0, unknown: 0, reenrolmentNeeded: 0, otherSsid: 0, enrolled: 0 };
  readonly windows: EnrolmentWindows;
  readonly #tag = phoneTagger();
  readonly #store: WindowStore;
  #checkpoint: NodeJS.Timeout | undefined;
  #saveFailing = false;

  constructor(opts: C1RoleOptions) {
    super();
    this.#o = opts;
    this.#log = (opts.logger ?? silentLogger()).child({ component: 'c1' });
    this.#wall = opts.wallClock ?? Date.now;
    this.#mono = opts.monotonic ?? (() => performance.now());
    const c = opts.config;
    // With hostapd there is a witness of who left; DHCP then only lends fingerprints.
    // Presence per SSID: roaming between the bands of one SSID is one visit; another SSID is another.
    this.tracker = new PresenceTracker({ dhcpIsPresence: c.dhcpIsPresence ?? !c.hostapd, leaveGraceMs: c.leaveGraceSec * 1000, groupOf: (iface) => this.ssidOf(iface) ?? '' });
    this.tracker.on('joined', (mac, _iface, group, live) => this.#enqueue(() => this.#joined(mac, group, live)));
    this.tracker.on('left', (mac, group) => this.#enqueue(() => this.#left(mac, group)));
    this.tracker.on('fingerprint', (mac, fp) => this.#enqueue(() => this.#fingerprint(mac, fp)));
    this.sources = createSources({ config: c, dataDir: opts.dataDir, tracker: this.tracker, sink: opts.sink, logger: this.#log, ...(opts.backoff ? { backoff: opts.backoff } : {}) });
    this.windows = new EnrolmentWindows({
      guardMs: c.enrolment.ambiguityGuardSec * 1000,
      monotonic: this.#mono,
      tag: this.#tag,
      commit: (req, mac) => this.#commitEnrolment(req, mac),
      ended: (req, outcome, end, why) => this.#enrolmentEnded(req, outcome, end, why),
      onChange: () => this.#saveWindows(),
    });
    this.#store = new WindowStore(opts.dataDir);
  }

  /** The SSID an interface serves: the config's `ssids`, else what hostapd's STATUS said; undefined: unknown. */
  ssidOf(iface: string): string | undefined {
    return this.#o.config.ssids[iface] ?? this.sources?.hostapd.find((h) => h.iface === iface)?.ssid;
  }

  /** Every SSID this router is known to serve (for "is this phone known to the organisation at all"). */
  knownSsids(): string[] {
    return [...new Set([...Object.values(this.#o.config.ssids), ...this.sources.hostapd.flatMap((h) => (h.ssid ? [h.ssid] : []))])];
  }

  /** What command results carry from this role (registered with the agent while the role runs). */
  commandHooks(): WifiCommandHooks {
    return {
      armEnrolment: (req) => this.#arm(req),
      reenrolmentNeeded: (orgId) => [...this.#reenrol].filter((k) => k.startsWith(`${orgId}\u0000`)).map((k) => k.slice(orgId.length + 1)),
    };
  }

  /** Everything queued so far has been handled (tests, benches). */
  settled(): Promise<void> {
    return this.#queue.idle();
  }

  async start(): Promise<void> {
    // Before the sources: the phones they list at first (already there) meet the restored windows, and do not count.
    await this.#restoreWindows();
    this.#o.sink.setWifiCommands?.(this.commandHooks());
    await Promise.all(this.sources.supervisors.map((s) => s.start()));
  }

  async stop(): Promise<void> {
    this.#o.sink.setWifiCommands?.(undefined);
    clearInterval(this.#checkpoint);
    this.#checkpoint = undefined;
    // Armed windows stay armed across the restart: saved with the time they have left, no result now.
    this.#saveWindows(await this.windows.suspend());
    await this.sources.close();
    this.tracker.stop();
    await this.#queue.idle();
  }

  #enqueue(job: () => Promise<void>): void {
    void this.#queue.run(job).catch((err: unknown) => this.#log.error({ event: 'c1_event_failed', code: errorCode(err) }, `presence event not handled: ${errorCode(err)}`));
  }

  /**
   * Who this phone is on this SSID: credentials enrolled for every SSID, and those scoped to it.
   * On the join → punch path: both values in one vault turn (the org list and one statement),
   * since every statement is a thread-pool round trip that can wait behind another fsync.
   */
  async #identify(mac: string, ssid: string | undefined): Promise<Array<{ orgId: string; subjectId: string }>> {
    const values = ssid === undefined ? [mac] : [mac, wifiCredentialValue(mac, ssid)];
    const seen = new Set<string>();
    const out: Array<{ orgId: string; subjectId: string }> = [];
    for (const m of await this.#o.vault.identifyCredentials('wifi_mac', values)) {
      const k = key(m.orgId, m.subjectId);
      if (seen.has(k)) continue; // enrolled both unscoped and for this SSID: one subject
      seen.add(k);
      out.push({ orgId: m.orgId, subjectId: m.subjectId });
    }
    return out;
  }

  /** Whether `orgId` knows this phone at all (unscoped, or scoped to any SSID of the router). */
  async #knownInOrg(orgId: string, mac: string): Promise<boolean> {
    const values = [mac, ...this.knownSsids().map((s) => wifiCredentialValue(mac, s))];
    return (await this.#o.vault.identifyCredentials('wifi_mac', values, (o) => o === orgId)).length > 0;
  }

  async #scopedElsewhere(mac: string, ssid: string | undefined): Promise<boolean> {
    const others = this.knownSsids().filter((s) => s !== ssid);
    return (
      others.length > 0 &&
      (
        await this.#o.vault.identifyCredentials(
          'wifi_mac',
          others.map((s) => wifiCredentialValue(mac, s)),
        )
      ).length > 0
    );
  }

  async #joined(mac: string, group: string, live = true): Promise<void> {
    this.stats.joins++;
    const ssid = group === '' ? undefined : group;
    const matches = await this.#identify(mac, ssid);
    const armedOrg = ssid === undefined ? undefined : this.windows.armedOrg(ssid);
    // Enrolment mode: a phone the window's organisation does not know (on any SSID) is a candidate.
    // Only a phone that arrives now: one listed at a (re)start or re-attach may have been there all along.
    if (armedOrg !== undefined && live && !matches.some((m) => m.orgId === armedOrg) && !(await this.#knownInOrg(armedOrg, mac))) this.windows.newPhone(ssid!, mac);
    if (matches.length === 0) {
      // Enrolled for another SSID of this router: known, but a join here is no punch (and no stranger).
      if (await this.#scopedElsewhere(mac, ssid)) {
        this.stats.otherSsid++;
        return;
      }
      this.stats.unknown++;
      // Only an exact enrolment identifies: an unknown private MAC is at most a hint that someone must re-enrol.
      if (isRandomisedMac(mac)) {
        this.#unknownPrivate.add(mac);
        this.#checkRotation(mac);
      }
      return;
    }
    this.stats.enrolledJoins++;
    const pk = pkey(group, mac);
    this.#known.set(
      pk,
      matches.map((m) => key(m.orgId, m.subjectId)),
    );
    const fp = this.tracker.fingerprintOf(mac);
    for (const m of matches) {
      const s = this.#subject(m.orgId, m.subjectId);
      const wasAway = s.present.size === 0;
      s.present.add(pk);
      if (fp) s.lastPhone = { mac, fp };
      else s.lastPhone = { mac, fp: s.lastPhone?.mac === mac ? s.lastPhone.fp : {} };
      if (this.#reenrol.delete(key(m.orgId, m.subjectId))) this.#publishReenrol();
      if (!wasAway) continue; // a second phone of someone already here
      await this.#maybePunch(s);
    }
  }

  async #maybePunch(s: SubjectState): Promise<void> {
    const wall = this.#wall();
    const d = decideJoin(this.#o.config.rules, this.#o.config.timeZone, s, wall, this.#mono());
    if (!d.punch) {
      this.stats.notPunched++;
      this.#log.debug({ event: 'wifi_join_not_punched', orgId: s.orgId, why: d.why }, `join not a punch: ${d.why}`);
      return;
    }
    const v = await this.#o.gate.submit({ orgId: s.orgId, subjectId: s.subjectId, method: PunchMethod.PUNCH_METHOD_WIFI });
    if (v.verdict === 'punch') {
      this.stats.punches++;
      s.lastPunchDay = siteClock(wall, this.#o.config.timeZone).day;
      this.#log.info({ event: 'wifi_punch', orgId: s.orgId, why: d.why }, `Wi-Fi punch (${d.why})`);
      this.emit('punch', v.eventId);
    } else if (v.verdict === 'repeat') this.stats.repeats++;
  }

  async #left(mac: string, group: string): Promise<void> {
    if (!this.tracker.isPresent(mac)) this.#unknownPrivate.delete(mac);
    const pk = pkey(group, mac);
    const ks = this.#known.get(pk);
    this.#known.delete(pk);
    for (const k of ks ?? []) {
      const s = this.#subjects.get(k);
      if (!s) continue;
      s.present.delete(pk);
      if (s.present.size === 0) s.leftAtMono = this.#mono();
    }
    // The old address gone: an unknown private MAC that arrived meanwhile may be its successor.
    if (ks) for (const other of this.#unknownPrivate) this.#checkRotation(other);
  }

  async #fingerprint(mac: string, fp: DhcpFingerprint): Promise<void> {
    const ks = [...this.#known].filter(([pk]) => pk.endsWith(`\u0000${mac}`)).flatMap(([, v]) => v);
    if (ks.length > 0) {
      for (const k of ks) {
        const s = this.#subjects.get(k);
        if (s) s.lastPhone = { mac, fp };
      }
      return;
    }
    if (this.#unknownPrivate.has(mac)) this.#checkRotation(mac);
  }

  /** An unknown private MAC: is it exactly one absent subject's phone with a new address? Then say so (count only). */
  #checkRotation(mac: string): void {
    const fp = this.tracker.fingerprintOf(mac);
    if (!fp) return;
    const candidates = [...this.#subjects.entries()].filter(([, s]) => s.present.size === 0 && s.lastPhone && sameDevice(s.lastPhone, { mac, fp }));
    if (candidates.length !== 1) return; // nobody, or ambiguous: never guess
    const [k, s] = candidates[0]!;
    if (this.#reenrol.has(k)) return;
    this.#reenrol.add(k);
    this.#publishReenrol();
    this.#log.info({ event: 'wifi_reenrolment_needed', orgId: s.orgId, count: this.#reenrol.size }, 'an enrolled phone seems to have a new private address: its owner needs to re-enrol it');
  }

  #publishReenrol(): void {
    this.stats.reenrolmentNeeded = this.#reenrol.size;
    this.#o.sink.setWifiReenrolmentNeeded?.(this.#reenrol.size);
  }

  #subject(orgId: string, subjectId: string): SubjectState {
    const k = key(orgId, subjectId);
    let s = this.#subjects.get(k);
    if (!s) {
      s = { orgId, subjectId, present: new Set() };
      this.#subjects.set(k, s);
    }
    return s;
  }

  // ----------------------------------------------------------- enrolment mode

  #arm(req: EnrolmentRequest): WifiEnrolmentOutcomeProps {
    const outcome = this.windows.arm(req);
    this.#log.info(
      { event: 'wifi_enrolment_armed', orgId: req.orgId, subjectId: req.subjectId, ssid: req.ssid, windowSec: req.windowSec, state: outcome.state },
      `Wi-Fi enrolment window for ${req.subjectId} on ${JSON.stringify(req.ssid)}: ${outcome.state === 1 ? `armed for ${req.windowSec} s` : 'refused, another window is armed on that SSID'}`,
    );
    return outcome;
  }

  /**
   * The windows armed before the last stop (or crash): re-armed with what is
   * left of them, or ended EXPIRED. A window of an organisation withdrawn
   * meanwhile is dropped without a result (the withdrawal's receipt covers
   * it): the purge pipeline removes it from the file, this is the second lock
   * (a file put back from a backup, a purge by an older version).
   */
  async #restoreWindows(): Promise<void> {
    let saved: ReturnType<WindowStore['load']>;
    try {
      saved = this.#store.load();
    } catch (err) {
      // Not trusted at all: nothing restored, so nothing can be enrolled through it.
      this.#log.error({ event: 'wifi_enrolment_windows_unreadable', code: errorCode(err) }, `tallybox: ${errorCode(err)}: ${(err as Error).message}`);
      return;
    }
    if (saved.length === 0) return;
    const live = await this.#liveOrgs();
    const now = this.#checkpointClock();
    for (const p of saved) {
      if (!live.has(p.req.orgId)) {
        this.#log.warn({ event: 'wifi_enrolment_window_dropped', orgId: p.req.orgId }, 'a saved Wi-Fi enrolment window of an organisation whose data was erased (or that is no longer served): dropped');
        continue;
      }
      const r = restoreWindow(p, now);
      if (r.kind === 'armed' && this.windows.restore(r.req, r.remainingMs)) {
        this.#log.info(
          { event: 'wifi_enrolment_restored', orgId: r.req.orgId, subjectId: r.req.subjectId, ssid: r.req.ssid, remainingSec: Math.round(r.remainingMs / 1000) },
          `Wi-Fi enrolment window for ${r.req.subjectId} on ${JSON.stringify(r.req.ssid)} still armed after the restart: ${Math.round(r.remainingMs / 1000)} s left`,
        );
      } else this.windows.endRestored(p.req, 'expired', r.kind === 'expired' ? r.why : 'another window is armed on that SSID');
    }
    this.#saveWindows();
  }

  /** Organisations with a live data key (a vault that fails to list them: none, so no window is restored). */
  async #liveOrgs(): Promise<Set<string>> {
    try {
      return new Set(await this.#o.vault.orgs());
    } catch (err) {
      this.#log.error({ event: 'wifi_enrolment_windows_unchecked', code: errorCode(err) }, `saved enrolment windows not restored: the vault did not list its organisations (${errorCode(err)})`);
      return new Set();
    }
  }

  #checkpointClock(): CheckpointClock {
    const synced = this.#o.clockSynced?.() ?? false;
    return (this.#o.checkpointClock ?? systemCheckpointClock)(synced);
  }

  /** Save the armed windows (the set now, or the one `suspend` returned); a checkpoint runs while any is armed. */
  #saveWindows(windows = this.windows.snapshot()): void {
    try {
      const at = this.#checkpointClock();
      this.#store.save(windows.map((w) => ({ ...w, at })));
      if (this.#saveFailing) this.#log.info({ event: 'wifi_enrolment_windows_saved' }, 'enrolment windows saved again');
      this.#saveFailing = false;
    } catch (err) {
      if (!this.#saveFailing) this.#log.error({ event: 'wifi_enrolment_windows_not_saved', code: errorCode(err) }, `armed enrolment windows not saved (a restart now ends them): ${errorCode(err)}`);
      this.#saveFailing = true;
    }
    if (windows.length > 0 && !this.#checkpoint && this.windows.armed > 0) {
      this.#checkpoint = setInterval(() => this.#saveWindows(), this.#o.checkpointMs ?? 10_000);
      this.#checkpoint.unref?.();
    } else if (this.windows.armed === 0 && this.#checkpoint) {
      clearInterval(this.#checkpoint);
      this.#checkpoint = undefined;
    }
  }

  /** The window's phone becomes the subject's: stored only as the org-keyed HMAC, scoped to the SSID. */
  async #commitEnrolment(req: EnrolmentRequest, mac: string): Promise<void> {
    await this.#o.vault.putCredential(req.orgId, 'wifi_mac', wifiCredentialValue(mac, req.ssid), req.subjectId);
    this.stats.enrolled++;
    // Still here: the join that enrolled it counts as this subject's arrival (the rules decide on a punch).
    if (this.tracker.isPresent(mac)) this.#enqueue(() => this.#joined(mac, req.ssid));
  }

  #enrolmentEnded(req: EnrolmentRequest, outcome: WifiEnrolmentOutcomeProps, end: EnrolmentEnd, why: string): void {
    const phone = outcome.phoneTag ? ` (phone ${outcome.phoneTag})` : '';
    // The device log's confirmation: subject, SSID and the phone's keyed tag, never the MAC.
    this.#log.info(
      { event: `wifi_enrolment_${end}`, orgId: req.orgId, subjectId: req.subjectId, ssid: req.ssid, ...(outcome.phoneTag ? { phone: outcome.phoneTag } : {}), why },
      `Wi-Fi enrolment for ${req.subjectId} on ${JSON.stringify(req.ssid)}: ${end}${phone}: ${why}`,
    );
    const r = END_RESULT[end];
    const late = this.#o.sink.publishLateResult?.(req.orgId, { code: r.code, reason: r.reason, detail: why, wifiEnrolment: outcome, wifiReenrolment: { subjectIds: this.commandHooks().reenrolmentNeeded(req.orgId) } });
    late?.catch((err: unknown) => this.#log.error({ event: 'wifi_enrolment_result_failed', code: errorCode(err) }, `the enrolment window's result was not queued: ${errorCode(err)}`));
  }

  // ----------------------------------------------------------- erasure (memory only: the vault holds the credentials)

  async eraseSubject(orgId: string, subjectId: string): Promise<ErasureReport> {
    const k = key(orgId, subjectId);
    const had = this.#subjects.delete(k);
    for (const [mac, ks] of this.#known) {
      const rest = ks.filter((x) => x !== k);
      if (rest.length) this.#known.set(mac, rest);
      else this.#known.delete(mac);
    }
    if (this.#reenrol.delete(k)) this.#publishReenrol();
    this.windows.cancel(orgId, [subjectId], 'subject_erased');
    this.#o.gate.forget(orgId, [subjectId]);
    return { ok: true, counts: { c1Subjects: had ? 1 : 0 } };
  }

  async eraseOrg(orgId: string): Promise<ErasureReport> {
    let n = 0;
    for (const s of [...this.#subjects.values()]) if (s.orgId === orgId) n += (await this.eraseSubject(orgId, s.subjectId)).counts.c1Subjects ?? 0;
    this.windows.cancel(orgId, 'all', 'org_erased');
    this.#o.gate.forget(orgId, 'all');
    return { ok: true, counts: { c1Subjects: n } };
  }

  subjectsErased(orgId: string, ids: readonly string[] | 'all'): void {
    if (ids === 'all') void this.eraseOrg(orgId);
    else for (const id of ids) void this.eraseSubject(orgId, id);
  }
}
