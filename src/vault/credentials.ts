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

/** A credential found: who holds it, in which org, and which of the values asked for it was. */
export interface CredentialMatch {
  orgId: string;
  subjectId: string;
  value: string;
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
    return (await this.findMany([keys], kind, [value]))[0]?.subjectId;
  }

  /**
   * Every (org, value) of `values` enrolled in one of these orgs, in org order then value order: one
   * statement for all of them (a join or a card tap is on the punch path, and each statement is a
   * thread-pool round trip that can wait behind another connection's fsync). A row failing its MAC
   * is quarantined and matches nothing.
   */
  private async findMany(orgs: readonly OrgKeys[], kind: CredentialKind, values: readonly string[]): Promise<CredentialMatch[]> {
    if (orgs.length === 0 || values.length === 0) return [];
    // Which (org, value) each keyed hash stands for: the statement's IN lists cross orgs and hashes.
    const wanted = new Map<string, { keys: OrgKeys; value: string; lookup: Buffer; order: number }>();
    const lookups: Buffer[] = [];
    orgs.forEach((keys, o) =>
      values.forEach((value, v) => {
        const lookup = lookupHash(keys, kind, value);
        const k = `${keys.orgId}\u0000${lookup.toString('hex')}`;
        if (!wanted.has(k)) wanted.set(k, { keys, value, lookup, order: o * values.length + v });
        lookups.push(lookup);
      }),
    );
    const marks = (n: number) => Array.from({ length: n }, () => '?').join(',');
    // Only the columns not already known: this runs for every org on every card tap and phone join.
    const sql = `SELECT org_id, lookup, record_id, subject_id, key_version, quarantine_code, mac FROM credentials WHERE org_id IN (${marks(orgs.length)}) AND kind = ? AND lookup IN (${marks(lookups.length)})`;
    const rows = await (await this.#ctx.db.prepared(sql)).all<Pick<CredentialRow, 'org_id' | 'lookup' | 'record_id' | 'subject_id' | 'key_version' | 'quarantine_code' | 'mac'>>([...orgs.map((k) => k.orgId), kind, ...lookups]);
    const out: Array<CredentialMatch & { order: number }> = [];
    for (const found of rows) {
      const w = wanted.get(`${found.org_id}\u0000${found.lookup.toString('hex')}`);
      if (!w) continue; // one org's hash under another org's id: not a match
      const orgId = w.keys.orgId;
      const row: CredentialRow = { ...found, org_id: orgId, kind, lookup: w.lookup, quarantined_at_ms: null };
      const bad = checkMac(credentialRowMac(w.keys, row), row.mac);
      if (bad) {
        await this.#ctx.quarantine.mark('credentials', row.record_id ?? '', orgId, bad, { where: 'org_id = ? AND kind = ? AND lookup = ?', params: [orgId, kind, w.lookup] });
        continue;
      }
      if (isMetadataCode(row.quarantine_code)) continue;
      out.push({ orgId, subjectId: row.subject_id, value: w.value, order: w.order });
    }
    return out.sort((a, b) => a.order - b.order).map(({ order: _, ...m }) => m);
  }

  async lookup(orgId: string, kind: CredentialKind, value: string): Promise<string | undefined> {
    const keys = await this.#ctx.keyring.keysFor(orgId, false);
    return keys ? this.find(keys, kind, value) : undefined;
  }

  /** Which org(s) and subject(s) hold this credential: one HMAC per org, for a reader shared by orgs. */
  async identify(kind: CredentialKind, value: string): Promise<Array<{ orgId: string; subjectId: string }>> {
    return (await this.identifyMany(kind, [value])).map(({ orgId, subjectId }) => ({ orgId, subjectId }));
  }

  /**
   * identify() for several values at once (a phone's MAC unscoped and scoped to the SSID it
   * joined): which (org, subject, value) hold any of them, among organisations with a live data
   * key that `accept` admits (default: all). Two statements whatever the count.
   */
  async identifyMany(kind: CredentialKind, values: readonly string[], accept: (orgId: string) => boolean = () => true): Promise<CredentialMatch[]> {
    const { keyring } = this.#ctx;
    const orgs: OrgKeys[] = [];
    for (const orgId of await this.liveOrgs()) {
      if (!accept(orgId)) continue;
      const keys = await keyring.keysFor(orgId, false);
      if (keys) orgs.push(keys);
    }
    return this.findMany(orgs, kind, values);
  }

  /** Organisations with a data key that are not being withdrawn, in order. */
  async liveOrgs(): Promise<string[]> {
    return (await this.#ctx.keyring.orgIds()).filter((o) => !this.#ctx.keyring.isPurging(o));
  }

  async remove(orgId: string, kind: CredentialKind, value: string): Promise<boolean> {
    const keys = await this.#ctx.keyring.keysFor(orgId, false);
    if (!keys) return false;
    const r = await this.#ctx.db.run('DELETE FROM credentials WHERE org_id = ? AND kind = ? AND lookup = ?', [orgId, kind, lookupHash(keys, kind, value)]);
    return r.changes > 0;
  }
}
