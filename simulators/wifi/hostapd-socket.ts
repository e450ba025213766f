/**
 * A hostapd-compatible control socket for one interface: enough of hostapd's
 * control protocol that the real `hostapd_cli -p DIR -i IFACE` (and the
 * agent's own client) attach and see station events. Commands: PING, ATTACH,
 * DETACH, STATUS (with ssid[0]), STA-FIRST, STA-NEXT, STA; anything else is `UNKNOWN COMMAND`, as
 * hostapd answers. A station joining sends the events hostapd sends around
 * a connection (some the agent must ignore), a restart removes the socket and
 * drops every attached monitor, as a restarting hostapd does.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { UnixDgramSocket } from '../../firmware-bridge/wifi/unix-dgram.js';

export interface SimHostapdOptions {
  dir: string;
  iface: string;
  /** The SSID its STATUS reports (ssid[0]); default "Office". */
  ssid?: string;
}

export class SimHostapdSocket {
  readonly dir: string;
  readonly iface: string;
  readonly path: string;
  readonly ssid: string;
  #sock: UnixDgramSocket | null = null;
  readonly #monitors = new Set<string>();
  /** Associated and authorized stations, in association order. */
  readonly stations = new Set<string>();
  readonly stats = { requests: 0, eventsSent: 0 };

  constructor(opts: SimHostapdOptions) {
    this.dir = opts.dir;
    this.iface = opts.iface;
    this.path = join(opts.dir, opts.iface);
    this.ssid = opts.ssid ?? 'Office';
  }

  get running(): boolean {
    return this.#sock !== null;
  }

  get monitors(): number {
    return this.#monitors.size;
  }

  start(): void {
    if (this.#sock) return;
    mkdirSync(this.dir, { recursive: true, mode: 0o770 });
    const s = new UnixDgramSocket();
    s.bind(this.path, { replace: true });
    s.on('message', (data, from) => this.#request(data.toString('utf8').trim(), from));
    s.on('error', () => undefined); // a client vanished between its request and our answer
    s.listen().ref(false);
    this.#sock = s;
  }

  /** hostapd stopped (or the radio restarts): the socket file goes, monitors are forgotten. */
  stop(): void {
    this.#sock?.close();
    this.#sock = null;
    this.#monitors.clear();
  }

  restart(): void {
    this.stop();
    this.start();
  }

  /** A station completes the handshake: the events hostapd sends, in its order. */
  connect(mac: string): void {
    this.stations.add(mac);
    this.broadcast(`<3>AP-STA-CONNECTED ${mac}`);
    this.broadcast(`<3>EAPOL-4WAY-HS-COMPLETED ${mac}`);
  }

  /** A phone with the wrong password: associates, never connects. */
  wrongPassword(mac: string): void {
    this.broadcast(`<3>AP-STA-POSSIBLE-PSK-MISMATCH ${mac}`);
    this.broadcast(`<3>AP-STA-DISCONNECTED ${mac}`);
  }

  disconnect(mac: string): void {
    if (!this.stations.delete(mac)) return;
    this.broadcast(`<3>AP-STA-DISCONNECTED ${mac}`);
  }

  broadcast(msg: string): void {
    const s = this.#sock;
    if (!s) return;
    for (const m of this.#monitors) {
      try {
        s.send(msg, m);
        this.stats.eventsSent++;
      } catch {
        // the monitor's socket is gone (hostapd_cli died): hostapd drops it too
        this.#monitors.delete(m);
      }
    }
  }

  #block(mac: string): string {
    return `${mac}\nflags=[AUTH][ASSOC][AUTHORIZED][WMM]\naid=1\ncapability=0x1\nlisten_interval=10\nsupported_rates=82 84 8b 96\ntimeout_next=NULLFUNC POLL\nrx_packets=10\ntx_packets=10\nconnected_time=1\n`;
  }

  #reply(cmd: string): string {
    const [verb, arg] = cmd.split(/\s+/, 2);
    const list = [...this.stations];
    switch (verb) {
      case 'PING':
        return 'PONG\n';
      case 'ATTACH':
      case 'DETACH':
        return 'OK\n';
      case 'STATUS':
        return `state=ENABLED\nphy=phy0\nfreq=2437\nnum_sta_non_erp=0\nbss[0]=${this.iface}\nbssid[0]=02:00:00:00:00:01\nssid[0]=${this.ssid}\nnum_sta[0]=${this.stations.size}\n`;
      case 'STA-FIRST':
        return list[0] ? this.#block(list[0]) : '';
      case 'STA-NEXT': {
        // As hostapd: FAIL for a MAC that is not associated (or no MAC), empty after the last one.
        const i = arg ? list.indexOf(arg.toLowerCase()) : -1;
        if (i < 0) return 'FAIL\n';
        const next = list[i + 1];
        return next ? this.#block(next) : '';
      }
      case 'STA':
        return arg && this.stations.has(arg.toLowerCase()) ? this.#block(arg.toLowerCase()) : 'FAIL\n';
      default:
        return 'UNKNOWN COMMAND\n';
    }
  }

  #request(cmd: string, from: string): void {
    this.stats.requests++;
    if (!from) return; // an unnamed client socket has no address to answer to
    if (cmd === 'ATTACH' || cmd.startsWith('ATTACH ')) this.#monitors.add(from);
    if (cmd === 'DETACH') this.#monitors.delete(from);
    try {
      this.#sock?.send(this.#reply(cmd), from);
    } catch {
      this.#monitors.delete(from);
    }
  }
}
