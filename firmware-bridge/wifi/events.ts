/**
 * Presence events, as every Wi-Fi source reports them: a station joined or
 * left an interface. Pure data, no business logic. The MAC is personal data:
 * these events stay in memory, between a source and the C1 role, which turns
 * a MAC into an org-keyed HMAC lookup at once and logs nothing of it.
 */

/** Where an event came from. */
export type PresenceSource = 'hostapd' | 'hostapd-cli' | 'dnsmasq-lease' | 'dnsmasq-script';

/** What DHCP tells about a client besides its MAC: compared, never logged or stored. */
export interface DhcpFingerprint {
  clientId?: string;
  hostname?: string;
  /** DNSMASQ_REQUESTED_OPTIONS: the option list the client asked for (e.g. "1,121,3,6,15,119,252"). */
  requestedOptions?: string;
}

export interface StationJoined {
  type: 'joined';
  source: PresenceSource;
  /** Interface (wlan0, wlan1, a bridge for DHCP). */
  iface: string;
  /** Canonical form: lowercase, colon-separated. */
  mac: string;
  fingerprint?: DhcpFingerprint;
  /**
   * Already there when the source started (a lease file's first read): a
   * station that did not arrive just now. Live events leave it unset.
   */
  catchUp?: boolean;
}

export interface StationLeft {
  type: 'left';
  source: PresenceSource;
  iface: string;
  mac: string;
}

export type PresenceEvent = StationJoined | StationLeft;

/** aa:bb:cc:dd:ee:ff from any of aa:bb…, AA-BB-…, aabb.ccdd.eeff, aabbccddeeff; undefined when it is not a MAC. */
export function canonicalMac(value: string): string | undefined {
  const hex = value
    .trim()
    .toLowerCase()
    .replace(/[:\-.]/g, '');
  if (!/^[0-9a-f]{12}$/.test(hex)) return undefined;
  return hex.match(/../g)!.join(':');
}

/** A locally administered address (second-lowest bit of the first octet): a phone's private, randomised MAC. */
export function isRandomisedMac(mac: string): boolean {
  const first = Number.parseInt(mac.slice(0, 2), 16);
  return Number.isFinite(first) && (first & 0x02) !== 0;
}

/** A fingerprint with at least one field: something worth comparing. */
export function fingerprintKey(fp: DhcpFingerprint | undefined): string | undefined {
  if (!fp) return undefined;
  const parts = [fp.clientId ?? '', fp.hostname ?? '', fp.requestedOptions ?? ''];
  return parts.some((p) => p !== '') ? parts.join('\u0000') : undefined;
}
