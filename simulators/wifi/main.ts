/**
 * `tallybox-sim wifi`: a simulated office Wi-Fi (office.ts) for a C1 agent in
 * another process, or for the real `hostapd_cli`:
 *
 *   tallybox-sim wifi --dir DIR [--ifaces wlan0,wlan1] [--phones N] [--random N]
 *                     [--dhcp-script PATH] [--control-port P]
 *
 * Prints {"ready":true,"ctrlDir":…,"leaseFile":…,"control":URL,"phones":[…]} and
 * runs until SIGINT/SIGTERM. Point the agent at it with
 * `c1.hostapd.ctrlDir: DIR/hostapd` and `c1.dnsmasq.leaseFile: DIR/dhcp.leases`;
 * `hostapd_cli -p DIR/hostapd -i wlan0` attaches to it as to hostapd.
 */
import { parseArgs } from 'node:util';
import { startWifiControl } from './control.js';
import { WifiOffice } from './office.js';

export { WifiOffice, makeMac } from './office.js';
export { SimHostapdSocket } from './hostapd-socket.js';

const HELP = `usage: tallybox-sim wifi --dir DIR [--ifaces wlan0,wlan1] [--phones N] [--random N] [--dhcp-script PATH] [--control-port P]

A hostapd-compatible control socket per interface in DIR/hostapd, a dnsmasq
lease file DIR/dhcp.leases, and phones (N with vendor MACs, --random N with
private ones). Control (JSON, 127.0.0.1): GET /state, POST /phones, /join,
/leave, /roam, /rotate, /wrong-password, /restart (see simulators/wifi/control.ts).
`;

function count(v: string | undefined, what: string): number {
  const n = v === undefined ? 0 : Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 1000) throw new Error(`${what} must be an integer in 0..1000`);
  return n;
}

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { dir: { type: 'string' }, ifaces: { type: 'string' }, phones: { type: 'string' }, random: { type: 'string' }, 'dhcp-script': { type: 'string' }, 'control-port': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    process.stderr.write(`tallybox-sim wifi: ${(err as Error).message}\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (!values.dir) {
    process.stderr.write(`tallybox-sim wifi: --dir is required\n${HELP}`);
    return 2;
  }
  let phones: number;
  let random: number;
  let port: number;
  try {
    phones = count(values.phones, '--phones');
    random = count(values.random, '--random');
    port = values['control-port'] === undefined ? 0 : Number(values['control-port']);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('--control-port is not a port number');
  } catch (err) {
    process.stderr.write(`tallybox-sim wifi: ${(err as Error).message}\n`);
    return 2;
  }
  const ifaces = (values.ifaces ?? 'wlan0,wlan1').split(',').filter(Boolean);
  if (ifaces.some((i) => !/^[A-Za-z0-9_.-]{1,15}$/.test(i))) {
    process.stderr.write('tallybox-sim wifi: --ifaces must be interface names separated by commas\n');
    return 2;
  }
  const office = new WifiOffice({ dir: values.dir, ifaces, ...(values['dhcp-script'] ? { dhcpScript: values['dhcp-script'] } : {}) }).start();
  for (let i = 0; i < phones; i++) office.addPhone();
  for (let i = 0; i < random; i++) office.addPhone({ randomised: true });
  const control = await startWifiControl({ office, port });
  process.stdout.write(
    `${JSON.stringify({ ready: true, ctrlDir: office.ctrlDir, leaseFile: office.leaseFile, control: control.url, phones: [...office.phones.values()].map((p) => ({ id: p.id, mac: p.mac, randomised: p.randomised })) })}\n`,
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await control.close();
  office.stop();
  return 0;
}
