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
import { PunchMethod } from '../../proto/index.js';
import { silentLogger, type Logger } from '../../util/log.js';
import type { PunchGate } from '../kit/punch-gate.js';
import { SerialQueue } from '../kit/serial-queue.js';
import { errorCode, type PeripheralSink } from '../kit/supervisor.js';
import type { C1Config } from './config.js';
import { sameDevice } from './fingerprint.js';
import { decideJoin, siteClock, type SubjectHistory } from './rules.js';
import { createSources, type C1Sources } from './sources.js';

export interface C1Vault {
  identifyCredential(kind: 'wifi_mac', value: string): Promise<Array<{ orgId: string; subjectId: string }>>;
}

export interface C1Sink extends PeripheralSink {
  /** DeviceState: subjects whose phone needs re-enrolment (a count). */
  setWifiReenrolmentNeeded?(count: number): void;
}

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
}

interface SubjectState extends SubjectHistory {
  orgId: string;
  subjectId: string;
  /** MACs of this subject's enrolled phones present now (memory only). */
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
}

const key = (orgId: string, subjectId: string) => `${orgId}\u0000${subjectId}`;

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
  /** MAC → subjects it is enrolled for (memory only, while present). */
  readonly #known = new Map<string, string[]>();
  /** Unknown private MACs present now (memory only). */
  readonly #unknownPrivate = new Set<string>();
  readonly #reenrol = new Set<string>();
  #tail: Promise<unknown> = Promise.resolve();
  readonly stats: C1Stats = { joins: 0, enrolledJoins: 0, punches: 0, repeats: 0, notPunched: 0, unknown: 0, reenrolmentNeeded: 0 };

  constructor(opts: C1RoleOptions) {
    super();
    this.#o = opts;
    this.#log = (opts.logger ?? silentLogger()).child({ component: 'c1' });
    this.#wall = opts.wallClock ?? Date.now;
    this.#mono = opts.monotonic ?? (() => performance.now());
    const c = opts.config;
    // With hostapd there is a witness of who left; DHCP then only lends fingerprints.
    this.tracker = new PresenceTracker({ dhcpIsPresence: c.dhcpIsPresence ?? !c.hostapd, leaveGraceMs: c.leaveGraceSec * 1000 });
    this.tracker.on('joined', (mac) => this.#enqueue(() => this.#joined(mac)));
    this.tracker.on('left', (mac) => this.#enqueue(() => this.#left(mac)));
    this.tracker.on('fingerprint', (mac, fp) => this.#enqueue(() => this.#fingerprint(mac, fp)));
    this.sources = createSources({ config: c, dataDir: opts.dataDir, tracker: this.tracker, sink: opts.sink, logger: this.#log, ...(opts.backoff ? { backoff: opts.backoff } : {}) });
  }

  /** Everything queued so far has been handled (tests, benches). */
  settled(): Promise<unknown> {
    return this.#tail;
  }

  async start(): Promise<void> {
    await Promise.all(this.sources.supervisors.map((s) => s.start()));
  }

  async stop(): Promise<void> {
    await this.sources.close();
    this.tracker.stop();
    await this.#tail;
  }

  #enqueue(job: () => Promise<void>): void {
    this.#tail = this.#queue.run(job).catch((err: unknown) => this.#log.error({ event: 'c1_event_failed', code: errorCode(err) }, `presence event not handled: ${errorCode(err)}`));
  }

  async #joined(mac: string): Promise<void> {
    this.stats.joins++;
    const matches = await this.#o.vault.identifyCredential('wifi_mac', mac);
    if (matches.length === 0) {
      this.stats.unknown++;
      // Only an exact enrolment identifies: an unknown private MAC is at most a hint that someone must re-enrol.
      if (isRandomisedMac(mac)) {
        this.#unknownPrivate.add(mac);
        this.#checkRotation(mac);
      }
      return;
    }
    this.stats.enrolledJoins++;
    this.#known.set(
      mac,
      matches.map((m) => key(m.orgId, m.subjectId)),
    );
    const fp = this.tracker.fingerprintOf(mac);
    for (const m of matches) {
      const s = this.#subject(m.orgId, m.subjectId);
      const wasAway = s.present.size === 0;
      s.present.add(mac);
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

  async #left(mac: string): Promise<void> {
    this.#unknownPrivate.delete(mac);
    const ks = this.#known.get(mac);
    this.#known.delete(mac);
    for (const k of ks ?? []) {
      const s = this.#subjects.get(k);
      if (!s) continue;
      s.present.delete(mac);
      if (s.present.size === 0) s.leftAtMono = this.#mono();
    }
    // The old address gone: an unknown private MAC that arrived meanwhile may be its successor.
    if (ks) for (const other of this.#unknownPrivate) this.#checkRotation(other);
  }

  async #fingerprint(mac: string, fp: DhcpFingerprint): Promise<void> {
    const ks = this.#known.get(mac);
    if (ks) {
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
    this.#o.gate.forget(orgId, [subjectId]);
    return { ok: true, counts: { c1Subjects: had ? 1 : 0 } };
  }

  async eraseOrg(orgId: string): Promise<ErasureReport> {
    let n = 0;
    for (const s of [...this.#subjects.values()]) if (s.orgId === orgId) n += (await this.eraseSubject(orgId, s.subjectId)).counts.c1Subjects ?? 0;
    this.#o.gate.forget(orgId, 'all');
    return { ok: true, counts: { c1Subjects: n } };
  }

  subjectsErased(orgId: string, ids: readonly string[] | 'all'): void {
    if (ids === 'all') void this.eraseOrg(orgId);
    else for (const id of ids) void this.eraseSubject(orgId, id);
  }
}
