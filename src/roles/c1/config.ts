/**
 * The `c1:` config section: where presence comes from and when a join is a punch.
 *
 *   c1:
 *     timeZone: Asia/Singapore            # the device's day and working hours
 *     hostapd: { ctrlDir: /var/run/hostapd, interfaces: [wlan0, wlan1] }
 *     dnsmasq: { leaseFile: /tmp/dhcp.leases }
 *     eventSocket: /run/tallybox/wifi/events.sock   # hostapd-action.sh, dnsmasq-script.sh
 *     ssids: { wlan0: Office, wlan1: Office, wlan2: Guest }   # else hostapd's STATUS ssid[0]
 *     enrolment: { ambiguityGuardSec: 3 }
 *     rules: { firstJoinOfDay: true, rejoinAfterMin: 120, workingHours: { from: "07:00", to: "20:00" } }
 */
import { z } from 'zod';
import { loadZone } from './zoneinfo.js';

const HHMM = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be HH:MM (24 h)');

function validTimeZone(tz: string): boolean {
  // The system's zone file first (no ICU data loaded: zoneinfo.ts); Intl only for a name it does not have.
  if (loadZone(tz)) return true;
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

export const C1ConfigSchema = z
  .object({
    /** IANA time zone of the site (calendar day, working hours). */
    timeZone: z.string().refine(validTimeZone, 'must be an IANA time zone such as Europe/Berlin or Asia/Singapore').default('UTC'),
    hostapd: z
      .object({
        ctrlDir: z.string().min(1).default('/var/run/hostapd'),
        /** One control socket each: every radio and SSID (2.4 and 5 GHz). */
        interfaces: z
          .array(z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, 'must be an interface name'))
          .min(1)
          .max(32),
        /** Where the agent binds its own client sockets (default DATADIR/hostapd-client, 0700). */
        clientDir: z.string().min(1).optional(),
        /** PING heartbeat after this much silence (ms). */
        heartbeatMs: z.number().int().min(100).max(600_000).default(5000),
      })
      .strict()
      .optional(),
    dnsmasq: z
      .object({
        leaseFile: z.string().min(1),
        pollMs: z.number().int().min(0).max(60_000).default(1000),
      })
      .strict()
      .optional(),
    /** The socket the shipped hook scripts forward to (0600 in a 0700 directory). */
    eventSocket: z.string().min(1).max(100).optional(),
    /**
     * Whether a DHCP lease or hook event alone makes a phone present (DHCP is a poor witness of
     * who left). Default: only when no hostapd control socket is configured; set false when the
     * hostapd-action.sh hook feeds the event socket.
     */
    dhcpIsPresence: z.boolean().optional(),
    /**
     * The SSID each interface serves (hostapd interfaces, and the DHCP interface of the hooks, e.g.
     * br-lan, when it serves one SSID only). Wins over what hostapd's STATUS says; an interface
     * with no known SSID matches only credentials enrolled without SSIDs.
     */
    ssids: z
      .record(
        z.string().regex(/^[A-Za-z0-9_.:@-]{1,32}$/, 'keys must be interface names'),
        z.string().refine((s) => Buffer.byteLength(s) >= 1 && Buffer.byteLength(s) <= 32, 'an SSID is 1-32 bytes'),
      )
      .default({}),
    enrolment: z
      .object({
        /**
         * After the first new phone joins an armed SSID, wait this long: a second new phone
         * in that time makes it a conflict (nothing enrolled: the device never guesses).
         */
        ambiguityGuardSec: z.number().min(0).max(60).default(3),
      })
      .strict()
      .default({ ambiguityGuardSec: 3 }),
    /** Leave counted after this long without any radio holding the phone (roaming). */
    leaveGraceSec: z.number().min(0).max(3600).default(15),
    rules: z
      .object({
        /** The first join of a calendar day (site time zone) is a punch. */
        firstJoinOfDay: z.boolean().default(true),
        /** A join after at least this long away is a punch too (0: off). */
        rejoinAfterMin: z.number().min(0).max(1440).default(0),
        /** Joins outside this window are no punch (site time zone; from > to spans midnight). */
        workingHours: z.object({ from: HHMM, to: HHMM }).strict().optional(),
      })
      .strict()
      .default({ firstJoinOfDay: true, rejoinAfterMin: 0 }),
  })
  .strict()
  .refine((c) => c.hostapd || c.dnsmasq || c.eventSocket, { message: 'a c1 section needs at least one presence source: hostapd, dnsmasq or eventSocket' });

export type C1Config = z.infer<typeof C1ConfigSchema>;
