#!/usr/bin/env node
// Forwards one hook event to the Tallybox agent's Wi-Fi event socket (a Unix
// stream socket, 0600). Called by hostapd-action.sh and dnsmasq-script.sh;
// dependency-free so it runs from the repository or /opt/tallybox as it is.
//   forward.mjs hostapd-cli IFACE EVENT MAC
//   forward.mjs dnsmasq-script ACTION MAC IP [HOSTNAME]     (DNSMASQ_* from the environment)
// It never fails its caller: hostapd_cli and dnsmasq carry on whether or not
// the agent is running; a lost event is said on stderr, without the MAC.
import { connect } from 'node:net';

const sock = process.env.TALLYBOX_WIFI_SOCKET || '/run/tallybox/wifi/events.sock';
const [source, ...a] = process.argv.slice(2);
let msg;
if (source === 'hostapd-cli') msg = { v: 1, source, iface: a[0] ?? '', event: a[1] ?? '', mac: a[2] ?? '' };
else if (source === 'dnsmasq-script') {
  const env = {};
  for (const k of ['DNSMASQ_INTERFACE', 'DNSMASQ_CLIENT_ID', 'DNSMASQ_SUPPLIED_HOSTNAME', 'DNSMASQ_REQUESTED_OPTIONS', 'DNSMASQ_LEASE_EXPIRES', 'DNSMASQ_VENDOR_CLASS']) if (process.env[k]) env[k] = process.env[k];
  msg = { v: 1, source, action: a[0] ?? '', mac: a[1] ?? '', ip: a[2] ?? '', ...(a[3] ? { hostname: a[3] } : {}), env };
} else {
  process.stderr.write('tallybox-forward: USAGE: forward.mjs hostapd-cli IFACE EVENT MAC | dnsmasq-script ACTION MAC IP [HOSTNAME]\n');
  process.exit(0);
}
const c = connect(sock);
const t = setTimeout(() => c.destroy(new Error('timeout')), 2000);
c.on('connect', () => c.end(`${JSON.stringify(msg)}\n`));
c.on('close', () => clearTimeout(t));
c.on('error', (err) => {
  process.stderr.write(`tallybox-forward: ${err.code ?? err.message}: event not delivered to ${sock}\n`);
});
