/**
 * The hook messages (pure): what hostapd-action.sh and dnsmasq-script.sh send
 * through forward.mjs to the agent's event socket, one JSON object a line:
 *
 *   {"v":1,"source":"hostapd-cli","iface":"wlan0","event":"AP-STA-CONNECTED","mac":"…"}
 *   {"v":1,"source":"dnsmasq-script","action":"add","mac":"…","ip":"…","hostname":"…",
 *    "env":{"DNSMASQ_INTERFACE":"br-lan","DNSMASQ_CLIENT_ID":"…",…}}
 *
 * dnsmasq-script `add` and `old` (a renewal) are a join, `del` a leave; its
 * other actions (init, tftp, arp-add, …) and hostapd events other than
 * AP-STA-CONNECTED / AP-STA-DISCONNECTED are ignored.
 */
import { canonicalMac, type DhcpFingerprint, type PresenceEvent } from './events.js';

export type ForwardedResult = { ok: true; event: PresenceEvent } | { ok: false; reason: 'ignored' | 'malformed' };

const str = (v: unknown, max = 256): string | undefined => (typeof v === 'string' && v !== '' && v.length <= max ? v : undefined);
const IFACE = /^[A-Za-z0-9_.:@-]{1,32}$/;

export function parseForwarded(line: string): ForwardedResult {
  let m: Record<string, unknown>;
  try {
    const v = JSON.parse(line) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, reason: 'malformed' };
    m = v as Record<string, unknown>;
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  if (m.v !== 1) return { ok: false, reason: 'malformed' };
  const mac = canonicalMac(str(m.mac) ?? '');
  if (m.source === 'hostapd-cli') {
    const iface = str(m.iface, 32);
    const type = m.event === 'AP-STA-CONNECTED' ? 'joined' : m.event === 'AP-STA-DISCONNECTED' ? 'left' : undefined;
    if (!type) return typeof m.event === 'string' ? { ok: false, reason: 'ignored' } : { ok: false, reason: 'malformed' };
    if (!mac || !iface || !IFACE.test(iface)) return { ok: false, reason: 'malformed' };
    return { ok: true, event: { type, source: 'hostapd-cli', iface, mac } };
  }
  if (m.source === 'dnsmasq-script') {
    const action = m.action;
    if (action !== 'add' && action !== 'old' && action !== 'del') return typeof action === 'string' ? { ok: false, reason: 'ignored' } : { ok: false, reason: 'malformed' };
    if (!mac) return { ok: false, reason: 'malformed' };
    const env = (typeof m.env === 'object' && m.env !== null ? m.env : {}) as Record<string, unknown>;
    const ifaceEnv = str(env.DNSMASQ_INTERFACE, 32);
    const iface = ifaceEnv && IFACE.test(ifaceEnv) ? ifaceEnv : 'dhcp';
    if (action === 'del') return { ok: true, event: { type: 'left', source: 'dnsmasq-script', iface, mac } };
    const fp: DhcpFingerprint = {};
    const cid = str(env.DNSMASQ_CLIENT_ID);
    const host = str(env.DNSMASQ_SUPPLIED_HOSTNAME) ?? str(m.hostname);
    const opts = str(env.DNSMASQ_REQUESTED_OPTIONS);
    if (cid) fp.clientId = cid;
    if (host) fp.hostname = host;
    if (opts) fp.requestedOptions = opts;
    return { ok: true, event: { type: 'joined', source: 'dnsmasq-script', iface, mac, ...(Object.keys(fp).length ? { fingerprint: fp } : {}) } };
  }
  return { ok: false, reason: 'malformed' };
}
