/**
 * The vault: subjects, consents, biometric templates and credentials of every
 * organisation on this device, in its own SQLite file (DATA_DIR/vault.db).
 *
 * Key hierarchy: device KEK (from a KeyProvider, never in the database)
 *   └ HKDF "dek-wrap" key wraps each org's random data key (DEK), with a key version
 *       └ HKDF sub-keys per purpose: templates | identity | credential-lookup | face-transform
 *         (face-transform seeds the org's cancelable face transform, so it dies with the DEK)
 *
 * Every personal value is sealed with AES-256-GCM (fresh nonce per write, AAD =
 * kind + org + subject + record id + key version) or, for card numbers and
 * Wi-Fi MACs, stored only as a keyed HMAC. A record that fails to decrypt is
 * quarantined (flagged, excluded, reported) and everything else keeps working.
 *
 * The vault is also the ErasableStore the purge pipeline drives (src/privacy).
 * All database work runs through one queue: sqlite3 must not interleave
 * statements of two transactions on one connection.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { chmod, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Sqlite } from '../store/sqlite.js';
import { TallyboxError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { uuidv7 } from '../util/uuidv7.js';
import type { ErasableStore, ErasureSample, ErasureScope, PurgeJob, StoreErasureResult } from '../privacy/types.js';
import type { RetentionSource } from '../privacy/retention.js';
import type { RosterSource } from '../privacy/roster.js';
import { sqliteFiles, MIN_SAMPLE_BYTES } from '../privacy/scan.js';
import { assertBiometricConsent, CONSENT_KINDS, type ConsentKind } from './consent.js';
import { deriveKekWrapKey, deriveSubKey, KEY_BYTES, seal, unseal, type AadParts } from './crypto.js';
import { type DeviceIdentity, type KeyProvider } from './keys.js';
import { SCHEMA_SQL, SCHEMA_VERSION } from './schema.js';

export const VAULT_FILE = 'vault.db';
/** Feature templates are a few KiB; the cap also keeps raw images (which must never be stored) out. */
export const MAX_TEMPLATE_BYTES = 64 * 1024;
export const MAX_DISPLAY_NAME_CHARS = 256;
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const KEK_CHECK_PLAINTEXT = Buffer.from('tallybox.v1 vault kek check', 'utf8');
/** SQLite's default limit on bound parameters is 32766; stay far below it. */
const IN_CHUNK = 500;

export type Modality = 'fingerprint' | 'face';
export const MODALITIES: readonly Modality[] = ['fingerprint', 'face'];
export type CredentialKind = 'card' | 'wifi_mac';
export const CREDENTIAL_KINDS: readonly CredentialKind[] = ['card', 'wifi_mac'];

export interface VaultOptions {
  /** Directory for vault.db (created 0700). The KEK must live elsewhere. */
  dataDir: string;
  keyProvider: KeyProvider;
  logger?: Logger;
  /** Milliseconds since the epoch; injectable for retention tests. */
  clock?: () => number;
  /** Database file name inside dataDir (default vault.db). */
  fileName?: string;
}

export interface ConsentInput {
  kind: ConsentKind;
  /** When consent was given (default: now). */
  grantedAtMs?: number;
  /** Reference to the evidence (form id, guardian's name, …): personal data, stored sealed. */
  evidence?: string;
}

export interface SubjectInput {
  subjectId: string;
  displayName: string;
  /** Aged 14 or under: biometric enrolment also needs a guardian's consent. */
  minor: boolean;
  /** Consents to record with the subject (a SubjectUpsert carries them). */
  consents?: ConsentInput[];
}

export interface ConsentView {
  grantedAtMs: number;
  /** undefined when the evidence record is quarantined. */
  evidence: string | null | undefined;
}

export interface SubjectView {
  orgId: string;
  subjectId: string;
  displayName: string;
  minor: boolean;
  consents: Partial<Record<ConsentKind, ConsentView>>;
  createdAtMs: number;
  lastSeenMs: number;
}

export interface TemplateInput {
  subjectId: string;
  modality: Modality;
  slot: number;
  bytes: Uint8Array;
}

export interface TemplateMeta {
  recordId: string;
  orgId: string;
  subjectId: string;
  modality: Modality;
  slot: number;
  createdAtMs: number;
  quarantined: boolean;
}

export interface DecryptedTemplate {
  recordId: string;
  orgId: string;
  subjectId: string;
  modality: Modality;
  slot: number;
  bytes: Buffer;
}

export type VaultTable = 'subjects' | 'consents' | 'templates';

export interface QuarantinedRecord {
  table: VaultTable;
  recordId: string;
  orgId: string;
  code: string;
  atMs: number;
}

export interface DecryptTemplatesResult {
  templates: DecryptedTemplate[];
  /** Records skipped because they are (or just became) quarantined. */
  quarantined: QuarantinedRecord[];
}

interface OrgKeys {
  version: number;
  templates: Buffer;
  identity: Buffer;
  lookup: Buffer;
  /** Seed of the org's cancelable face transform (never stored; re-derived from the DEK). */
  faceTransform: Buffer;
}

/** A batch of decrypted templates handed to a forEachTemplate callback; every `bytes` is zeroed when the callback returns. */
export type TemplateBatch = DecryptedTemplate[];

export interface ForEachTemplateResult {
  /** Templates handed to the callback. */
  templates: number;
  /** Records skipped because they are (or just became) quarantined. */
  quarantined: QuarantinedRecord[];
  batches: number;
}

interface TemplateRow {
  record_id: string;
  org_id: string;
  subject_id: string;
  modality: Modality;
  slot: number;
  key_version: number;
  ct: Buffer;
  created_at_ms: number;
  quarantined_at_ms: number | null;
  quarantine_code: string | null;
}

interface SubjectRow {
  org_id: string;
  subject_id: string;
  record_id: string;
  key_version: number;
  name_ct: Buffer;
  minor: number;
  created_at_ms: number;
  last_seen_ms: number;
  quarantined_at_ms: number | null;
  quarantine_code: string | null;
}

interface ConsentRow {
  kind: ConsentKind;
  record_id: string;
  key_version: number;
  granted_at_ms: number;
  evidence_ct: Buffer | null;
  quarantined_at_ms: number | null;
}

interface PurgeJobRow {
  job_id: string;
  kind: ErasureScope['kind'];
  org_id: string;
  subject_ids: string | null;
  request_ref: string | null;
  state: PurgeJob['state'];
  started_at_ms: number;
  attempts: number;
  counts: string;
  key_versions: string;
}

function checkId(what: string, id: unknown): string {
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    throw new TallyboxError('INVALID_ID', `INVALID_ID: ${what} must be 1-128 characters of [A-Za-z0-9._:@-] starting with a letter or digit`, { field: what });
  }
  return id;
}

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += IN_CHUNK) out.push(items.slice(i, i + IN_CHUNK));
  return out;
}

function placeholders(n: number): string {
  return new Array(n).fill('?').join(',');
}

/** Card numbers and MACs are written many ways; one canonical form keeps lookups stable. */
export function normaliseCredential(kind: CredentialKind, value: string): string {
  if (kind === 'wifi_mac') {
    const hex = value.trim().toLowerCase().replace(/[:\-.]/g, '');
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

/** Byte fragments of a sealed blob or key for the erasure scan: start, middle and end. */
function fragments(blob: Buffer | null, label: ErasureSample['label'], out: ErasureSample[]): void {
  if (!blob || blob.length < MIN_SAMPLE_BYTES) return;
  if (blob.length <= 48) {
    out.push({ bytes: Buffer.from(blob), label, scope: 'all' });
    return;
  }
  const mid = Math.floor(blob.length / 2) - 8;
  for (const at of [0, mid, blob.length - 16]) out.push({ bytes: Buffer.from(blob.subarray(at, at + 16)), label, scope: 'all' });
}

export class Vault implements ErasableStore, RetentionSource, RosterSource {
  readonly dbPath: string;
  /** The device's Ed25519 identity (signs erasure receipts). */
  readonly identity: DeviceIdentity;
  private readonly db: Sqlite;
  private readonly wrapKey: Buffer;
  private readonly log: Logger;
  private readonly clock: () => number;
  private readonly orgKeys = new Map<string, OrgKeys>();
  /** Orgs with a withdrawal in progress: refused for writes and reads until it completes. */
  private readonly purgingOrgs = new Set<string>();
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(opts: { db: Sqlite; dbPath: string; wrapKey: Buffer; identity: DeviceIdentity; log: Logger; clock: () => number }) {
    this.db = opts.db;
    this.dbPath = opts.dbPath;
    this.wrapKey = opts.wrapKey;
    this.identity = opts.identity;
    this.log = opts.log;
    this.clock = opts.clock;
  }

  /**
   * Open (creating if needed) the vault. Fails with KEY_FILE_* errors for an
   * unusable key file and KEK_MISMATCH when the KEK is not the one this vault
   * was sealed with; the database is left untouched in both cases.
   */
  static async open(opts: VaultOptions): Promise<Vault> {
    const log = opts.logger ?? silentLogger();
    const dataDir = resolve(opts.dataDir);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const kek = await opts.keyProvider.loadKek({ dataDir });
    const wrapKey = deriveKekWrapKey(kek);
    kek.fill(0);
    const identity = await opts.keyProvider.loadDeviceIdentity();
    const dbPath = join(dataDir, opts.fileName ?? VAULT_FILE);
    const db = await Sqlite.open(dbPath);
    try {
      // VACUUM's temporary copy must not land in /tmp where no purge can reach it.
      await db.exec(`PRAGMA temp_store=MEMORY; ${SCHEMA_SQL}`);
      // Ciphertexts only, but still nobody else's business. SQLite gives a new
      // -wal/-shm the main file's mode, but the ones created on this open predate the chmod.
      for (const f of sqliteFiles(dbPath)) await chmod(f, 0o600).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
      const sd = await db.get<{ secure_delete: number }>('PRAGMA secure_delete');
      if (sd?.secure_delete !== 1) throw new TallyboxError('STORAGE_UNSAFE', 'STORAGE_UNSAFE: SQLite refused secure_delete=ON; deleted records would stay on disk');
      await db.run("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", [SCHEMA_VERSION]);
      await Vault.checkKek(db, wrapKey, opts.keyProvider.kind, dbPath);
    } catch (err) {
      wrapKey.fill(0);
      await db.close().catch(() => undefined);
      throw err;
    }
    const vault = new Vault({ db, dbPath, wrapKey, identity, log, clock: opts.clock ?? Date.now });
    for (const r of await db.all<{ org_id: string }>("SELECT org_id FROM purge_jobs WHERE kind = 'org'")) vault.purgingOrgs.add(r.org_id);
    return vault;
  }

  /** A known value sealed under the KEK at creation: a wrong KEK is caught at open, not at first read. */
  private static async checkKek(db: Sqlite, wrapKey: Buffer, providerKind: string, dbPath: string): Promise<void> {
    const aad: AadParts = { kind: 'kek.check', orgId: '', subjectId: '', recordId: 'vault', keyVersion: 0 };
    const row = await db.get<{ value: Buffer }>("SELECT value FROM meta WHERE key = 'kek_check'");
    if (!row) {
      await db.run("INSERT INTO meta (key, value) VALUES ('kek_check', ?)", [seal(wrapKey, KEK_CHECK_PLAINTEXT, aad)]);
      return;
    }
    let ok = false;
    try {
      ok = unseal(wrapKey, row.value, aad).equals(KEK_CHECK_PLAINTEXT);
    } catch {
      ok = false;
    }
    if (!ok) {
      throw new TallyboxError(
        'KEK_MISMATCH',
        `KEK_MISMATCH: the key-encryption key from the ${providerKind} provider is not the one ${dbPath} was sealed with; restore the original key file (a new key cannot read existing data)`,
        { provider: providerKind },
      );
    }
  }

  async close(): Promise<void> {
    await this.serial(async () => {
      if (this.closed) return;
      this.closed = true;
      for (const k of this.orgKeys.values()) this.wipe(k);
      this.orgKeys.clear();
      this.wrapKey.fill(0);
      await this.db.close();
    });
  }

  /** The files SQLite writes for the vault: what the erasure scan reads. */
  databaseFiles(): string[] {
    return sqliteFiles(this.dbPath);
  }

  // ---------------------------------------------------------------- queue

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const guarded = async (): Promise<T> => {
      if (this.closed) throw new TallyboxError('VAULT_CLOSED', 'VAULT_CLOSED: the vault has been closed');
      return fn();
    };
    const run = this.chain.then(guarded, guarded);
    this.chain = run.catch(() => undefined);
    return run;
  }

  // ---------------------------------------------------------------- keys

  private wipe(k: OrgKeys): void {
    k.templates.fill(0);
    k.identity.fill(0);
    k.lookup.fill(0);
    k.faceTransform.fill(0);
  }

  private deriveOrgKeys(orgId: string, version: number, dek: Buffer): OrgKeys {
    const keys: OrgKeys = {
      version,
      templates: deriveSubKey(dek, orgId, version, 'templates'),
      identity: deriveSubKey(dek, orgId, version, 'identity'),
      lookup: deriveSubKey(dek, orgId, version, 'credential-lookup'),
      faceTransform: deriveSubKey(dek, orgId, version, 'face-transform'),
    };
    dek.fill(0);
    return keys;
  }

  private dekAad(orgId: string, version: number): AadParts {
    return { kind: 'dek.wrap', orgId, subjectId: '', recordId: 'dek', keyVersion: version };
  }

  private assertNotPurging(orgId: string): void {
    if (this.purgingOrgs.has(orgId)) {
      throw new TallyboxError('ORG_PURGE_IN_PROGRESS', `ORG_PURGE_IN_PROGRESS: organisation ${orgId} is being erased; its data is unavailable`, { orgId });
    }
  }

  /** The org's sub-keys; with `create`, a new DEK (next version) when the org has none. */
  private async keysFor(orgId: string, create: true): Promise<OrgKeys>;
  private async keysFor(orgId: string, create: false): Promise<OrgKeys | undefined>;
  private async keysFor(orgId: string, create: boolean): Promise<OrgKeys | undefined> {
    this.assertNotPurging(orgId);
    const cached = this.orgKeys.get(orgId);
    if (cached) return cached;
    const row = await this.db.get<{ key_version: number; wrapped: Buffer }>('SELECT key_version, wrapped FROM org_keys WHERE org_id = ?', [orgId]);
    if (row) {
      let dek: Buffer;
      try {
        dek = unseal(this.wrapKey, row.wrapped, this.dekAad(orgId, row.key_version));
      } catch (err) {
        throw new TallyboxError('KEK_MISMATCH', `KEK_MISMATCH: the data key of organisation ${orgId} (v${row.key_version}) does not unwrap with this device's KEK`, { orgId, keyVersion: row.key_version }, { cause: err });
      }
      const keys = this.deriveOrgKeys(orgId, row.key_version, dek);
      this.orgKeys.set(orgId, keys);
      return keys;
    }
    if (!create) return undefined;
    const last = await this.db.get<{ last_version: number }>('SELECT last_version FROM org_key_versions WHERE org_id = ?', [orgId]);
    const version = (last?.last_version ?? 0) + 1;
    const dek = randomBytes(KEY_BYTES);
    const wrapped = seal(this.wrapKey, dek, this.dekAad(orgId, version));
    await this.db.transaction(async () => {
      await this.db.run('INSERT INTO org_keys (org_id, key_version, wrapped, created_at_ms) VALUES (?, ?, ?, ?)', [orgId, version, wrapped, this.clock()]);
      await this.db.run(
        'INSERT INTO org_key_versions (org_id, last_version) VALUES (?, ?) ON CONFLICT (org_id) DO UPDATE SET last_version = excluded.last_version',
        [orgId, version],
      );
    });
    const keys = this.deriveOrgKeys(orgId, version, dek);
    this.orgKeys.set(orgId, keys);
    this.log.info({ orgId, keyVersion: version }, 'organisation data key created');
    return keys;
  }

  /** Organisations with a live data key (withdrawn or withdrawing ones excluded). */
  orgs(): Promise<string[]> {
    return this.serial(async () => {
      const rows = await this.db.all<{ org_id: string }>('SELECT org_id FROM org_keys ORDER BY org_id');
      return rows.map((r) => r.org_id).filter((o) => !this.purgingOrgs.has(o));
    });
  }

  /** Current data-key version of an org, undefined if it has none. */
  async keyVersion(orgId: string): Promise<number | undefined> {
    return this.serial(async () => (await this.keysFor(checkId('orgId', orgId), false))?.version);
  }

  /**
   * The org's face-transform key: HKDF-SHA256 of its data key with its own
   * label ("face-transform"), for the cancelable face transform
   * (src/identify/face/transform.ts). It is never stored: destroying the
   * org's data key (withdrawal) destroys it, and a new key version (rotation)
   * gives a new one. Returns a copy (callers should zero it after use).
   * NO_ORG_KEY when the org has no data key (never had one, or withdrawn);
   * ORG_PURGE_IN_PROGRESS while it is being withdrawn.
   */
  async faceTransformKey(orgId: string): Promise<Buffer> {
    const r = await this.faceTransformKeyVersioned(orgId);
    return r.key;
  }

  /** faceTransformKey with the data-key version it was derived from (to notice a rotation). */
  faceTransformKeyVersioned(orgId: string): Promise<{ key: Buffer; keyVersion: number }> {
    checkId('orgId', orgId);
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, false);
      if (!keys) throw new TallyboxError('NO_ORG_KEY', `NO_ORG_KEY: organisation ${orgId} has no data key on this device`, { orgId });
      return { key: Buffer.from(keys.faceTransform), keyVersion: keys.version };
    });
  }

  // ---------------------------------------------------------------- quarantine

  private async quarantine(table: VaultTable, recordId: string, orgId: string, err: unknown): Promise<TallyboxError> {
    const code = (err as { code?: string }).code ?? 'DECRYPT_FAILED';
    const at = this.clock();
    await this.db.run(`UPDATE ${table} SET quarantined_at_ms = ?, quarantine_code = ? WHERE record_id = ? AND quarantined_at_ms IS NULL`, [at, code, recordId]);
    // Record ids only: never the subject, never the content.
    this.log.error({ table, recordId, orgId, code }, 'record failed to decrypt and is quarantined');
    return new TallyboxError(
      'RECORD_QUARANTINED',
      `RECORD_QUARANTINED: ${table} record ${recordId} failed to decrypt (${code}: tampered, copied from another record, or sealed under another key); it is quarantined and skipped until erased or re-enrolled`,
      { table, recordId, orgId, cause: code },
      { cause: err },
    );
  }

  private quarantinedError(table: VaultTable, recordId: string, code: string | null): TallyboxError {
    return new TallyboxError('RECORD_QUARANTINED', `RECORD_QUARANTINED: ${table} record ${recordId} is quarantined (${code ?? 'DECRYPT_FAILED'}); erase or re-enrol it`, {
      table,
      recordId,
      cause: code,
    });
  }

  /** Unseal, or return the error; synchronous so a start-up decrypt of 10^4 records costs no promise per record. */
  private tryOpen(keys: OrgKeys, key: Buffer, ct: Buffer, aad: AadParts): Buffer | Error {
    try {
      if (aad.keyVersion !== keys.version) {
        throw new TallyboxError('KEY_VERSION_UNKNOWN', `KEY_VERSION_UNKNOWN: record sealed under key v${aad.keyVersion}, org has v${keys.version}`);
      }
      return unseal(key, ct, aad);
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  /** Unseal or quarantine. A key version the org no longer has is a decrypt failure too. */
  private async open(table: VaultTable, keys: OrgKeys, key: Buffer, ct: Buffer, aad: AadParts): Promise<Buffer> {
    const r = this.tryOpen(keys, key, ct, aad);
    if (r instanceof Error) throw await this.quarantine(table, aad.recordId, aad.orgId, r);
    return r;
  }

  /** Every quarantined record (optionally of one org): for doctor and status. */
  quarantined(orgId?: string): Promise<QuarantinedRecord[]> {
    return this.serial(async () => {
      const out: QuarantinedRecord[] = [];
      for (const table of ['subjects', 'consents', 'templates'] as const) {
        const rows = await this.db.all<{ record_id: string; org_id: string; quarantine_code: string | null; quarantined_at_ms: number }>(
          `SELECT record_id, org_id, quarantine_code, quarantined_at_ms FROM ${table} WHERE quarantined_at_ms IS NOT NULL ${orgId ? 'AND org_id = ?' : ''} ORDER BY quarantined_at_ms`,
          orgId ? [orgId] : [],
        );
        for (const r of rows) out.push({ table, recordId: r.record_id, orgId: r.org_id, code: r.quarantine_code ?? 'DECRYPT_FAILED', atMs: r.quarantined_at_ms });
      }
      return out;
    });
  }

  // ---------------------------------------------------------------- subjects & consent

  /**
   * Create or update a subject (a SubjectUpsert is this one call). The name is
   * sealed under the org's identity key; consents given here are recorded too.
   */
  async upsertSubject(orgId: string, input: SubjectInput): Promise<{ recordId: string; created: boolean }> {
    const [r] = await this.upsertSubjects(orgId, [input]);
    return r!;
  }

  /** Many subjects in one transaction (one fsync): roster imports and benchmarks. All or nothing. */
  async upsertSubjects(orgId: string, inputs: readonly SubjectInput[]): Promise<Array<{ recordId: string; created: boolean }>> {
    checkId('orgId', orgId);
    for (const input of inputs) {
      checkId('subjectId', input.subjectId);
      if (typeof input.displayName !== 'string' || input.displayName.length > MAX_DISPLAY_NAME_CHARS) {
        throw new TallyboxError('INVALID_ARGUMENT', `INVALID_ARGUMENT: displayName must be a string of at most ${MAX_DISPLAY_NAME_CHARS} characters`, { field: 'displayName' });
      }
      if (typeof input.minor !== 'boolean') throw new TallyboxError('INVALID_ARGUMENT', 'INVALID_ARGUMENT: minor must be a boolean', { field: 'minor' });
      for (const c of input.consents ?? []) this.checkConsentInput(c);
    }
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, true);
      const now = this.clock();
      return this.db.transaction(async () => {
        const out: Array<{ recordId: string; created: boolean }> = [];
        for (const input of inputs) {
          const existing = await this.db.get<{ record_id: string }>('SELECT record_id FROM subjects WHERE org_id = ? AND subject_id = ?', [orgId, input.subjectId]);
          const recordId = existing?.record_id ?? uuidv7(now);
          const nameCt = seal(keys.identity, Buffer.from(input.displayName, 'utf8'), {
            kind: 'subject.name',
            orgId,
            subjectId: input.subjectId,
            recordId,
            keyVersion: keys.version,
          });
          if (existing) {
            // A fresh seal replaces a quarantined name, so an upsert also heals quarantine.
            await this.db.run(
              'UPDATE subjects SET key_version = ?, name_ct = ?, minor = ?, updated_at_ms = ?, quarantined_at_ms = NULL, quarantine_code = NULL WHERE org_id = ? AND subject_id = ?',
              [keys.version, nameCt, input.minor ? 1 : 0, now, orgId, input.subjectId],
            );
          } else {
            await this.db.run(
              'INSERT INTO subjects (org_id, subject_id, record_id, key_version, name_ct, minor, created_at_ms, updated_at_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
              [orgId, input.subjectId, recordId, keys.version, nameCt, input.minor ? 1 : 0, now, now, now],
            );
          }
          for (const c of input.consents ?? []) await this.writeConsent(keys, orgId, input.subjectId, c, now);
          out.push({ recordId, created: !existing });
        }
        return out;
      });
    });
  }

  private checkConsentInput(c: ConsentInput): void {
    if (!CONSENT_KINDS.includes(c.kind)) {
      throw new TallyboxError('INVALID_ARGUMENT', `INVALID_ARGUMENT: consent kind must be ${CONSENT_KINDS.join(' | ')}, got ${String(c.kind)}`, { field: 'consent.kind' });
    }
    if (c.evidence !== undefined && (typeof c.evidence !== 'string' || c.evidence.length > 1024)) {
      throw new TallyboxError('INVALID_ARGUMENT', 'INVALID_ARGUMENT: consent evidence must be a string of at most 1024 characters', { field: 'consent.evidence' });
    }
  }

  private async writeConsent(keys: OrgKeys, orgId: string, subjectId: string, c: ConsentInput, now: number): Promise<void> {
    const recordId = uuidv7(now);
    const evidenceCt =
      c.evidence === undefined
        ? null
        : seal(keys.identity, Buffer.from(c.evidence, 'utf8'), { kind: 'consent.evidence', orgId, subjectId, recordId, keyVersion: keys.version });
    await this.db.run(
      `INSERT INTO consents (org_id, subject_id, kind, record_id, key_version, granted_at_ms, evidence_ct) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (org_id, subject_id, kind) DO UPDATE SET record_id = excluded.record_id, key_version = excluded.key_version,
         granted_at_ms = excluded.granted_at_ms, evidence_ct = excluded.evidence_ct, quarantined_at_ms = NULL, quarantine_code = NULL`,
      [orgId, subjectId, c.kind, recordId, keys.version, c.grantedAtMs ?? now, evidenceCt],
    );
  }

  private async requireSubject(orgId: string, subjectId: string): Promise<SubjectRow> {
    const row = await this.db.get<SubjectRow>('SELECT * FROM subjects WHERE org_id = ? AND subject_id = ?', [orgId, subjectId]);
    if (!row) throw new TallyboxError('SUBJECT_NOT_FOUND', `SUBJECT_NOT_FOUND: no subject ${subjectId} in organisation ${orgId}`, { orgId, subjectId });
    return row;
  }

  /** Record a consent (biometric, or a guardian's for a subject aged 14 or under). */
  async recordConsent(orgId: string, subjectId: string, consent: ConsentInput): Promise<void> {
    checkId('orgId', orgId);
    checkId('subjectId', subjectId);
    this.checkConsentInput(consent);
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, true);
      await this.requireSubject(orgId, subjectId);
      await this.writeConsent(keys, orgId, subjectId, consent, this.clock());
    });
  }

  /**
   * Remove a recorded consent: further enrolments are refused. Templates
   * already enrolled must then be erased through the purge pipeline
   * (Purger.eraseTemplates) so the erasure is verified and receipted.
   */
  withdrawConsent(orgId: string, subjectId: string, kind: ConsentKind): Promise<boolean> {
    return this.serial(async () => {
      this.assertNotPurging(orgId);
      const r = await this.db.run('DELETE FROM consents WHERE org_id = ? AND subject_id = ? AND kind = ?', [orgId, subjectId, kind]);
      return r.changes > 0;
    });
  }

  /** Decrypted view of one subject; throws RECORD_QUARANTINED when the name does not decrypt. */
  getSubject(orgId: string, subjectId: string): Promise<SubjectView> {
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, false);
      const row = await this.requireSubject(orgId, subjectId);
      if (!keys) throw new TallyboxError('SUBJECT_NOT_FOUND', `SUBJECT_NOT_FOUND: organisation ${orgId} has no data key`, { orgId });
      if (row.quarantined_at_ms !== null) throw this.quarantinedError('subjects', row.record_id, row.quarantine_code);
      const name = await this.open('subjects', keys, keys.identity, row.name_ct, {
        kind: 'subject.name',
        orgId,
        subjectId,
        recordId: row.record_id,
        keyVersion: row.key_version,
      });
      const consents: Partial<Record<ConsentKind, ConsentView>> = {};
      for (const c of await this.db.all<ConsentRow>('SELECT * FROM consents WHERE org_id = ? AND subject_id = ?', [orgId, subjectId])) {
        let evidence: string | null | undefined = null;
        if (c.quarantined_at_ms !== null) evidence = undefined;
        else if (c.evidence_ct) {
          try {
            evidence = (
              await this.open('consents', keys, keys.identity, c.evidence_ct, { kind: 'consent.evidence', orgId, subjectId, recordId: c.record_id, keyVersion: c.key_version })
            ).toString('utf8');
          } catch {
            // Quarantined: the consent's timestamp still stands, its evidence is unreadable.
            evidence = undefined;
          }
        }
        consents[c.kind] = { grantedAtMs: c.granted_at_ms, evidence };
      }
      return {
        orgId,
        subjectId,
        displayName: name.toString('utf8'),
        minor: row.minor === 1,
        consents,
        createdAtMs: row.created_at_ms,
        lastSeenMs: row.last_seen_ms,
      };
    });
  }

  /** Subject ids of an org (a RosterSync handler diffs against this). */
  subjectIds(orgId: string): Promise<string[]> {
    return this.serial(async () => {
      this.assertNotPurging(orgId);
      const rows = await this.db.all<{ subject_id: string }>('SELECT subject_id FROM subjects WHERE org_id = ? ORDER BY subject_id', [orgId]);
      return rows.map((r) => r.subject_id);
    });
  }

  /** The subject was just identified: resets the retention clock for their templates. */
  touchSubject(orgId: string, subjectId: string, atMs?: number): Promise<boolean> {
    return this.serial(async () => {
      const r = await this.db.run('UPDATE subjects SET last_seen_ms = MAX(last_seen_ms, ?) WHERE org_id = ? AND subject_id = ?', [atMs ?? this.clock(), orgId, subjectId]);
      return r.changes > 0;
    });
  }

  // ---------------------------------------------------------------- templates

  /**
   * Enrol (or replace) the template in one slot. Refused with
   * ConsentRefusedError (reason consent_missing | guardian_consent_missing)
   * unless the consents are recorded. Raw images are not templates: callers
   * pass the sensor's feature template only.
   */
  async enrolTemplate(orgId: string, subjectId: string, modality: Modality, slot: number, bytes: Uint8Array): Promise<{ recordId: string }> {
    const [recordId] = await this.enrolTemplates(orgId, [{ subjectId, modality, slot, bytes }]);
    return { recordId: recordId! };
  }

  /**
   * Enrol many templates in one transaction (one fsync instead of one per
   * template: imports and benchmarks). All or nothing: one refused consent
   * refuses the batch. Returns the record ids in input order.
   */
  async enrolTemplates(orgId: string, items: readonly TemplateInput[]): Promise<string[]> {
    checkId('orgId', orgId);
    for (const it of items) {
      checkId('subjectId', it.subjectId);
      if (!MODALITIES.includes(it.modality)) {
        throw new TallyboxError('INVALID_ARGUMENT', `INVALID_ARGUMENT: modality must be ${MODALITIES.join(' | ')}, got ${String(it.modality)}`, { field: 'modality' });
      }
      if (!Number.isInteger(it.slot) || it.slot < 0 || it.slot > 255) throw new TallyboxError('INVALID_ARGUMENT', 'INVALID_ARGUMENT: slot must be an integer 0-255', { field: 'slot' });
      if (!(it.bytes instanceof Uint8Array) || it.bytes.length === 0 || it.bytes.length > MAX_TEMPLATE_BYTES) {
        throw new TallyboxError(
          'TEMPLATE_TOO_LARGE',
          `TEMPLATE_TOO_LARGE: a template must be 1-${MAX_TEMPLATE_BYTES} bytes, got ${it.bytes instanceof Uint8Array ? it.bytes.length : 'none'}`,
        );
      }
    }
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, true);
      for (const subjectId of new Set(items.map((it) => it.subjectId))) {
        const subject = await this.requireSubject(orgId, subjectId);
        const consents = await this.db.all<{ kind: ConsentKind; granted_at_ms: number }>('SELECT kind, granted_at_ms FROM consents WHERE org_id = ? AND subject_id = ?', [
          orgId,
          subjectId,
        ]);
        assertBiometricConsent({
          minor: subject.minor === 1,
          biometricAtMs: consents.find((c) => c.kind === 'biometric')?.granted_at_ms ?? null,
          guardianAtMs: consents.find((c) => c.kind === 'guardian')?.granted_at_ms ?? null,
        });
      }
      const now = this.clock();
      const recordIds: string[] = [];
      await this.db.transaction(async () => {
        for (const { subjectId, modality, slot, bytes } of items) {
          const recordId = uuidv7(now);
          const ct = seal(keys.templates, bytes, { kind: 'template', orgId, subjectId, recordId, keyVersion: keys.version });
          // A new record id per enrolment: the replaced row is deleted (zeroed by secure_delete).
          await this.db.run('DELETE FROM templates WHERE org_id = ? AND subject_id = ? AND modality = ? AND slot = ?', [orgId, subjectId, modality, slot]);
          await this.db.run('INSERT INTO templates (record_id, org_id, subject_id, modality, slot, key_version, ct, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [
            recordId,
            orgId,
            subjectId,
            modality,
            slot,
            keys.version,
            ct,
            now,
          ]);
          await this.db.run('UPDATE subjects SET last_seen_ms = MAX(last_seen_ms, ?) WHERE org_id = ? AND subject_id = ?', [now, orgId, subjectId]);
          recordIds.push(recordId);
        }
      });
      return recordIds;
    });
  }

  /** Template metadata without decrypting. */
  listTemplates(orgId: string, subjectId?: string): Promise<TemplateMeta[]> {
    return this.serial(async () => {
      this.assertNotPurging(orgId);
      const rows = await this.db.all<Omit<TemplateRow, 'ct'>>(
        `SELECT record_id, org_id, subject_id, modality, slot, key_version, created_at_ms, quarantined_at_ms, quarantine_code FROM templates WHERE org_id = ? ${subjectId ? 'AND subject_id = ?' : ''} ORDER BY subject_id, modality, slot`,
        subjectId ? [orgId, subjectId] : [orgId],
      );
      return rows.map((r) => ({
        recordId: r.record_id,
        orgId: r.org_id,
        subjectId: r.subject_id,
        modality: r.modality,
        slot: r.slot,
        createdAtMs: r.created_at_ms,
        quarantined: r.quarantined_at_ms !== null,
      }));
    });
  }

  private toDecrypted(r: TemplateRow, bytes: Buffer): DecryptedTemplate {
    return { recordId: r.record_id, orgId: r.org_id, subjectId: r.subject_id, modality: r.modality, slot: r.slot, bytes };
  }

  private templateAad(r: TemplateRow): AadParts {
    return { kind: 'template', orgId: r.org_id, subjectId: r.subject_id, recordId: r.record_id, keyVersion: r.key_version };
  }

  /**
   * Decrypt every template of an org (start-up loading of a 1:N matcher).
   * Records that fail are quarantined and listed; the rest are returned.
   */
  decryptTemplates(orgId: string): Promise<DecryptTemplatesResult> {
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, false);
      const out: DecryptTemplatesResult = { templates: [], quarantined: [] };
      if (!keys) return out;
      const rows = await this.db.all<TemplateRow>('SELECT * FROM templates WHERE org_id = ?', [orgId]);
      for (const r of rows) {
        if (r.quarantined_at_ms !== null) {
          out.quarantined.push({ table: 'templates', recordId: r.record_id, orgId, code: r.quarantine_code ?? 'DECRYPT_FAILED', atMs: r.quarantined_at_ms });
          continue;
        }
        const bytes = this.tryOpen(keys, keys.templates, r.ct, this.templateAad(r));
        if (!(bytes instanceof Error)) {
          out.templates.push(this.toDecrypted(r, bytes));
          continue;
        }
        await this.quarantine('templates', r.record_id, orgId, bytes);
        out.quarantined.push({ table: 'templates', recordId: r.record_id, orgId, code: (bytes as { code?: string }).code ?? 'DECRYPT_FAILED', atMs: this.clock() });
      }
      return out;
    });
  }

  /**
   * Decrypt an org's templates of one modality in batches of `batchSize`
   * (keyset pagination on the rowid), calling `fn` with each batch.
   * Unlike decryptTemplates, at most one batch of plaintext exists at a time:
   * every `bytes` buffer is zeroed as soon as `fn` returns (copy what you keep),
   * so start-up memory does not grow with the number of templates. Each batch
   * is its own turn of the vault's queue (other vault calls, including from
   * `fn`, run in between); templates enrolled during the walk may or may not be
   * seen. Failing records are quarantined and reported, the rest go on.
   */
  async forEachTemplate(
    orgId: string,
    modality: Modality,
    batchSize: number,
    fn: (batch: TemplateBatch) => void | Promise<void>,
  ): Promise<ForEachTemplateResult> {
    checkId('orgId', orgId);
    if (!MODALITIES.includes(modality)) throw new TallyboxError('INVALID_ARGUMENT', `INVALID_ARGUMENT: modality must be ${MODALITIES.join(' | ')}, got ${String(modality)}`, { field: 'modality' });
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 100_000) throw new TallyboxError('INVALID_ARGUMENT', 'INVALID_ARGUMENT: batchSize must be an integer 1-100000', { field: 'batchSize' });
    const result: ForEachTemplateResult = { templates: 0, quarantined: [], batches: 0 };
    let after = 0;
    for (;;) {
      const batch = await this.serial(async () => {
        const keys = await this.keysFor(orgId, false);
        if (!keys) return null;
        // Keyset pagination on the rowid: each batch seeks forward in the table's own b-tree, so the
        // walk is linear (paging on record_id made SQLite sort the org's rows again for every batch).
        const rows = await this.db.all<TemplateRow & { rid: number }>(
          'SELECT rowid AS rid, * FROM templates WHERE rowid > ? AND org_id = ? AND modality = ? ORDER BY rowid LIMIT ?',
          [after, orgId, modality, batchSize],
        );
        const out: DecryptedTemplate[] = [];
        for (const r of rows) {
          if (r.quarantined_at_ms !== null) {
            result.quarantined.push({ table: 'templates', recordId: r.record_id, orgId, code: r.quarantine_code ?? 'DECRYPT_FAILED', atMs: r.quarantined_at_ms });
            continue;
          }
          const bytes = this.tryOpen(keys, keys.templates, r.ct, this.templateAad(r));
          if (!(bytes instanceof Error)) {
            out.push(this.toDecrypted(r, bytes));
            continue;
          }
          await this.quarantine('templates', r.record_id, orgId, bytes);
          result.quarantined.push({ table: 'templates', recordId: r.record_id, orgId, code: (bytes as { code?: string }).code ?? 'DECRYPT_FAILED', atMs: this.clock() });
        }
        const last = rows[rows.length - 1];
        return { templates: out, last: last?.rid, full: rows.length === batchSize };
      });
      if (!batch) return result;
      if (batch.templates.length > 0) {
        try {
          result.batches++;
          result.templates += batch.templates.length;
          await fn(batch.templates);
        } finally {
          for (const t of batch.templates) t.bytes.fill(0);
        }
      }
      if (!batch.full || batch.last === undefined) return result;
      after = batch.last;
    }
  }

  /** One template; throws RECORD_QUARANTINED (and quarantines it) when it fails to decrypt. */
  getTemplate(orgId: string, recordId: string): Promise<DecryptedTemplate> {
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, false);
      const r = await this.db.get<TemplateRow>('SELECT * FROM templates WHERE org_id = ? AND record_id = ?', [orgId, recordId]);
      if (!r || !keys) throw new TallyboxError('TEMPLATE_NOT_FOUND', `TEMPLATE_NOT_FOUND: no template record ${recordId} in organisation ${orgId}`, { orgId, recordId });
      if (r.quarantined_at_ms !== null) throw this.quarantinedError('templates', r.record_id, r.quarantine_code);
      return this.toDecrypted(r, await this.open('templates', keys, keys.templates, r.ct, this.templateAad(r)));
    });
  }

  // ---------------------------------------------------------------- credentials

  private lookupHash(keys: OrgKeys, kind: CredentialKind, value: string): Buffer {
    // The kind is hashed too: a card number and a MAC with the same digits never collide.
    return createHmac('sha256', keys.lookup).update(`tallybox.v1\0${kind}\0${normaliseCredential(kind, value)}`, 'utf8').digest();
  }

  /**
   * Store a card number or Wi-Fi MAC as a keyed HMAC under the org's lookup
   * key: it can be matched, never read back. Re-assigning a credential moves it.
   */
  async putCredential(orgId: string, kind: CredentialKind, value: string, subjectId: string): Promise<void> {
    checkId('orgId', orgId);
    checkId('subjectId', subjectId);
    normaliseCredential(kind, value);
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, true);
      await this.requireSubject(orgId, subjectId);
      await this.db.run(
        `INSERT INTO credentials (org_id, kind, lookup, subject_id, key_version, created_at_ms) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (org_id, kind, lookup) DO UPDATE SET subject_id = excluded.subject_id, key_version = excluded.key_version, created_at_ms = excluded.created_at_ms`,
        [orgId, kind, this.lookupHash(keys, kind, value), subjectId, keys.version, this.clock()],
      );
    });
  }

  /** Subject holding this credential in this org, or undefined. */
  async lookupCredential(orgId: string, kind: CredentialKind, value: string): Promise<string | undefined> {
    normaliseCredential(kind, value);
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, false);
      if (!keys) return undefined;
      const row = await this.db.get<{ subject_id: string }>('SELECT subject_id FROM credentials WHERE org_id = ? AND kind = ? AND lookup = ?', [
        orgId,
        kind,
        this.lookupHash(keys, kind, value),
      ]);
      return row?.subject_id;
    });
  }

  /** Which org(s) and subject(s) hold this credential: one HMAC per org, for a reader shared by orgs. */
  async identifyCredential(kind: CredentialKind, value: string): Promise<Array<{ orgId: string; subjectId: string }>> {
    normaliseCredential(kind, value);
    return this.serial(async () => {
      const out: Array<{ orgId: string; subjectId: string }> = [];
      for (const { org_id: orgId } of await this.db.all<{ org_id: string }>('SELECT org_id FROM org_keys ORDER BY org_id')) {
        if (this.purgingOrgs.has(orgId)) continue;
        const keys = await this.keysFor(orgId, false);
        if (!keys) continue;
        const row = await this.db.get<{ subject_id: string }>('SELECT subject_id FROM credentials WHERE org_id = ? AND kind = ? AND lookup = ?', [
          orgId,
          kind,
          this.lookupHash(keys, kind, value),
        ]);
        if (row) out.push({ orgId, subjectId: row.subject_id });
      }
      return out;
    });
  }

  async removeCredential(orgId: string, kind: CredentialKind, value: string): Promise<boolean> {
    normaliseCredential(kind, value);
    return this.serial(async () => {
      const keys = await this.keysFor(orgId, false);
      if (!keys) return false;
      const r = await this.db.run('DELETE FROM credentials WHERE org_id = ? AND kind = ? AND lookup = ?', [orgId, kind, this.lookupHash(keys, kind, value)]);
      return r.changes > 0;
    });
  }

  // ---------------------------------------------------------------- retention (RetentionSource)

  staleTemplateSubjects(cutoffMs: number): Promise<Array<{ orgId: string; subjectIds: string[] }>> {
    return this.serial(async () => {
      const rows = await this.db.all<{ org_id: string; subject_id: string }>(
        `SELECT DISTINCT s.org_id, s.subject_id FROM subjects s
         JOIN templates t ON t.org_id = s.org_id AND t.subject_id = s.subject_id
         WHERE s.last_seen_ms < ? ORDER BY s.org_id, s.subject_id`,
        [cutoffMs],
      );
      const byOrg = new Map<string, string[]>();
      for (const r of rows) {
        if (this.purgingOrgs.has(r.org_id)) continue;
        const list = byOrg.get(r.org_id) ?? [];
        list.push(r.subject_id);
        byOrg.set(r.org_id, list);
      }
      return [...byOrg].map(([orgId, subjectIds]) => ({ orgId, subjectIds }));
    });
  }

  // ---------------------------------------------------------------- erasure (ErasableStore)

  sampleForErasure(scope: ErasureScope): Promise<ErasureSample[]> {
    return this.serial(async () => {
      const out: ErasureSample[] = [];
      const { orgId } = scope;
      const bySubject = scope.kind === 'org' ? [undefined] : chunks(scope.subjectIds);
      if (scope.kind === 'org') {
        for (const r of await this.db.all<{ wrapped: Buffer }>('SELECT wrapped FROM org_keys WHERE org_id = ?', [orgId])) fragments(r.wrapped, 'wrapped_key', out);
      }
      const ids = new Set<string>();
      for (const chunk of bySubject) {
        const where = chunk ? `org_id = ? AND subject_id IN (${placeholders(chunk.length)})` : 'org_id = ?';
        const params = chunk ? [orgId, ...chunk] : [orgId];
        for (const r of await this.db.all<{ ct: Buffer }>(`SELECT ct FROM templates WHERE ${where}`, params)) fragments(r.ct, 'ciphertext', out);
        if (scope.kind === 'templates') continue;
        for (const r of await this.db.all<{ name_ct: Buffer; subject_id: string }>(`SELECT name_ct, subject_id FROM subjects WHERE ${where}`, params)) {
          fragments(r.name_ct, 'ciphertext', out);
          ids.add(r.subject_id);
        }
        for (const r of await this.db.all<{ evidence_ct: Buffer | null }>(`SELECT evidence_ct FROM consents WHERE ${where}`, params)) fragments(r.evidence_ct, 'ciphertext', out);
        for (const r of await this.db.all<{ lookup: Buffer; subject_id: string }>(`SELECT lookup, subject_id FROM credentials WHERE ${where}`, params)) {
          fragments(r.lookup, 'lookup_hmac', out);
          ids.add(r.subject_id);
        }
        for (const r of await this.db.all<{ subject_id: string }>(`SELECT DISTINCT subject_id FROM templates WHERE ${where}`, params)) ids.add(r.subject_id);
      }
      // A subject id that another org legitimately still uses (one person, two
      // employers) must not count as a leftover of this one.
      const idList = [...ids];
      for (const chunk of chunks(idList)) {
        const rows = await this.db.all<{ subject_id: string }>(
          `SELECT subject_id FROM subjects WHERE org_id <> ? AND subject_id IN (${placeholders(chunk.length)})
           UNION SELECT subject_id FROM credentials WHERE org_id <> ? AND subject_id IN (${placeholders(chunk.length)})
           UNION SELECT subject_id FROM templates WHERE org_id <> ? AND subject_id IN (${placeholders(chunk.length)})`,
          [orgId, ...chunk, orgId, ...chunk, orgId, ...chunk],
        );
        for (const r of rows) ids.delete(r.subject_id);
      }
      for (const id of ids) {
        const b = Buffer.from(id, 'utf8');
        if (b.length >= MIN_SAMPLE_BYTES) out.push({ bytes: b, label: 'subject_id', scope: 'store' });
      }
      return out;
    });
  }

  beginPurge(job: PurgeJob): Promise<void> {
    return this.serial(async () => {
      const subjectIds = job.scope.kind === 'org' ? null : JSON.stringify(job.scope.subjectIds);
      await this.db.run(
        'INSERT INTO purge_jobs (job_id, kind, org_id, subject_ids, request_ref, state, started_at_ms, attempts, counts, key_versions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [job.jobId, job.scope.kind, job.scope.orgId, subjectIds, job.requestRef, job.state, job.startedAtMs, job.attempts, JSON.stringify(job.counts), JSON.stringify(job.keyVersionsDestroyed)],
      );
      if (job.scope.kind === 'org') this.purgingOrgs.add(job.scope.orgId);
    });
  }

  private async addJobCounts(jobId: string, counts: Record<string, number>): Promise<void> {
    const row = await this.db.get<{ counts: string }>('SELECT counts FROM purge_jobs WHERE job_id = ?', [jobId]);
    const merged = JSON.parse(row?.counts ?? '{}') as Record<string, number>;
    for (const [k, v] of Object.entries(counts)) merged[k] = (merged[k] ?? 0) + v;
    await this.db.run('UPDATE purge_jobs SET counts = ?, attempts = attempts + 1 WHERE job_id = ?', [JSON.stringify(merged), jobId]);
  }

  erase(jobId: string, scope: ErasureScope): Promise<StoreErasureResult> {
    return this.serial(async () => {
      const { orgId } = scope;
      const result: StoreErasureResult = { counts: {}, keyVersionsDestroyed: [] };
      if (scope.kind === 'org') {
        // Crypto-shredding first, in its own committed transaction: once this
        // commits, every ciphertext of the org is noise even if the power goes now.
        await this.db.transaction(async () => {
          const keys = await this.db.all<{ key_version: number }>('SELECT key_version FROM org_keys WHERE org_id = ?', [orgId]);
          result.keyVersionsDestroyed = keys.map((k) => k.key_version);
          const r = await this.db.run('DELETE FROM org_keys WHERE org_id = ?', [orgId]);
          result.counts.dataKeys = r.changes;
          const row = await this.db.get<{ key_versions: string }>('SELECT key_versions FROM purge_jobs WHERE job_id = ?', [jobId]);
          const versions = new Set<number>([...(JSON.parse(row?.key_versions ?? '[]') as number[]), ...result.keyVersionsDestroyed]);
          await this.db.run('UPDATE purge_jobs SET key_versions = ? WHERE job_id = ?', [JSON.stringify([...versions].sort((a, b) => a - b)), jobId]);
        });
        const cached = this.orgKeys.get(orgId);
        if (cached) this.wipe(cached);
        this.orgKeys.delete(orgId);
      }
      const tables = scope.kind === 'templates' ? (['templates'] as const) : (['templates', 'credentials', 'consents', 'subjects'] as const);
      await this.db.transaction(async () => {
        for (const chunk of scope.kind === 'org' ? [undefined] : chunks(scope.subjectIds)) {
          const where = chunk ? `org_id = ? AND subject_id IN (${placeholders(chunk.length)})` : 'org_id = ?';
          const params = chunk ? [orgId, ...chunk] : [orgId];
          for (const t of tables) {
            const r = await this.db.run(`DELETE FROM ${t} WHERE ${where}`, params);
            result.counts[t] = (result.counts[t] ?? 0) + r.changes;
          }
        }
        await this.addJobCounts(jobId, result.counts);
      });
      return result;
    });
  }

  markPurgeCompacting(jobId: string): Promise<void> {
    return this.serial(async () => {
      await this.db.run("UPDATE purge_jobs SET state = 'compacting', subject_ids = NULL WHERE job_id = ?", [jobId]);
    });
  }

  /**
   * Push everything to the main file and rebuild it: the WAL holds old page
   * images until a checkpoint, and freed pages (zeroed by secure_delete) are
   * dropped by VACUUM. TRUNCATE leaves a zero-length -wal behind.
   */
  compact(): Promise<void> {
    return this.serial(async () => {
      await this.db.get('PRAGMA wal_checkpoint(TRUNCATE)');
      await this.db.exec('VACUUM');
      const r = await this.db.get<{ busy: number }>('PRAGMA wal_checkpoint(TRUNCATE)');
      if (r && r.busy !== 0) this.log.warn({ busy: r.busy }, 'WAL checkpoint could not complete; the scan will tell');
    });
  }

  finishPurge(jobId: string): Promise<void> {
    return this.serial(async () => {
      const row = await this.db.get<{ kind: string; org_id: string }>('SELECT kind, org_id FROM purge_jobs WHERE job_id = ?', [jobId]);
      await this.db.run('DELETE FROM purge_jobs WHERE job_id = ?', [jobId]);
      if (row?.kind === 'org') {
        const other = await this.db.get("SELECT 1 FROM purge_jobs WHERE kind = 'org' AND org_id = ?", [row.org_id]);
        if (!other) this.purgingOrgs.delete(row.org_id);
      }
    });
  }

  pendingPurges(): Promise<PurgeJob[]> {
    return this.serial(async () => {
      const rows = await this.db.all<PurgeJobRow>('SELECT * FROM purge_jobs ORDER BY started_at_ms, job_id');
      return rows.map((r): PurgeJob => {
        const subjectIds = r.subject_ids ? (JSON.parse(r.subject_ids) as string[]) : [];
        const scope: ErasureScope = r.kind === 'org' ? { kind: 'org', orgId: r.org_id } : { kind: r.kind, orgId: r.org_id, subjectIds };
        return {
          jobId: r.job_id,
          scope,
          requestRef: r.request_ref,
          state: r.state,
          startedAtMs: r.started_at_ms,
          attempts: r.attempts,
          counts: JSON.parse(r.counts) as Record<string, number>,
          keyVersionsDestroyed: JSON.parse(r.key_versions) as number[],
        };
      });
    });
  }
}
