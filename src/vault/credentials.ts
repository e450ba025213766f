/**
 * Card numbers and Wi-Fi MACs (privacy rule 2): kept only as a keyed HMAC
 * under the org's credential-lookup key, so they can be matched, never read
 * back. The lookup key is derived in memory from the org's data key and is
 * never written or handed out (org-keys.ts). Which subject a credential
 * belongs to is plain but bound by the row MAC: a row pointed at another person
 * outside the vault is quarantined and identifies no one.
 */
import { TallyboxError } from '../util/errors.js';
import { uuidv7 } from '../util/uuidv7.js';
import type { VaultContext } from './context.js';
import { checkMac, credentialMac, isMetadataCode } from './integrity.js';
import type { OrgKeys } from './org-keys.js';
import type { SubjectStore } from './subjects.js';
import { CREDENTIAL_KINDS, type CredentialKind } from './types.js';

export interface CredentialRow {
  record_id: string | null;
  org_id: string;
  kind: CredentialKind;
  lookup: Buffer;
  subject_id: string;
  key_version: number;
  quarantined_at_ms: number | null;
  quarantine_code: string | null;
  mac: Buffer | null;
}

/** Card numbers and MACs are written many ways; one canonical form keeps lookups stable. */
export function normaliseCredential(kind: CredentialKind, value: string): string {
  if (kind === 'wifi_mac') {
    const hex = value
      .trim()
      .toLowerCase()
      .replace(/[:\-.]/g, '');
    if (!/^[0-9a-f]{12}$/.test(hex)) throw new TallyboxError('INVALID_CREDENTIAL', 'INVALID_CREDENTIAL: a wifi_mac must be 12 hex digits (separators : - . allowed)');
    return hex;
  }
  if (kind === 'card') {
    const v = value.trim().toUpperCase();
    if (!/^[0-9A-Z]{1,64}$/.test(v)) throw new TallyboxError('INVALID_CREDENTIAL', 'INVALID_CREDENTIAL: a card number must be 1-64 letters or digits');
    return v;
  }
  throw new TallyboxError('INVALID_CREDENTIAL', `INVALID_CREDENTIAL: unknown credential kind ${String(kind)} (expected ${CREDENTIAL_KINDS.join(' | ')})`);
}

/** The MAC a credential row must carry (a row planted without a record id binds the empty one). */
export function credentialRowMac(keys: OrgKeys, r: CredentialRow): Buffer {
  return credentialMac(keys, { recordId: r.record_id ?? '', orgId: r.org_id, kind: r.kind, lookup: r.lookup, subjectId: r.subject_id, keyVersion: r.key_version });
}

/** The stored form of a credential. The kind is hashed too: a card number and a MAC with the same digits never collide. */
export function lookupHash(keys: OrgKeys, kind: CredentialKind, value: string): Buffer {
  return keys.lookupHmac(`tallybox.v1\0${kind}\0${normaliseCredential(kind, value)}`);
}

export class CredentialStore {
  readonly #ctx: VaultContext;
  readonly #subjects: SubjectStore;

  constructor(opts: { ctx: VaultContext; subjects: SubjectStore }) {
    this.#ctx = opts.ctx;
    this.#subjects = opts.subjects;
  }

  /** Store (or move) a credential; the subject must exist. Re-assigning it writes a new record and heals a quarantine. */
  async put(orgId: string, kind: CredentialKind, value: string, subjectId: string): Promise<void> {
    const keys = await this.#ctx.keyring.keysFor(orgId, true);
    await this.#subjects.require(orgId, subjectId);
    const lookup = lookupHash(keys, kind, value);
    const now = this.#ctx.clock();
    const recordId = uuidv7(now);
    const mac = credentialMac(keys, { recordId, orgId, kind, lookup, subjectId, keyVersion: keys.version });
    await this.#ctx.db.run(
      `INSERT INTO credentials (org_id, kind, lookup, subject_id, key_version, created_at_ms, record_id, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (org_id, kind, lookup) DO UPDATE SET subject_id = excluded.subject_id, key_version = excluded.key_version, created_at_ms = excluded.created_at_ms,
         record_id = excluded.record_id, mac = excluded.mac, quarantined_at_ms = NULL, quarantine_code = NULL`,
      [orgId, kind, lookup, subjectId, keys.version, now, recordId, mac],
    );
  }

  /**
   * The subject holding the credential in one org (keys already loaded), or
   * undefined: also when the row fails its MAC (it is then quarantined).
   */
  private async find(keys: OrgKeys, kind: CredentialKind, value: string): Promise<string | undefined> {
    const orgId = keys.orgId;
    const lookup = lookupHash(keys, kind, value);
    // Only the columns not already known: this runs for every org on every card tap.
    const found = await this.#ctx.db.get<Pick<CredentialRow, 'record_id' | 'subject_id' | 'key_version' | 'quarantine_code' | 'mac'>>(
      'SELECT record_id, subject_id, key_version, quarantine_code, mac FROM credentials WHERE org_id = ? AND kind = ? AND lookup = ?',
      [orgId, kind, lookup],
    );
    if (!found) return undefined;
    const row: CredentialRow = { ...found, org_id: orgId, kind, lookup, quarantined_at_ms: null };
    const bad = checkMac(credentialRowMac(keys, row), row.mac);
    if (bad) {
      await this.#ctx.quarantine.mark('credentials', row.record_id ?? '', orgId, bad, { where: 'org_id = ? AND kind = ? AND lookup = ?', params: [orgId, kind, lookup] });
      return undefined;
    }
    if (isMetadataCode(row.quarantine_code)) return undefined;
    return row.subject_id;
  }

  async lookup(orgId: string, kind: CredentialKind, value: string): Promise<string | undefined> {
    const keys = await this.#ctx.keyring.keysFor(orgId, false);
    return keys ? this.find(keys, kind, value) : undefined;
  }

  /** Which org(s) and subject(s) hold this credential: one HMAC per org, for a reader shared by orgs. */
  async identify(kind: CredentialKind, value: string): Promise<Array<{ orgId: string; subjectId: string }>> {
    const { db, keyring } = this.#ctx;
    const out: Array<{ orgId: string; subjectId: string }> = [];
    for (const { org_id: orgId } of await db.all<{ org_id: string }>('SELECT org_id FROM org_keys ORDER BY org_id')) {
      if (keyring.isPurging(orgId)) continue;
      const keys = await keyring.keysFor(orgId, false);
      if (!keys) continue;
      const subjectId = await this.find(keys, kind, value);
      if (subjectId !== undefined) out.push({ orgId, subjectId });
    }
    return out;
  }

  async remove(orgId: string, kind: CredentialKind, value: string): Promise<boolean> {
    const keys = await this.#ctx.keyring.keysFor(orgId, false);
    if (!keys) return false;
    const r = await this.#ctx.db.run('DELETE FROM credentials WHERE org_id = ? AND kind = ? AND lookup = ?', [orgId, kind, lookupHash(keys, kind, value)]);
    return r.changes > 0;
  }
}
