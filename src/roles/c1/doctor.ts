/**
 * `tallybox doctor`'s C1 checks (issue 11 §4): what IT needs to see on a
 * router at a glance. Each hostapd control socket answers PING with PONG
 * (and names its SSID); the dnsmasq lease file is readable and parses (the
 * malformed lines are counted, never shown: they hold MACs and hostnames);
 * the hook scripts' event socket is there, a socket, and reachable by the
 * agent's user only. Nothing is written except the client socket a PING
 * needs, in a private temporary directory removed at once.
 */
import { lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseStatusSsid } from '../../../firmware-bridge/wifi/hostapd-parse.js';
import { parseLeaseFile } from '../../../firmware-bridge/wifi/leases.js';
import { UnixDgramSocket } from '../../../firmware-bridge/wifi/unix-dgram.js';
import { describeError } from '../../util/errors.js';
import type { C1Config } from './config.js';

export interface C1Check {
  name: string;
  verdict: 'ok' | 'warn' | 'fail';
  detail: string;
}

/** One request, one reply, on a fresh client socket (hostapd answers to the sender's address). */
async function ask(sock: UnixDgramSocket, cmd: string, timeoutMs: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => {
      sock.off('message', on);
      reject(Object.assign(new Error(`no answer to ${cmd} within ${timeoutMs} ms`), { code: 'HOSTAPD_TIMEOUT' }));
    }, timeoutMs);
    const on = (data: Buffer) => {
      const msg = data.toString('utf8');
      if (msg.startsWith('<')) return; // an event (not attached, but be safe): not our reply
      clearTimeout(t);
      sock.off('message', on);
      resolve(msg);
    };
    sock.on('message', on);
    try {
      sock.send(cmd);
    } catch (err) {
      clearTimeout(t);
      sock.off('message', on);
      reject(err);
    }
  });
}

/** PING → PONG (and STATUS for the SSID) on one control socket. */
export async function pingHostapd(socketPath: string, iface: string, timeoutMs = 2000): Promise<C1Check> {
  const name = `hostapd:${iface}`;
  try {
    if (!lstatSync(socketPath).isSocket()) return { name, verdict: 'fail', detail: `${socketPath} is not a socket (is ctrl_interface set to ${dirname(socketPath)} in hostapd.conf?)` };
  } catch (err) {
    return { name, verdict: 'fail', detail: `no hostapd control socket at ${socketPath} (${(err as { code?: string }).code ?? describeError(err)}): is hostapd running with ctrl_interface=${dirname(socketPath)}?` };
  }
  const dir = mkdtempSync(join(tmpdir(), 'tbx-doctor-'));
  let sock: UnixDgramSocket | undefined;
  try {
    sock = new UnixDgramSocket();
    sock.bind(join(dir, 'c'));
    sock.connect(socketPath);
    sock.listen().ref(false);
    const pong = (await ask(sock, 'PING', timeoutMs)).trim();
    if (pong !== 'PONG') return { name, verdict: 'fail', detail: `${socketPath} answered PING with ${JSON.stringify(pong.slice(0, 20))}, not PONG` };
    const ssid = parseStatusSsid(await ask(sock, 'STATUS', timeoutMs).catch(() => ''), iface);
    return { name, verdict: 'ok', detail: `${socketPath}: PONG${ssid ? `, SSID ${JSON.stringify(ssid)}` : ', SSID not reported (set c1.ssids to scope enrolments)'}` };
  } catch (err) {
    const code = (err as { code?: string }).code;
    const hint = code === 'ECONNREFUSED' ? ' (a stale socket: hostapd is not running)' : code === 'EACCES' ? ' (the agent user needs access: ctrl_interface_group)' : '';
    return { name, verdict: 'fail', detail: `${socketPath}: ${code ?? describeError(err)}${hint}` };
  } finally {
    sock?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Readable and parseable; malformed and torn lines are counted. */
export async function checkLeaseFile(path: string): Promise<C1Check> {
  const name = 'dnsmasq-leases';
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT') return { name, verdict: 'warn', detail: `${path} does not exist yet (dnsmasq writes it at its first lease; check dhcp-leasefile= in dnsmasq.conf)` };
    return { name, verdict: 'fail', detail: `cannot read the lease file ${path}: ${code ?? describeError(err)} (the agent user must be able to read it)` };
  }
  const p = parseLeaseFile(text);
  const bad = p.malformed + p.torn;
  if (bad > 0) return { name, verdict: 'warn', detail: `${path}: ${p.leases.length} leases, ${p.malformed} malformed and ${p.torn} torn line(s) skipped (is another program writing it?)` };
  return { name, verdict: 'ok', detail: `${path}: readable, ${p.leases.length} leases, no malformed line` };
}

/** The hook scripts' socket: a socket, 0600 (no group or other access), in a 0700 directory. */
export function checkEventSocket(path: string, agentRunning: boolean): C1Check {
  const name = 'wifi-hooks';
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT' && !agentRunning) return { name, verdict: 'warn', detail: `${path} is not there (the agent creates it at start; it is not running)` };
    return { name, verdict: 'fail', detail: `${path}: ${code ?? describeError(err)}: hostapd-action.sh and dnsmasq-script.sh cannot deliver events${agentRunning ? ' (the agent is running: see its log for wifi-hooks)' : ''}` };
  }
  if (!st.isSocket()) return { name, verdict: 'fail', detail: `${path} exists and is not a socket (remove it; the agent creates the socket)` };
  const mode = st.mode & 0o777;
  if ((mode & 0o077) !== 0) return { name, verdict: 'fail', detail: `${path} is mode ${mode.toString(8).padStart(4, '0')}: anyone with access can inject presence; it must be 0600 (restart the agent, which creates it so)` };
  try {
    const dmode = lstatSync(dirname(path)).mode & 0o777;
    if ((dmode & 0o077) !== 0) return { name, verdict: 'fail', detail: `${dirname(path)} is mode ${dmode.toString(8).padStart(4, '0')}: it must be 0700` };
  } catch (err) {
    return { name, verdict: 'fail', detail: `${dirname(path)}: ${describeError(err)}` };
  }
  return { name, verdict: 'ok', detail: `${path}: a socket, 0600 in a 0700 directory` };
}

export async function c1DoctorChecks(c1: C1Config, opts: { agentRunning: boolean; timeoutMs?: number }): Promise<C1Check[]> {
  const out: C1Check[] = [];
  if (c1.hostapd) for (const iface of c1.hostapd.interfaces) out.push(await pingHostapd(join(c1.hostapd.ctrlDir, iface), iface, opts.timeoutMs));
  if (c1.dnsmasq) out.push(await checkLeaseFile(c1.dnsmasq.leaseFile));
  if (c1.eventSocket) out.push(checkEventSocket(c1.eventSocket, opts.agentRunning));
  return out;
}
