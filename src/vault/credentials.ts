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

/** One (org, value) a look-up asks for, with its keyed hash, and its place in the answer. */
interface Wanted {
  keys: OrgKeys;
  value: string;
  lookup: Buffer;
  hex: string;
  order: number;
}

type CachedRow = Pick<CredentialRow, 'record_id' | 'subject_id' | 'key_version' | 'quarantine_code' | 'mac'>;

/** Credential rows kept in memory (the HMACs and owners, as in the file) at most; an org with more is read per look-up. */
const MAX_CACHED_ROWS = 50_000;

export class CredentialStore {
  readonly #ctx: VaultContext;
  readonly #subjects: SubjectStore;
  /**
   * The credential rows of (org, kind), by lookup hash (hex): read once, then matched in memory
   * (a card tap or a phone join would otherwise wait for a thread-pool round trip). Exactly what
   * the file holds (keyed hashes, owners, row MACs, each checked at every match): dropped whole
   * before any statement that may write vault.db runs, on any connection (Sqlite.onWrite), so
   * an erasure, a quarantine or a new card is never answered from an old copy. `null`: too many
   * rows to keep, read per look-up.
   */
  readonly #cache = new Map<string, Map<string, CachedRow> | null>();
  #cachedRows = 0;
  readonly #stopWatching: () => void;

  constructor(opts: { ctx: VaultContext; subjects: SubjectStore }) {
    this.#ctx = opts.ctx;
    this.#subjects = opts.subjects;
    this.#stopWatching = opts.ctx.db.onWrite(() => this.#drop());
  }

  #drop(): void {
    this.#cache.clear();
    this.#cachedRows = 0;
  }

  /** The vault is closing: nothing kept, nothing watched. */
  close(): void {
    this.#stopWatching();
    this.#drop();
  }

  /** The cached rows of these orgs for `kind` (read in one statement for those not cached yet). */
  async #rowsOf(orgs: readonly OrgKeys[], kind: CredentialKind): Promise<Map<string, Map<string, CachedRow> | null>> {
    const k = (orgId: string) => `${orgId}\u0000${kind}`;
    const missing = orgs.filter((o) => !this.#cache.has(k(o.orgId)));
    if (missing.length > 0) {
      const marks = missing.map(() => '?').join(',');
      const sql = `SELECT org_id, lookup, record_id, subject_id, key_version, quarantine_code, mac FROM credentials WHERE kind = ? AND org_id IN (${marks})`;
      const rows = await (await this.#ctx.db.prepared(sql)).all<CachedRow & Pick<CredentialRow, 'org_id' | 'lookup'>>([kind, ...missing.map((o) => o.orgId)]);
      const fresh = new Map<string, Map<string, CachedRow>>(missing.map((o) => [o.orgId, new Map()]));
      for (const { org_id, lookup, ...row } of rows) fresh.get(org_id)?.set(lookup.toString('hex'), row);
      for (const [orgId, m] of fresh) {
        const keep = this.#cachedRows + m.size <= MAX_CACHED_ROWS;
        this.#cache.set(k(orgId), keep ? m : null);
        if (keep) this.#cachedRows += m.size;
      }
    }
    return new Map(orgs.map((o) => [o.orgId, this.#cache.get(k(o.orgId)) ?? null]));
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
   * Every (org, value) of `values` enrolled in one of these orgs, in org order then value order:
   * matched against the cached rows (no statement at all once an org's rows are read), or, for an
   * org with too many rows to keep, one statement for all of them. A row failing its MAC is
   * quarantined and matches nothing.
   */
  private async findMany(orgs: readonly OrgKeys[], kind: CredentialKind, values: readonly string[]): Promise<CredentialMatch[]> {
    if (orgs.length === 0 || values.length === 0) return [];
    // Each (org, value) once, with its keyed hash.
    const wanted = new Map<string, Wanted>();
    orgs.forEach((keys, o) =>
      values.forEach((value, v) => {
        const lookup = lookupHash(keys, kind, value);
        const hex = lookup.toString('hex');
        const k = `${keys.orgId}\u0000${hex}`;
        if (!wanted.has(k)) wanted.set(k, { keys, value, lookup, hex, order: o * values.length + v });
      }),
    );
    const cached = await this.#rowsOf(orgs, kind);
    const hits: Array<{ w: Wanted; row: CachedRow }> = [];
    const unread = [...wanted.values()].filter((w) => {
      const m = cached.get(w.keys.orgId);
      const row = m?.get(w.hex);
      if (row) hits.push({ w, row });
      return m === null;
    });
    if (unread.length > 0) {
      // Orgs with too many rows to keep: one statement (its IN lists cross orgs and hashes, so match the pairs after).
      const orgIds = [...new Set(unread.map((w) => w.keys.orgId))];
      const marks = (n: number) => Array.from({ length: n }, () => '?').join(',');
      const sql = `SELECT org_id, lookup, record_id, subject_id, key_version, quarantine_code, mac FROM credentials WHERE org_id IN (${marks(orgIds.length)}) AND kind = ? AND lookup IN (${marks(unread.length)})`;
      const rows = await (await this.#ctx.db.prepared(sql)).all<CachedRow & Pick<CredentialRow, 'org_id' | 'lookup'>>([...orgIds, kind, ...unread.map((w) => w.lookup)]);
      for (const { org_id, lookup, ...row } of rows) {
        const w = wanted.get(`${org_id}\u0000${lookup.toString('hex')}`);
        if (w) hits.push({ w, row }); // else one org's hash under another org's id: not a match
      }
    }
    const out: Array<CredentialMatch & { order: number }> = [];
    for (const { w, row: found } of hits) {
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
