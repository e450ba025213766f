/**
 * Row MACs: the plain columns a decision is made on are bound to their row.
 *
 * Some metadata cannot sit inside a ciphertext because SQL selects on it or
 * the vault reads it without decrypting: whether a subject is a minor and the
 * kind and time of a consent (the consent check reads them), which subject a
 * card or MAC belongs to, a template's modality and slot. Without a binding,
 * anyone who can write vault.db could make a minor an adult or point a card at
 * another person and nothing would fail to decrypt. Each such row carries an
 * HMAC-SHA256, keyed by the org's row-integrity sub-key (HKDF of its data
 * key), over the row's identity and every bound column, as the code
 * interprets them. A row whose MAC does not verify is quarantined
 * (METADATA_MAC_MISMATCH, or METADATA_MAC_MISSING for a row without one) and
 * never acted on; the rest of the vault keeps working.
 *
 * Not bound: timestamps that only drive retention (last_seen_ms, created_at_ms)
 * and the quarantine columns. A MAC proves a row was written by this vault,
 * not that it is the newest such row: putting back an older copy of a row
 * (a deleted consent, say) is not detected.
 */
import { timingSafeEqual } from 'node:crypto';
import { TallyboxError } from '../util/errors.js';
import type { ConsentKind } from './consent.js';
import type { OrgKeys } from './org-keys.js';
import type { CredentialKind, Modality } from './types.js';

export const METADATA_MAC_MISMATCH = 'METADATA_MAC_MISMATCH';
export const METADATA_MAC_MISSING = 'METADATA_MAC_MISSING';

/** Quarantine codes that mean "a bound column was changed": the row's metadata must not be used. */
export function isMetadataCode(code: string | null | undefined): boolean {
  return code === METADATA_MAC_MISMATCH || code === METADATA_MAC_MISSING;
}

type Field = string | number | boolean | Buffer | null;

const DOMAIN = Buffer.from('tallybox.v1 row-mac', 'utf8');

/**
 * Type-tagged, length-prefixed encoding: "a|bc" ≠ "ab|c", the integer 1 ≠ the
 * string "1", and a value of an unexpected type (a blob stored in an integer
 * column, a fraction) gets a tag no writer produces, so its MAC cannot match.
 */
export function encodeRow(table: string, fields: readonly Field[]): Buffer {
  // Runs once per row on every start-up walk: one allocation, no concat.
  const tagged: Array<[string, Buffer | string]> = [['t', table]];
  for (const f of fields) {
    if (f === null) tagged.push(['z', '']);
    else if (typeof f === 'boolean') tagged.push(['o', f ? '1' : '0']);
    else if (typeof f === 'string') tagged.push(['s', f]);
    else if (typeof f === 'number' && Number.isSafeInteger(f)) tagged.push(['i', String(f)]);
    else if (Buffer.isBuffer(f)) tagged.push(['b', f]);
    else tagged.push(['?', String(f)]);
  }
  let total = DOMAIN.length;
  for (const [, body] of tagged) total += 5 + (typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.length);
  const out = Buffer.allocUnsafe(total);
  let at = DOMAIN.copy(out, 0);
  for (const [tag, body] of tagged) {
    out.write(tag, at, 'latin1');
    const len = typeof body === 'string' ? out.write(body, at + 5, 'utf8') : body.copy(out, at + 5);
    out.writeUInt32BE(len, at + 1);
    at += 5 + len;
  }
  return out;
}

// One binding per table: the complete list of what that table's MAC covers.

export interface SubjectBinding {
  orgId: string;
  subjectId: string;
  recordId: string;
  keyVersion: number;
  minor: boolean;
}

export interface ConsentBinding {
  orgId: string;
  subjectId: string;
  kind: ConsentKind;
  recordId: string;
  keyVersion: number;
  grantedAtMs: number;
  /** Evidence is sealed on its own (AAD = its record); the MAC only says whether there was any. */
  hasEvidence: boolean;
}

export interface TemplateBinding {
  recordId: string;
  orgId: string;
  subjectId: string;
  modality: Modality;
  slot: number;
  keyVersion: number;
}

export interface CredentialBinding {
  recordId: string;
  orgId: string;
  kind: CredentialKind;
  /** The HMAC of the card number or MAC address: binds the owner to this credential, not to any row. */
  lookup: Buffer;
  subjectId: string;
  keyVersion: number;
}

export function subjectMac(keys: OrgKeys, b: SubjectBinding): Buffer {
  return keys.rowMac(encodeRow('subjects', [b.orgId, b.subjectId, b.recordId, b.keyVersion, b.minor]));
}

export function consentMac(keys: OrgKeys, b: ConsentBinding): Buffer {
  return keys.rowMac(encodeRow('consents', [b.orgId, b.subjectId, b.kind, b.recordId, b.keyVersion, b.grantedAtMs, b.hasEvidence]));
}

export function templateMac(keys: OrgKeys, b: TemplateBinding): Buffer {
  return keys.rowMac(encodeRow('templates', [b.recordId, b.orgId, b.subjectId, b.modality, b.slot, b.keyVersion]));
}

export function credentialMac(keys: OrgKeys, b: CredentialBinding): Buffer {
  return keys.rowMac(encodeRow('credentials', [b.recordId, b.orgId, b.kind, b.lookup, b.subjectId, b.keyVersion]));
}

/**
 * Compare a stored MAC with the expected one. Returns the error to quarantine
 * with, or null when the row is intact. Constant-time compare: the MAC must not
 * be discoverable byte by byte.
 */
export function checkMac(expected: Buffer, stored: unknown): TallyboxError | null {
  if (stored === null || stored === undefined) {
    return new TallyboxError(METADATA_MAC_MISSING, `${METADATA_MAC_MISSING}: the row carries no integrity MAC (written outside the vault)`);
  }
  if (!Buffer.isBuffer(stored) || stored.length !== expected.length || !timingSafeEqual(stored, expected)) {
    return new TallyboxError(METADATA_MAC_MISMATCH, `${METADATA_MAC_MISMATCH}: a bound column of the row was changed outside the vault`);
  }
  return null;
}
