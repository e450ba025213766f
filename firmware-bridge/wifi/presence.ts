/**
 * Presence is the union of every source: a station is present while any
 * radio or AP (any source + interface) holds it. So a phone roaming from
 * 2.4 to 5 GHz — or between APs, whichever order the disconnect and connect
 * arrive in — is still present; a leave counts only after `leaveGraceMs`
 * with no source holding it.
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
}

export interface PresenceTrackerEvents {
  /** A station became present (first holder, not back within the grace). */
  joined: [mac: string, iface: string];
  /** A station left (no holder for leaveGraceMs). */
  left: [mac: string];
  /** A station's DHCP fingerprint was learnt or changed. */
  fingerprint: [mac: string, fp: DhcpFingerprint];
}

const isDhcp = (s: PresenceEvent['source']) => s === 'dnsmasq-lease' || s === 'dnsmasq-script';

export class PresenceTracker extends EventEmitter<PresenceTrackerEvents> {
  readonly #dhcpIsPresence: boolean;
  readonly #graceMs: number;
  readonly #maxFp: number;
  /** mac → holders ("source iface"). */
  readonly #holders = new Map<string, Set<string>>();
  readonly #leaving = new Map<string, NodeJS.Timeout>();
  readonly #fp = new Map<string, { fp: DhcpFingerprint; key: string }>();

  constructor(opts: PresenceTrackerOptions) {
    super();
    this.#dhcpIsPresence = opts.dhcpIsPresence;
    this.#graceMs = opts.leaveGraceMs ?? 15_000;
    this.#maxFp = opts.maxFingerprints ?? 4096;
  }

  isPresent(mac: string): boolean {
    return this.#holders.has(mac) || this.#leaving.has(mac);
  }

  get presentCount(): number {
    return new Set([...this.#holders.keys(), ...this.#leaving.keys()]).size;
  }

  fingerprintOf(mac: string): DhcpFingerprint | undefined {
    return this.#fp.get(mac)?.fp;
  }

  apply(ev: PresenceEvent): void {
    if (ev.type === 'joined' && ev.fingerprint) this.#learn(ev.mac, ev.fingerprint);
    if (isDhcp(ev.source) && !this.#dhcpIsPresence) return;
    const holder = `${ev.source} ${ev.iface}`;
    if (ev.type === 'joined') this.#hold(ev.mac, holder, ev.iface);
    else this.#release(ev.mac, holder);
  }

  /** A source's full list for one interface (hostapd's catch-up after an attach): joins and leaves by difference. */
  replace(source: PresenceEvent['source'], iface: string, macs: readonly string[]): void {
    if (isDhcp(source) && !this.#dhcpIsPresence) return;
    const holder = `${source} ${iface}`;
    const now = new Set(macs);
    for (const [mac, hs] of this.#holders) if (hs.has(holder) && !now.has(mac)) this.#release(mac, holder);
    for (const mac of now) this.#hold(mac, holder, iface);
  }

  stop(): void {
    for (const t of this.#leaving.values()) clearTimeout(t);
    this.#leaving.clear();
    this.#holders.clear();
    this.#fp.clear();
  }

  #hold(mac: string, holder: string, iface: string): void {
    let hs = this.#holders.get(mac);
    const wasLeaving = this.#leaving.get(mac);
    if (wasLeaving) {
      // Back within the grace (roamed to another band or AP): still the same visit.
      clearTimeout(wasLeaving);
      this.#leaving.delete(mac);
    }
    if (!hs) {
      hs = new Set();
      this.#holders.set(mac, hs);
      hs.add(holder);
      if (!wasLeaving) this.emit('joined', mac, iface);
      return;
    }
    hs.add(holder);
  }

  #release(mac: string, holder: string): void {
    const hs = this.#holders.get(mac);
    if (!hs?.delete(holder) || hs.size > 0) return;
    this.#holders.delete(mac);
    const t = setTimeout(() => {
      this.#leaving.delete(mac);
      this.emit('left', mac);
    }, this.#graceMs);
    t.unref?.();
    this.#leaving.set(mac, t);
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
