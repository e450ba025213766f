/**
 * "Is this unknown private MAC probably the enrolled phone with a new
 * address?" — asked only to tell the organisation that a re-enrolment is
 * needed, never to punch or to identify anyone. Strict: every field both
 * sides have must be equal, and a distinctive one (hostname, or a client id
 * that is not just the MAC) must be among them; the requested-options list
 * alone is shared by every phone of a model, so it is never enough.
 */
import type { DhcpFingerprint } from '../../../firmware-bridge/wifi/events.js';

/** A client id that is only 01 + the MAC (iOS) says nothing beyond the MAC. */
function stableClientId(fp: DhcpFingerprint, mac: string): string | undefined {
  const cid = fp.clientId?.toLowerCase();
  if (!cid) return undefined;
  return cid === `01:${mac}` || cid.replace(/[:-]/g, '') === `01${mac.replace(/:/g, '')}` ? undefined : cid;
}

export function sameDevice(a: { mac: string; fp: DhcpFingerprint }, b: { mac: string; fp: DhcpFingerprint }): boolean {
  const pairs: Array<[string | undefined, string | undefined, boolean]> = [
    [a.fp.hostname?.toLowerCase(), b.fp.hostname?.toLowerCase(), true],
    [stableClientId(a.fp, a.mac), stableClientId(b.fp, b.mac), true],
    [a.fp.requestedOptions, b.fp.requestedOptions, false],
  ];
  let distinctive = false;
  for (const [x, y, strong] of pairs) {
    if (x === undefined || y === undefined) continue;
    if (x !== y) return false;
    if (strong) distinctive = true;
  }
  return distinctive;
}
