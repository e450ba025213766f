/**
 * The vault: subjects, consents, biometric templates and credentials of every
 * organisation on this device, in its own SQLite file (DATA_DIR/vault.db).
 *
 * This class is the facade the rest of the agent uses; each job lives in its
 * own module:
 *   org-keys.ts      key hierarchy: KEK check, wrapped org data keys, HKDF sub-keys
 *   subjects.ts      subjects and consents (the consent check's inputs)
 *   templates.ts     sealed biometric templates
 *   credentials.ts   card / Wi-Fi MAC lookups by keyed HMAC
 *   erasure-store.ts purge journal, crypto-shredding, compaction, retention
 *   integrity.ts     row MACs binding plain metadata (minor, consent kind/time,
 *                    credential owner, template modality) to their row
 *   quarantine.ts    what happens to a record that fails either check
 *   migrate.ts       schema creation and upgrades
 *
 * Every personal value is sealed with AES-256-GCM (fresh nonce per write, AAD =
 * kind + org + subject + record id + key version) or, for card numbers and
 * Wi-Fi MACs, stored only as a keyed HMAC. A record that fails to decrypt or
 * whose bound metadata fails its MAC is quarantined (flagged, excluded,
 * reported) and everything else keeps working.
 *
 * All database work runs through one queue (serial): sqlite3 must not
 * interleave statements of two transactions on one connection, so the stores
 * assume they run alone and only the facade enters the queue.
 */
import { chmod, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { ErasableStore, ErasureSample, ErasureScope, PurgeJob, StoreErasureResult } from '../privacy/types.js';
import type { RetentionSource } from '../privacy/retention.js';
import type { RosterSource } from '../privacy/roster.js';
import { sqliteFiles } from '../privacy/scan.js';
import { Sqlite } from '../store/sqlite.js';
import { SerialQueue } from '../util/serial-queue.js';
import { TallyboxError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { ConsentKind } from './consent.js';
import type { VaultContext } from './context.js';
import { CredentialStore, normaliseCredential, type CredentialMatch } from './credentials.js';
import { deriveKekWrapKey } from './crypto.js';
import { ErasureStore } from './erasure-store.js';
import { checkId } from './ids.js';
import type { DeviceIdentity, KeyProvider } from './keys.js';
import { prepareSchema } from './migrate.js';
import { OrgKeyring } from './org-keys.js';
import { Quarantine } from './quarantine.js';
import { checkConsentInput, checkSubjectInputs, SubjectStore } from './subjects.js';
import { checkModality, checkTemplateInputs, TemplateStore } from './templates.js';
import type { ConsentInput, CredentialKind, DecryptedTemplate, DecryptTemplatesResult, ForEachTemplateResult, Modality, QuarantinedRecord, SubjectInput, SubjectView, TemplateBatch, TemplateInput, TemplateMeta } from './types.js';

export * from './types.js';
export { normaliseCredential } from './credentials.js';

export const VAULT_FILE = 'vault.db';

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

interface Parts {
  db: Sqlite;
  dbPath: string;
  identity: DeviceIdentity;
  keyring: OrgKeyring;
  ctx: VaultContext;
}

export class Vault implements ErasableStore, RetentionSource, RosterSource {
  readonly dbPath: string;
  /** The device's Ed25519 identity (signs erasure receipts). */
  readonly identity: DeviceIdentity;
  readonly #db: Sqlite;
  readonly #keyring: OrgKeyring;
  readonly #ctx: VaultContext;
  readonly #subjects: SubjectStore;
  readonly #templates: TemplateStore;
  readonly #credentials: CredentialStore;
  readonly #erasure: ErasureStore;
  readonly #queue = new SerialQueue();
  #closed = false;

  private constructor(p: Parts) {
    this.#db = p.db;
    this.dbPath = p.dbPath;
    this.identity = p.identity;
    this.#keyring = p.keyring;
    this.#ctx = p.ctx;
    this.#subjects = new SubjectStore(p.ctx);
    this.#templates = new TemplateStore({ ctx: p.ctx, subjects: this.#subjects });
    this.#credentials = new CredentialStore({ ctx: p.ctx, subjects: this.#subjects });
    this.#erasure = new ErasureStore(p.ctx);
  }

  /**
   * Open (creating or upgrading if needed) the vault. Fails with KEY_FILE_*
   * errors for an unusable key file, KEK_MISMATCH when the KEK is not the one
   * this vault was sealed with, VAULT_SCHEMA_* for a file it cannot place; the
   * database is left untouched in each case.
   */
  static async open(opts: VaultOptions): Promise<Vault> {
    const log = opts.logger ?? silentLogger();
    const clock = opts.clock ?? Date.now;
    const dataDir = resolve(opts.dataDir);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const kek = await opts.keyProvider.loadKek({ dataDir });
    const wrapKey = deriveKekWrapKey(kek);
    kek.fill(0);
    const dbPath = join(dataDir, opts.fileName ?? VAULT_FILE);
    let identity: DeviceIdentity;
    let db: Sqlite;
    try {
      identity = await opts.keyProvider.loadDeviceIdentity();
      db = await Sqlite.open(dbPath);
    } catch (err) {
      wrapKey.fill(0);
      throw err;
    }
    const keyring = new OrgKeyring({ db, wrapKey, log, clock });
    try {
      // Ciphertexts only, but still nobody else's business. SQLite gives a new
      // -wal/-shm the main file's mode, but the ones created on this open predate the chmod.
      for (const f of sqliteFiles(dbPath)) await chmod(f, 0o600).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
      // VACUUM's temporary copy must not land in /tmp where no purge can reach it.
      await db.exec('PRAGMA temp_store=MEMORY');
      const sd = await db.get<{ secure_delete: number }>('PRAGMA secure_delete');
      if (sd?.secure_delete !== 1) throw new TallyboxError('STORAGE_UNSAFE', 'STORAGE_UNSAFE: SQLite refused secure_delete=ON; deleted records would stay on disk');
      await prepareSchema({ db, dbPath, keyring, providerKind: opts.keyProvider.kind, log, clock });
    } catch (err) {
      keyring.close();
      await db.close().catch(() => undefined);
      throw err;
    }
    const ctx: VaultContext = { db, log, clock, keyring, quarantine: new Quarantine({ db, log, clock }) };
    const vault = new Vault({ db, dbPath, identity, keyring, ctx });
    await vault.#erasure.loadPurgingOrgs();
    return vault;
  }

  async close(): Promise<void> {
    await this.serial(async () => {
      if (this.#closed) return;
      this.#closed = true;
      this.#credentials.close();
      this.#keyring.close();
      await this.#db.close();
    });
  }

  /** The files SQLite writes for the vault: what the erasure scan reads. */
  databaseFiles(): string[] {
    return sqliteFiles(this.dbPath);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const guarded = async (): Promise<T> => {
      if (this.#closed) throw new TallyboxError('VAULT_CLOSED', 'VAULT_CLOSED: the vault has been closed');
      return fn();
    };
    return this.#queue.run(guarded);
  }

  // ---------------------------------------------------------------- keys

  /** Organisations with a live data key (withdrawn or withdrawing ones excluded). */
  orgs(): Promise<string[]> {
    return this.serial(() => this.#credentials.liveOrgs());
  }

  /** Current data-key version of an org, undefined if it has none. */
  async keyVersion(orgId: string): Promise<number | undefined> {
    return this.serial(async () => (await this.#keyring.keysFor(checkId('orgId', orgId), false))?.version);
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
      const keys = await this.#keyring.keysFor(orgId, false);
      if (!keys) throw new TallyboxError('NO_ORG_KEY', `NO_ORG_KEY: organisation ${orgId} has no data key on this device`, { orgId });
      return { key: keys.faceTransformKey(), keyVersion: keys.version };
    });
  }

  /**
   * Wrap a P1 print job's own data key under the org's identity key (created when the org has none):
   * the job key is bound to its org, job and key version (AAD), so a wrapped key moved to another
   * job does not unwrap. Withdrawing the org destroys every job key it wrapped.
   */
  wrapJobKey(orgId: string, jobId: string, jobKey: Buffer): Promise<{ wrapped: Buffer; keyVersion: number }> {
    checkId('orgId', orgId);
    return this.serial(async () => {
      const keys = await this.#keyring.keysFor(orgId, true);
      return { wrapped: keys.seal('identity', jobKey, { kind: 'print.job-key', orgId, subjectId: '', recordId: jobId, keyVersion: keys.version }), keyVersion: keys.version };
    });
  }

  /** Unwrap a job key wrapJobKey made; NO_ORG_KEY once the org is withdrawn, KEY_VERSION_UNKNOWN after a rotation. */
  unwrapJobKey(orgId: string, jobId: string, keyVersion: number, wrapped: Buffer): Promise<Buffer> {
    checkId('orgId', orgId);
    return this.serial(async () => {
      const keys = await this.#keyring.keysFor(orgId, false);
      if (!keys) throw new TallyboxError('NO_ORG_KEY', `NO_ORG_KEY: organisation ${orgId} has no data key on this device`, { orgId });
      const r = keys.tryUnseal('identity', wrapped, { kind: 'print.job-key', orgId, subjectId: '', recordId: jobId, keyVersion });
      if (r instanceof Error) throw r;
      return r;
    });
  }

  /** Every quarantined record (optionally of one org): for doctor and status. */
  quarantined(orgId?: string): Promise<QuarantinedRecord[]> {
    return this.serial(() => this.#ctx.quarantine.list(orgId));
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
    checkSubjectInputs(orgId, inputs);
    return this.serial(() => this.#subjects.upsert(orgId, inputs));
  }

  /** Record a consent (biometric, or a guardian's for a subject aged 14 or under). */
  async recordConsent(orgId: string, subjectId: string, consent: ConsentInput): Promise<void> {
    checkId('orgId', orgId);
    checkId('subjectId', subjectId);
    checkConsentInput(consent);
    return this.serial(() => this.#subjects.recordConsent(orgId, subjectId, consent));
  }

  /**
   * Remove a recorded consent: further enrolments are refused. Templates
   * already enrolled must then be erased through the purge pipeline
   * (Purger.eraseTemplates) so the erasure is verified and receipted.
   */
  withdrawConsent(orgId: string, subjectId: string, kind: ConsentKind): Promise<boolean> {
    return this.serial(() => this.#subjects.withdrawConsent(orgId, subjectId, kind));
  }

  /**
   * Decrypted view of one subject; throws RECORD_QUARANTINED when the name does
   * not decrypt or `minor` fails its integrity check. Consents that fail theirs
   * are left out (so a consent check on the view refuses).
   */
  getSubject(orgId: string, subjectId: string): Promise<SubjectView> {
    return this.serial(() => this.#subjects.get(orgId, subjectId));
  }

  /** Subject ids of an org (a RosterSync handler diffs against this). */
  subjectIds(orgId: string): Promise<string[]> {
    return this.serial(() => this.#subjects.ids(orgId));
  }

  /** The subject was just identified: resets the retention clock for their templates. */
  touchSubject(orgId: string, subjectId: string, atMs?: number): Promise<boolean> {
    return this.serial(() => this.#subjects.touch(orgId, subjectId, atMs ?? this.#ctx.clock()));
  }

  // ---------------------------------------------------------------- templates

  /**
   * Enrol (or replace) the template in one slot. Refused with
   * ConsentRefusedError (reason consent_missing | guardian_consent_missing)
   * unless the consents are recorded, and with RECORD_QUARANTINED when the
   * subject's row fails its integrity check. Raw images are not templates:
   * callers pass the sensor's feature template only.
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
    checkTemplateInputs(orgId, items);
    return this.serial(() => this.#templates.enrol(orgId, items));
  }

  /** Template metadata without decrypting (rows failing their integrity check are listed as quarantined). */
  listTemplates(orgId: string, subjectId?: string): Promise<TemplateMeta[]> {
    return this.serial(() => this.#templates.list(orgId, subjectId));
  }

  /**
   * Decrypt every template of an org (start-up loading of a 1:N matcher).
   * Records that fail are quarantined and listed; the rest are returned.
   */
  decryptTemplates(orgId: string): Promise<DecryptTemplatesResult> {
    return this.serial(() => this.#templates.decryptAll(orgId));
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
  async forEachTemplate(orgId: string, modality: Modality, batchSize: number, fn: (batch: TemplateBatch) => void | Promise<void>): Promise<ForEachTemplateResult> {
    checkId('orgId', orgId);
    checkModality(modality);
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 100_000) throw new TallyboxError('INVALID_ARGUMENT', 'INVALID_ARGUMENT: batchSize must be an integer 1-100000', { field: 'batchSize' });
    const result: ForEachTemplateResult = { templates: 0, quarantined: [], batches: 0 };
    let after = 0;
    for (;;) {
      const batch = await this.serial(() => this.#templates.batch(orgId, modality, after, batchSize));
      if (!batch) return result;
      result.quarantined.push(...batch.quarantined);
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

  /** One template; throws RECORD_QUARANTINED (and quarantines it) when it fails to decrypt or its metadata was changed. */
  getTemplate(orgId: string, recordId: string): Promise<DecryptedTemplate> {
    return this.serial(() => this.#templates.get(orgId, recordId));
  }

  // ---------------------------------------------------------------- credentials

  /**
   * Store a card number or Wi-Fi MAC as a keyed HMAC under the org's lookup
   * key: it can be matched, never read back. Re-assigning a credential moves it.
   */
  async putCredential(orgId: string, kind: CredentialKind, value: string, subjectId: string): Promise<void> {
    checkId('orgId', orgId);
    checkId('subjectId', subjectId);
    normaliseCredential(kind, value);
    return this.serial(() => this.#credentials.put(orgId, kind, value, subjectId));
  }

  /** Subject holding this credential in this org, or undefined (also when its row fails its integrity check). */
  async lookupCredential(orgId: string, kind: CredentialKind, value: string): Promise<string | undefined> {
    normaliseCredential(kind, value);
    return this.serial(() => this.#credentials.lookup(orgId, kind, value));
  }

  /** Which org(s) and subject(s) hold this credential: one HMAC per org, for a reader shared by orgs. */
  async identifyCredential(kind: CredentialKind, value: string): Promise<Array<{ orgId: string; subjectId: string }>> {
    normaliseCredential(kind, value);
    return this.serial(() => this.#credentials.identify(kind, value));
  }

  /**
   * identifyCredential for several values in one queue turn and two statements (a phone's MAC,
   * unscoped and scoped to the SSID it joined): which (org, subject, value) hold any of them, in
   * org order then value order, among the organisations `accept` admits (default: all).
   */
  async identifyCredentials(kind: CredentialKind, values: readonly string[], accept?: (orgId: string) => boolean): Promise<CredentialMatch[]> {
    for (const v of values) normaliseCredential(kind, v);
    return this.serial(() => this.#credentials.identifyMany(kind, values, accept));
  }

  async removeCredential(orgId: string, kind: CredentialKind, value: string): Promise<boolean> {
    normaliseCredential(kind, value);
    return this.serial(() => this.#credentials.remove(orgId, kind, value));
  }

  // ---------------------------------------------------------------- retention (RetentionSource)

  staleTemplateSubjects(cutoffMs: number): Promise<Array<{ orgId: string; subjectIds: string[] }>> {
    return this.serial(() => this.#erasure.staleTemplateSubjects(cutoffMs));
  }

  // ---------------------------------------------------------------- erasure (ErasableStore)

  sampleForErasure(scope: ErasureScope): Promise<ErasureSample[]> {
    return this.serial(() => this.#erasure.sample(scope));
  }

  beginPurge(job: PurgeJob): Promise<void> {
    return this.serial(() => this.#erasure.beginPurge(job));
  }

  erase(jobId: string, scope: ErasureScope): Promise<StoreErasureResult> {
    return this.serial(() => this.#erasure.erase(jobId, scope));
  }

  markPurgeCompacting(jobId: string): Promise<void> {
    return this.serial(() => this.#erasure.markPurgeCompacting(jobId));
  }

  /**
   * Push everything to the main file and rebuild it: the WAL holds old page
   * images until a checkpoint, and freed pages (zeroed by secure_delete) are
   * dropped by VACUUM. TRUNCATE leaves a zero-length -wal behind.
   */
  compact(): Promise<void> {
    return this.serial(() => this.#erasure.compact());
  }

  finishPurge(jobId: string): Promise<void> {
    return this.serial(() => this.#erasure.finishPurge(jobId));
  }

  pendingPurges(): Promise<PurgeJob[]> {
    return this.serial(() => this.#erasure.pendingPurges());
  }
}
