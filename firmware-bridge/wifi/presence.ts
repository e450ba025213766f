/**
 * Presence is the union of every source: a station is present while any
 * radio or AP (any source + interface) holds it. So a phone roaming from
 * 2.4 to 5 GHz — or between APs, whichever order the disconnect and connect
 * arrive in — is still present; a leave counts only after `leaveGraceMs`
 * with no source holding it.
 *
 * Presence is kept per group (the C1 role groups interfaces by SSID): a
 * phone moving between the 2.4 and 5 GHz radios of one SSID stays present,
 * while one that moves to another SSID joins that SSID (and leaves the old
 * one after the grace). Without a `groupOf`, every interface is one group.
 *
 * DHCP says who arrived but is a poor witness of who left (a lease outlives
 * the visit by hours): when association-level sources (hostapd) are in use,
 * DHCP only contributes fingerprints; without them, a lease is presence.
 */
import { EventEmitter } from 'node:events';
import { fingerprintKey, type DhcpFingerprint, type PresenceEvent } from './events.js';

export interface PresenceTrackerOptions {
  /** DHCP events hold presence (no hostapd source configured). */
  dhcpIsPresence: boolean;
  /** A station without any holder for this long has left (default 15 s). */
  leaveGraceMs?: number;
  /** Fingerprints remembered (default 4096 MACs). */
  maxFingerprints?: number;
  /** The group (SSID) of an interface, asked at each event ('' : unknown). */
  groupOf?: (iface: string) => string;
}

export interface PresenceTrackerEvents {
  /**
   * A station became present in a group (first holder, not back within the
   * grace). live false: learnt from a catch-up (hostapd's station list after an
   * attach, a lease file's first read), so it may have been there all along.
   */
  joined: [mac: string, iface: string, group: string, live: boolean];
  /** A station left a group (no holder there for leaveGraceMs). */
  left: [mac: string, group: string];
  /** A station's DHCP fingerprint was learnt or changed. */
  fingerprint: [mac: string, fp: DhcpFingerprint];
}

// A MAC has no NUL; an SSID may be anything else, so the key splits at the last NUL.
const presenceKey = (group: string, mac: string) => `${group}\u0000${mac}`;
const macOf = (pk: string) => pk.slice(pk.lastIndexOf('\u0000') + 1);
const groupOfKey = (pk: string) => pk.slice(0, pk.lastIndexOf('\u0000'));

const isDhcp = (s: PresenceEvent['source']) => s === 'dnsmasq-lease' || s === 'dnsmasq-script';

export class PresenceTracker extends EventEmitter<PresenceTrackerEvents> {
  readonly #dhcpIsPresence: boolean;
  readonly #graceMs: number;
  readonly #maxFp: number;
  readonly #groupOf: (iface: string) => string;
  /** Presence key (group NUL mac) → holders ("source iface"). */
  readonly #holders = new Map<string, Set<string>>();
  readonly #leaving = new Map<string, NodeJS.Timeout>();
  readonly #fp = new Map<string, { fp: DhcpFingerprint; key: string }>();

  constructor(opts: PresenceTrackerOptions) {
    super();
    this.#dhcpIsPresence = opts.dhcpIsPresence;
    this.#graceMs = opts.leaveGraceMs ?? 15_000;
    this.#maxFp = opts.maxFingerprints ?? 4096;
    this.#groupOf = opts.groupOf ?? (() => '');
  }

  /** Present in any group. */
  isPresent(mac: string): boolean {
    for (const k of this.#holders.keys()) if (macOf(k) === mac) return true;
    for (const k of this.#leaving.keys()) if (macOf(k) === mac) return true;
    return false;
  }

  /** Phones present (in any group). */
  get presentCount(): number {
    return new Set([...this.#holders.keys(), ...this.#leaving.keys()].map(macOf)).size;
  }

  fingerprintOf(mac: string): DhcpFingerprint | undefined {
    return this.#fp.get(mac)?.fp;
  }

  apply(ev: PresenceEvent): void {
    if (ev.type === 'joined' && ev.fingerprint) this.#learn(ev.mac, ev.fingerprint);
    if (isDhcp(ev.source) && !this.#dhcpIsPresence) return;
    const holder = `${ev.source} ${ev.iface}`;
    const pk = presenceKey(this.#groupOf(ev.iface), ev.mac);
    if (ev.type === 'joined') this.#hold(pk, holder, ev.iface, ev.catchUp !== true);
    else this.#release(pk, holder);
  }

  /** A source's full list for one interface (hostapd's catch-up after an attach): joins and leaves by difference. */
  replace(source: PresenceEvent['source'], iface: string, macs: readonly string[]): void {
    if (isDhcp(source) && !this.#dhcpIsPresence) return;
    const holder = `${source} ${iface}`;
    const group = this.#groupOf(iface);
    const now = new Set(macs.map((m) => presenceKey(group, m)));
    for (const [pk, hs] of this.#holders) if (hs.has(holder) && !now.has(pk)) this.#release(pk, holder);
    for (const pk of now) this.#hold(pk, holder, iface, false);
  }

  stop(): void {
    for (const t of this.#leaving.values()) clearTimeout(t);
    this.#leaving.clear();
    this.#holders.clear();
    this.#fp.clear();
  }

  #hold(pk: string, holder: string, iface: string, live: boolean): void {
    let hs = this.#holders.get(pk);
    const wasLeaving = this.#leaving.get(pk);
    if (wasLeaving) {
      // Back within the grace (roamed to another band or AP of the same SSID): still the same visit.
      clearTimeout(wasLeaving);
      this.#leaving.delete(pk);
    }
    if (!hs) {
      hs = new Set();
      this.#holders.set(pk, hs);
      hs.add(holder);
      if (!wasLeaving) this.emit('joined', macOf(pk), iface, groupOfKey(pk), live);
      return;
    }
    hs.add(holder);
  }

  #release(pk: string, holder: string): void {
    const hs = this.#holders.get(pk);
    if (!hs?.delete(holder) || hs.size > 0) return;
    this.#holders.delete(pk);
    const t = setTimeout(() => {
      this.#leaving.delete(pk);
      this.emit('left', macOf(pk), groupOfKey(pk));
    }, this.#graceMs);
    t.unref?.();
    this.#leaving.set(pk, t);
  }

  #learn(mac: string, next: DhcpFingerprint): void {
    const prev = this.#fp.get(mac);
    // Sources know different parts (the lease: client id, hostname; the script: also the requested options): merged.
    const fp = { ...prev?.fp, ...next };
    const key = fingerprintKey(fp);
    if (!key) return;
    if (prev?.key === key) return;
    this.#fp.delete(mac);
    this.#fp.set(mac, { fp: { ...fp }, key });
    if (this.#fp.size > this.#maxFp) this.#fp.delete(this.#fp.keys().next().value!);
    this.emit('fingerprint', mac, { ...fp });
  }
}
