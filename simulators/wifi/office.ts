/**
 * A simulated office network: hostapd-compatible control sockets (one per
 * radio: 2.4 and 5 GHz by default), a dnsmasq-format lease file rewritten
 * whole on every change, and phones with vendor (universal) or private
 * (randomised, locally administered) MACs that join, leave, roam between
 * bands and rotate their private address. Optionally it runs a
 * --dhcp-script hook the way dnsmasq does (add/old/del MAC IP [HOSTNAME] and
 * the DNSMASQ_* environment).
 *
 * Phone MACs are made up (never a real device's), so they are fine to print.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { SerialQueue } from '../../src/util/serial-queue.js';
import { SimHostapdSocket } from './hostapd-socket.js';

export interface SimPhone {
  id: string;
  /** The MAC in use now. */
  mac: string;
  randomised: boolean;
  hostname: string;
  /** iOS style: 01 + MAC (changes with it); Android style: a stable id. */
  clientId: string;
  requestedOptions: string;
  /** The radio it is on, if any. */
  iface: string | null;
  ip: string;
}

export interface WifiOfficeOptions {
  dir: string;
  /** Interfaces, one control socket each (default wlan0, wlan1). */
  ifaces?: string[];
  /** The SSID each interface serves (its STATUS ssid[0]); default "Office" for all. */
  ssids?: Record<string, string>;
  /** Run this --dhcp-script on every lease change (with DNSMASQ_* set), as dnsmasq would. */
  dhcpScript?: string;
  /** Extra environment for the hook (TALLYBOX_WIFI_SOCKET, TALLYBOX_NODE). */
  scriptEnv?: NodeJS.ProcessEnv;
  /** Interface dnsmasq serves (DNSMASQ_INTERFACE; default br-lan). */
  dhcpIface?: string;
  leaseSec?: number;
}

/** A made-up MAC: vendor-style (universal, a fixed made-up OUI) or private (locally administered, unicast). */
export function makeMac(randomised: boolean): string {
  const b = randomBytes(6);
  if (randomised) b[0] = (b[0]! & 0xfc) | 0x02;
  else {
    b[0] = 0x3c; // universally administered, unicast
    b[1] = 0x22;
    b[2] = 0xfb;
  }
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export class WifiOffice {
  readonly ctrlDir: string;
  readonly leaseFile: string;
  readonly aps = new Map<string, SimHostapdSocket>();
  readonly phones = new Map<string, SimPhone>();
  readonly #opts: WifiOfficeOptions;
  /** Leases by MAC (outlive a visit, as dnsmasq's do). */
  readonly #leases = new Map<string, { expiry: number; ip: string; hostname: string; clientId: string }>();
  #nextIp = 10;
  #nextId = 1;
  /** dnsmasq runs its script one invocation at a time, in order. */
  readonly #hooks = new SerialQueue();
  readonly stats = { rewrites: 0, hooks: 0 };

  constructor(opts: WifiOfficeOptions) {
    this.#opts = opts;
    this.ctrlDir = join(opts.dir, 'hostapd');
    this.leaseFile = join(opts.dir, 'dhcp.leases');
    for (const iface of opts.ifaces ?? ['wlan0', 'wlan1']) this.aps.set(iface, new SimHostapdSocket({ dir: this.ctrlDir, iface, ...(opts.ssids?.[iface] ? { ssid: opts.ssids[iface] } : {}) }));
  }

  start(): this {
    mkdirSync(dirname(this.leaseFile), { recursive: true });
    for (const ap of this.aps.values()) ap.start();
    this.#writeLeases();
    return this;
  }

  stop(): void {
    for (const ap of this.aps.values()) ap.stop();
  }

  /** Hook invocations finished (tests). */
  settled(): Promise<void> {
    return this.#hooks.idle();
  }

  addPhone(opts: { id?: string; randomised?: boolean; androidStyle?: boolean } = {}): SimPhone {
    const id = opts.id ?? `phone-${this.#nextId++}`;
    if (this.phones.has(id)) throw new Error(`phone ${id} exists`);
    const randomised = opts.randomised ?? false;
    const mac = makeMac(randomised);
    const p: SimPhone = {
      id,
      mac,
      randomised,
      hostname: id,
      clientId: opts.androidStyle ? `ff:${randomBytes(4).toString('hex').match(/../g)!.join(':')}:00:01:00:01` : `01:${mac}`,
      requestedOptions: opts.androidStyle ? '1,3,6,15,26,28,51,58,59,43,114' : '1,121,3,6,15,108,114,119,252',
      iface: null,
      ip: `192.168.50.${this.#nextIp++}`,
    };
    this.phones.set(id, p);
    return p;
  }

  phone(id: string): SimPhone {
    const p = this.phones.get(id);
    if (!p) throw new Error(`no phone ${id}`);
    return p;
  }

  #ap(iface: string): SimHostapdSocket {
    const ap = this.aps.get(iface);
    if (!ap) throw new Error(`no interface ${iface}`);
    return ap;
  }

  /** The phone associates and completes the handshake on `iface`, then asks for a lease. */
  join(id: string, iface = [...this.aps.keys()][0]!): SimPhone {
    const p = this.phone(id);
    const ap = this.#ap(iface);
    if (p.iface) this.#ap(p.iface).disconnect(p.mac);
    p.iface = iface;
    ap.connect(p.mac);
    this.#dhcp(p);
    return p;
  }

  /** The phone leaves the building (its lease stays until it expires, as with dnsmasq). */
  leave(id: string): SimPhone {
    const p = this.phone(id);
    if (p.iface) this.#ap(p.iface).disconnect(p.mac);
    p.iface = null;
    return p;
  }

  /** The phone moves to another band: connects there, then the old radio sees it go (or the other way round). */
  roam(id: string, iface: string, order: 'connect-first' | 'disconnect-first' = 'connect-first'): SimPhone {
    const p = this.phone(id);
    const from = p.iface;
    const to = this.#ap(iface);
    if (order === 'disconnect-first' && from) this.#ap(from).disconnect(p.mac);
    to.connect(p.mac);
    if (order === 'connect-first' && from) this.#ap(from).disconnect(p.mac);
    p.iface = iface;
    return p;
  }

  /** A wrong password: associates, never connects. */
  wrongPassword(id: string, iface = [...this.aps.keys()][0]!): void {
    this.#ap(iface).wrongPassword(this.phone(id).mac);
  }

  /** The phone rotates its private address (iOS 18, Android 12+): gone under the old MAC, back under a new one. */
  rotate(id: string): SimPhone {
    const p = this.phone(id);
    const iface = p.iface;
    this.leave(id);
    p.mac = makeMac(true);
    p.randomised = true;
    if (p.clientId.startsWith('01:')) p.clientId = `01:${p.mac}`;
    if (iface) this.join(id, iface);
    return p;
  }

  /** hostapd restarts on one radio: its socket goes and comes back; stations re-associate. */
  restartAp(iface: string): void {
    const ap = this.#ap(iface);
    const on = [...ap.stations];
    ap.stop();
    ap.stations.clear();
    ap.start();
    for (const mac of on) ap.connect(mac);
  }

  state(): { ctrlDir: string; leaseFile: string; ifaces: Record<string, { running: boolean; monitors: number; stations: number }>; phones: SimPhone[]; leases: number } {
    const ifaces: Record<string, { running: boolean; monitors: number; stations: number }> = {};
    for (const [k, ap] of this.aps) ifaces[k] = { running: ap.running, monitors: ap.monitors, stations: ap.stations.size };
    return { ctrlDir: this.ctrlDir, leaseFile: this.leaseFile, ifaces, phones: [...this.phones.values()].map((p) => ({ ...p })), leases: this.#leases.size };
  }

  #dhcp(p: SimPhone): void {
    const expiry = Math.floor(Date.now() / 1000) + (this.#opts.leaseSec ?? 43_200);
    const action = this.#leases.has(p.mac) ? 'old' : 'add';
    this.#leases.set(p.mac, { expiry, ip: p.ip, hostname: p.hostname, clientId: p.clientId });
    this.#writeLeases();
    this.#hook(action, p);
  }

  /** Whole-file rewrite, as dnsmasq does. */
  #writeLeases(): void {
    const lines = [...this.#leases].map(([mac, l]) => `${l.expiry} ${mac} ${l.ip} ${l.hostname || '*'} ${l.clientId || '*'}\n`);
    writeFileSync(this.leaseFile, lines.join(''));
    this.stats.rewrites++;
  }

  #hook(action: 'add' | 'old' | 'del', p: SimPhone): void {
    const script = this.#opts.dhcpScript;
    if (!script) return;
    const env = {
      ...process.env,
      ...this.#opts.scriptEnv,
      DNSMASQ_INTERFACE: this.#opts.dhcpIface ?? 'br-lan',
      DNSMASQ_CLIENT_ID: p.clientId,
      DNSMASQ_SUPPLIED_HOSTNAME: p.hostname,
      DNSMASQ_REQUESTED_OPTIONS: p.requestedOptions,
      DNSMASQ_LEASE_EXPIRES: String(this.#leases.get(p.mac)?.expiry ?? 0),
    };
    const args = [action, p.mac, p.ip, p.hostname];
    void this.#hooks.run(
      () =>
        new Promise<void>((resolve) => {
          const c = spawn(script, args, { env, stdio: 'ignore' });
          c.on('exit', () => resolve());
          c.on('error', () => resolve());
          this.stats.hooks++;
        }),
    );
  }
}
