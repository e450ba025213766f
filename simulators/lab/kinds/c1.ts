/**
 * C1: an office router. The simulated office network (hostapd control
 * sockets per radio, a dnsmasq lease file) lives in the device's directory;
 * the agent's c1: section points at them. A person's phone is enrolled with
 * its MAC (a SubjectUpsert credential); presenting it joins the Wi-Fi (after
 * leaving first when it is already on, so every presentation is a visit).
 */
import { join } from 'node:path';
import { z } from 'zod';
import { CredentialKind } from '../../../src/proto/index.js';
import { WifiOffice } from '../../wifi/office.js';
import { methodUnavailable, traitMissing, unknownPeripheral } from './errors.js';
import type { LabDeviceKind } from './types.js';

const Peripherals = z
  .object({
    wifi: z
      .object({
        radios: z
          .array(z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, 'must be an interface name'))
          .min(1)
          .max(4)
          .default(['wlan0', 'wlan1']),
      })
      .strict()
      .default({ radios: ['wlan0', 'wlan1'] }),
  })
  .strict();

/** After leaving: past the agent's leave grace (0.5 s) and re-join time (0.6 s), so the next join is a visit. */
const AWAY_MS = 1500;

export const c1Kind: LabDeviceKind = {
  kind: 'c1',
  description: 'office router: Wi-Fi presence from hostapd control sockets and a dnsmasq lease file',
  peripheralsSchema: Peripherals,
  async start({ device, dir }) {
    const p = Peripherals.parse(device.peripherals);
    const wifiDir = join(dir, 'wifi');
    // One office for the device's life: its phones (and their MACs) survive an access-point outage.
    const office = new WifiOffice({ dir: wifiDir, ifaces: p.wifi.radios }).start();
    let up = true;
    const phoneOf = (person: { id: string; phone: { randomised: boolean } | undefined }) => {
      if (!person.phone) throw traitMissing(person.id, 'phone');
      return office.phones.get(person.id) ?? office.addPhone({ id: person.id, randomised: person.phone.randomised });
    };
    return {
      agentConfig: {
        c1: {
          timeZone: 'UTC',
          leaveGraceSec: 0.5,
          rules: { firstJoinOfDay: true, rejoinAfterMin: 0.01 },
          hostapd: { ctrlDir: join(wifiDir, 'hostapd'), interfaces: p.wifi.radios, heartbeatMs: 2000 },
          dnsmasq: { leaseFile: join(wifiDir, 'dhcp.leases'), pollMs: 200 },
        },
      },
      methods: ['phone'],
      peripherals: () => [{ name: 'wifi', plugged: up, detail: up ? `${[...office.phones.values()].filter((x) => x.iface).length} phones on ${p.wifi.radios.join('+')}` : 'access points down' }],
      async present(person, method) {
        if (method !== 'phone') throw methodUnavailable(device.name, method, ['phone']);
        const phone = phoneOf(person);
        if (!up) return 'no-match';
        if (phone.iface) {
          office.leave(phone.id);
          await new Promise((r) => setTimeout(r, AWAY_MS));
        }
        office.join(phone.id, p.wifi.radios[0]);
        return 'sent';
      },
      credentials: (person) => {
        if (!person.phone) return [];
        return [{ kind: CredentialKind.CREDENTIAL_KIND_WIFI_MAC, value: phoneOf(person).mac }];
      },
      modalities: () => [],
      enrol: async () => undefined,
      async setPlugged(name, plugged) {
        if (name !== 'wifi') throw unknownPeripheral(device.name, name, ['wifi']);
        if (!plugged && up) office.stop();
        else if (plugged && !up) office.start();
        up = plugged;
      },
      async close() {
        if (up) office.stop();
      },
    };
  },
};
