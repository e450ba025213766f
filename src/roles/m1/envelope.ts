/**
 * What the M1 role stores in the vault for one fingerprint template: the
 * module's 512-byte template prefixed with the library page it lives at on
 * the sensor. The vault seals the whole envelope (AES-256-GCM, record identity
 * as AAD), so the page ↔ (org, subject, record) mapping lives in the vault,
 * dies with the org's key, and needs no table of its own.
 *
 *   "TBF1" (4) | page u16 BE (2) | template (n)
 */
export const ENVELOPE_MAGIC = Buffer.from('TBF1', 'ascii');
export const ENVELOPE_HEADER = ENVELOPE_MAGIC.length + 2;

export function sealPageEnvelope(page: number, template: Uint8Array): Buffer {
  if (!Number.isInteger(page) || page < 0 || page > 0xffff) throw new RangeError(`page ${page} is not 0..65535`);
  const out = Buffer.allocUnsafe(ENVELOPE_HEADER + template.length);
  ENVELOPE_MAGIC.copy(out, 0);
  out.writeUInt16BE(page, ENVELOPE_MAGIC.length);
  out.set(template, ENVELOPE_HEADER);
  return out;
}

/**
 * Page and template of a stored envelope; `page` is null for a bare template
 * (one enrolled by another path, e.g. synced from the cloud): the role then
 * gives it a page and rewrites it as an envelope.
 */
export function openPageEnvelope(bytes: Buffer): { page: number | null; template: Buffer } {
  if (bytes.length > ENVELOPE_HEADER && bytes.subarray(0, ENVELOPE_MAGIC.length).equals(ENVELOPE_MAGIC)) {
    return { page: bytes.readUInt16BE(ENVELOPE_MAGIC.length), template: bytes.subarray(ENVELOPE_HEADER) };
  }
  return { page: null, template: bytes };
}
