/**
 * SSID scoping of a Wi-Fi MAC credential, without teaching the vault about
 * SSIDs: a MAC enrolled for SSID "Office" is stored (as the vault's org-keyed
 * HMAC, like every credential) under a value derived from both, so a lookup
 * made for a join on any other SSID computes another HMAC and finds nothing —
 * by construction, not by a filter that could be forgotten. A MAC enrolled
 * without SSIDs is stored as itself and matches on every SSID of the router.
 *
 * The derived value has a MAC's shape (12 hex digits) because that is what
 * the vault accepts for a wifi_mac; it exists only in memory on its way into
 * the HMAC. 48 bits of SHA-256: a collision between two (SSID, MAC) pairs of
 * one office is out of reach, and it adds nothing to what the HMAC protects.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';

/** SSIDs are 1..32 octets (IEEE 802.11); anything else is no SSID. */
export function validSsid(ssid: string): boolean {
  const n = Buffer.byteLength(ssid, 'utf8');
  return n >= 1 && n <= 32;
}

/** The value stored for `mac` scoped to `ssid` (undefined: unscoped, the MAC itself). */
export function wifiCredentialValue(mac: string, ssid?: string): string {
  if (ssid === undefined) return mac;
  const hex = mac
    .trim()
    .toLowerCase()
    .replace(/[:\-.]/g, '');
  return createHash('sha256').update(`tallybox.v1\0wifi-ssid-scope\0${ssid}\0${hex}`, 'utf8').digest('hex').slice(0, 12);
}

/** The values to store for a credential bound to `ssids` (empty: every SSID). */
export function wifiCredentialValues(mac: string, ssids: readonly string[]): string[] {
  return ssids.length === 0 ? [mac] : [...new Set(ssids)].map((s) => wifiCredentialValue(mac, s));
}

/**
 * A short keyed tag of a phone for the device log and the enrolment result
 * ("enrolled phone 3fa1c09e"): keyed with a random key that lives in this
 * process only, so the tag cannot be turned back into the MAC, nor linked
 * across restarts.
 */
export function phoneTagger(): (mac: string) => string {
  const key = randomBytes(32);
  return (mac) => createHmac('sha256', key).update(mac.toLowerCase()).digest('hex').slice(0, 8);
}
