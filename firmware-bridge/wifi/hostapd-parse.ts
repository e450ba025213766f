/**
 * hostapd control-interface messages (pure functions).
 *
 * Unsolicited events arrive as `<level>EVENT args` (`<3>AP-STA-CONNECTED
 * aa:bb:cc:dd:ee:ff`); replies to a request have no `<` prefix (`OK`, `PONG`,
 * a station block). A join is AP-STA-CONNECTED (after the 4-way handshake),
 * never an association request: a phone with the wrong password associates
 * too. Every other event is known-ignorable.
 */
import { canonicalMac } from './events.js';

export interface HostapdEvent {
  level: number;
  name: string;
  args: string[];
}

/** An unsolicited event, or undefined when the datagram is a reply (or garbage). */
export function parseHostapdEvent(msg: string): HostapdEvent | undefined {
  const m = /^<(\d)>(\S+)(?:\s+(.*))?$/s.exec(msg.trim());
  if (!m) return undefined;
  return { level: Number(m[1]), name: m[2]!, args: m[3] ? m[3].trim().split(/\s+/) : [] };
}

export type StationChange = { change: 'joined' | 'left'; mac: string };

/** AP-STA-CONNECTED / AP-STA-DISCONNECTED with a valid MAC; anything else: undefined. */
export function stationChange(ev: HostapdEvent): StationChange | undefined {
  const change = ev.name === 'AP-STA-CONNECTED' ? 'joined' : ev.name === 'AP-STA-DISCONNECTED' ? 'left' : undefined;
  if (!change) return undefined;
  const mac = ev.args[0] ? canonicalMac(ev.args[0]) : undefined;
  return mac ? { change, mac } : undefined;
}

/**
 * A STA-FIRST / STA-NEXT reply: the station's MAC on the first line, then
 * `key=value` lines. `FAIL`, an empty reply or a first line that is no MAC:
 * the end of the list.
 */
export function parseStaReply(reply: string): { mac: string; authorized: boolean } | undefined {
  const lines = reply.split('\n');
  const mac = canonicalMac(lines[0] ?? '');
  if (!mac) return undefined;
  // flags=[AUTH][ASSOC][AUTHORIZED]…: only an authorized station has passed the handshake.
  const flags = lines.find((l) => l.startsWith('flags='));
  return { mac, authorized: flags === undefined || flags.includes('[AUTHORIZED]') };
}

/**
 * The SSID an interface's control socket serves, from a STATUS reply:
 * `bss[i]=wlan0` / `ssid[i]=Office` pairs (one per BSS of the radio). The BSS
 * named like the socket wins; otherwise `ssid[0]`. hostapd prints the SSID
 * as text with non-printable octets escaped; it is used as it is.
 */
export function parseStatusSsid(reply: string, iface: string): string | undefined {
  const bss = new Map<string, string>();
  const ssid = new Map<string, string>();
  for (const line of reply.split('\n')) {
    const m = /^(bss|ssid)\[(\d+)\]=(.*)$/.exec(line.replace(/\r$/, ''));
    if (!m) continue;
    (m[1] === 'bss' ? bss : ssid).set(m[2]!, m[3]!);
  }
  for (const [i, name] of bss) if (name === iface && ssid.get(i)) return ssid.get(i);
  const first = ssid.get('0');
  return first ? first : undefined;
}
