/**
 * Organisation data keys: the vault's key hierarchy below the device KEK.
 *
 *   device KEK (KeyProvider; never in the database)
 *     └ HKDF "dek-wrap" key: wraps each org's random 32-byte data key (DEK) in org_keys
 *         └ HKDF sub-keys of the DEK, one per purpose (crypto.ts KeyPurpose):
 *             templates | identity | credential-lookup | row-integrity | face-transform
 *
 * Sub-keys exist only in memory, derived when an org's DEK is unwrapped, and
 * only inside an OrgKeys object's private (#) fields: no property, getter or
 * method hands out the template, identity, lookup or integrity key, so they
 * cannot reach a log line, an inspect() dump, a file or a message. The
 * face-transform key is the one deliberate exception (the M2 matcher needs its
 * bytes); faceTransformKey() returns a copy the caller zeroes.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Sqlite } from '../store/sqlite.js';
import { TallyboxError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { deriveSubKey, KEY_BYTES, seal, unseal, type AadParts } from './crypto.js';

const KEK_CHECK_PLAINTEXT = Buffer.from('tallybox.v1 vault kek check', 'utf8');

/** Which AES key seals a record: biometric templates and identity fields never share one. */
export type SealPurpose = 'templates' | 'identity';

/** One org's in-memory sub-keys for one data-key version. */
export class OrgKeys {
  readonly orgId: string;
  readonly version: number;
  #templates: Buffer;
  #identity: Buffer;
  #lookup: Buffer;
  #integrity: Buffer;
  /** Seed of the org's cancelable face transform (never stored; re-derived from the DEK). */
  #faceTransform: Buffer;
  #wiped = false;

  /** Derives every sub-key from `dek`, then zeroes `dek`: the DEK itself is not kept. */
  constructor(opts: { orgId: string; version: number; dek: Buffer }) {
    const { orgId, version, dek } = opts;
    this.orgId = orgId;
    this.version = version;
    try {
      this.#templates = deriveSubKey(dek, orgId, version, 'templates');
      this.#identity = deriveSubKey(dek, orgId, version, 'identity');
      this.#lookup = deriveSubKey(dek, orgId, version, 'credential-lookup');
      this.#integrity = deriveSubKey(dek, orgId, version, 'row-integrity');
      this.#faceTransform = deriveSubKey(dek, orgId, version, 'face-transform');
    } finally {
      dek.fill(0);
    }
  }

  private live(): void {
    // Zeroed keys would still "work" and produce garbage that looks valid.
    if (this.#wiped) throw new TallyboxError('NO_ORG_KEY', `NO_ORG_KEY: the data key of organisation ${this.orgId} has been destroyed`, { orgId: this.orgId });
  }

  private aesKey(purpose: SealPurpose): Buffer {
    return purpose === 'templates' ? this.#templates : this.#identity;
  }

  seal(purpose: SealPurpose, plaintext: Uint8Array, aad: AadParts): Buffer {
    this.live();
    return seal(this.aesKey(purpose), plaintext, aad);
  }

  /**
   * Unseal, or return the error (synchronous, no throw: a start-up decrypt of
   * 10^4 records costs no promise or stack unwind per record). A record sealed
   * under a key version the org no longer has is KEY_VERSION_UNKNOWN.
   */
  tryUnseal(purpose: SealPurpose, ct: Buffer, aad: AadParts): Buffer | Error {
    try {
      this.live();
      if (aad.keyVersion !== this.version) {
        throw new TallyboxError('KEY_VERSION_UNKNOWN', `KEY_VERSION_UNKNOWN: record sealed under key v${aad.keyVersion}, org has v${this.version}`);
      }
      return unseal(this.aesKey(purpose), ct, aad);
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  /** HMAC-SHA256 under the credential-lookup key: the only use of that key. */
  lookupHmac(message: string): Buffer {
    this.live();
    return createHmac('sha256', this.#lookup).update(message, 'utf8').digest();
  }

  /** HMAC-SHA256 under the row-integrity key over an encoded row (integrity.ts). */
  rowMac(encoded: Buffer): Buffer {
    this.live();
    return createHmac('sha256', this.#integrity).update(encoded).digest();
  }

  /** A copy of the face-transform key; the caller zeroes it after use. */
  faceTransformKey(): Buffer {
    this.live();
    return Buffer.from(this.#faceTransform);
  }

  wipe(): void {
    this.#wiped = true;
    for (const k of [this.#templates, this.#identity, this.#lookup, this.#integrity, this.#faceTransform]) k.fill(0);
  }
}

/**
 * The device's view of every org's data key: unwraps (and caches) them, creates
 * new ones, forgets them on withdrawal. The KEK-derived wrap key lives in a
 * private field too and is zeroed on close.
 */
export class OrgKeyring {
  readonly #db: Sqlite;
  readonly #log: Logger;
  readonly #clock: () => number;
  #wrapKey: Buffer;
  readonly #cache = new Map<string, OrgKeys>();
  /** org_keys' org ids (see orgIds()); undefined until first read. */
  #orgIds: readonly string[] | undefined;
  /** Orgs with a withdrawal in progress: refused for writes and reads until it completes. */
  readonly #purging = new Set<string>();

  constructor(opts: { db: Sqlite; wrapKey: Buffer; log: Logger; clock: () => number }) {
    this.#db = opts.db;
    this.#wrapKey = opts.wrapKey;
    this.#log = opts.log;
    this.#clock = opts.clock;
  }

  /**
   * A known value sealed under the KEK at creation: a wrong KEK is caught at
   * open, not at first read (and before any migration touches the file).
   */
  async checkKek(providerKind: string, dbPath: string): Promise<void> {
    const aad: AadParts = { kind: 'kek.check', orgId: '', subjectId: '', recordId: 'vault', keyVersion: 0 };
    const row = await this.#db.get<{ value: Buffer }>("SELECT value FROM meta WHERE key = 'kek_check'");
    if (!row) {
      await this.#db.run("INSERT INTO meta (key, value) VALUES ('kek_check', ?)", [seal(this.#wrapKey, KEK_CHECK_PLAINTEXT, aad)]);
      return;
    }
    let ok = false;
    try {
      ok = Buffer.isBuffer(row.value) && unseal(this.#wrapKey, row.value, aad).equals(KEK_CHECK_PLAINTEXT);
    } catch {
      // Any failure to unseal means the same thing here: not this vault's KEK.
      ok = false;
    }
    if (!ok) {
      throw new TallyboxError('KEK_MISMATCH', `KEK_MISMATCH: the key-encryption key from the ${providerKind} provider is not the one ${dbPath} was sealed with; restore the original key file (a new key cannot read existing data)`, {
        provider: providerKind,
      });
    }
  }

  isPurging(orgId: string): boolean {
    return this.#purging.has(orgId);
  }

  markPurging(orgId: string): void {
    this.#purging.add(orgId);
  }

  unmarkPurging(orgId: string): void {
    this.#purging.delete(orgId);
  }

  assertNotPurging(orgId: string): void {
    if (this.#purging.has(orgId)) {
      throw new TallyboxError('ORG_PURGE_IN_PROGRESS', `ORG_PURGE_IN_PROGRESS: organisation ${orgId} is being erased; its data is unavailable`, { orgId });
    }
  }

  private dekAad(orgId: string, version: number): AadParts {
    return { kind: 'dek.wrap', orgId, subjectId: '', recordId: 'dek', keyVersion: version };
  }

  /** The org's sub-keys; with `create`, a new DEK (next version) when the org has none. */
  async keysFor(orgId: string, create: true): Promise<OrgKeys>;
  async keysFor(orgId: string, create: false): Promise<OrgKeys | undefined>;
  async keysFor(orgId: string, create: boolean): Promise<OrgKeys | undefined> {
    this.assertNotPurging(orgId);
    const cached = this.#cache.get(orgId);
    if (cached) return cached;
    const row = await this.#db.get<{ key_version: number; wrapped: Buffer }>('SELECT key_version, wrapped FROM org_keys WHERE org_id = ?', [orgId]);
    if (row) {
      let dek: Buffer;
      try {
        dek = unseal(this.#wrapKey, row.wrapped, this.dekAad(orgId, row.key_version));
      } catch (err) {
        throw new TallyboxError('KEK_MISMATCH', `KEK_MISMATCH: the data key of organisation ${orgId} (v${row.key_version}) does not unwrap with this device's KEK`, { orgId, keyVersion: row.key_version }, { cause: err });
      }
      const keys = new OrgKeys({ orgId, version: row.key_version, dek });
      this.#cache.set(orgId, keys);
      return keys;
    }
    if (!create) return undefined;
    const last = await this.#db.get<{ last_version: number }>('SELECT last_version FROM org_key_versions WHERE org_id = ?', [orgId]);
    const version = (last?.last_version ?? 0) + 1;
    const dek = randomBytes(KEY_BYTES);
    const wrapped = seal(this.#wrapKey, dek, this.dekAad(orgId, version));
    try {
      await this.#db.transaction(async () => {
        await this.#db.run('INSERT INTO org_keys (org_id, key_version, wrapped, created_at_ms) VALUES (?, ?, ?, ?)', [orgId, version, wrapped, this.#clock()]);
        await this.#db.run('INSERT INTO org_key_versions (org_id, last_version) VALUES (?, ?) ON CONFLICT (org_id) DO UPDATE SET last_version = excluded.last_version', [orgId, version]);
      });
    } catch (err) {
      dek.fill(0);
      throw err;
    }
    const keys = new OrgKeys({ orgId, version, dek });
    this.#cache.set(orgId, keys);
    this.#withOrg(orgId);
    this.#log.info({ orgId, keyVersion: version }, 'organisation data key created');
    return keys;
  }

  /**
   * Organisations with a wrapped data key (org_keys), in id order. Read from the file once, then
   * kept: the rows change only through keysFor (a new key) and the org erasure that calls forget(),
   * both in the vault's queue, and the data-directory lock keeps every other process out. It is on
   * every card tap and phone join, where a statement costs a thread-pool round trip.
   */
  async orgIds(): Promise<readonly string[]> {
    this.#orgIds ??= (await this.#db.all<{ org_id: string }>('SELECT org_id FROM org_keys ORDER BY org_id')).map((r) => r.org_id);
    return this.#orgIds;
  }

  #withOrg(orgId: string): void {
    if (this.#orgIds && !this.#orgIds.includes(orgId)) this.#orgIds = [...this.#orgIds, orgId].sort();
  }

  /** Drop (and zero) the cached keys of an org whose wrapped key was just destroyed. */
  forget(orgId: string): void {
    this.#cache.get(orgId)?.wipe();
    this.#cache.delete(orgId);
    this.#orgIds = this.#orgIds?.filter((o) => o !== orgId);
  }

  close(): void {
    for (const k of this.#cache.values()) k.wipe();
    this.#cache.clear();
    this.#orgIds = undefined;
    this.#wrapKey.fill(0);
  }
}
