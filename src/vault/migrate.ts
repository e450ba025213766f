/**
 * Bringing vault.db to the current schema on open. The file is input like any
 * other: an empty database is created; a known older version is upgraded in
 * one transaction (a power cut leaves it at the old version, upgraded again
 * next time); a newer or unrecognisable one is refused and left untouched.
 *
 * v1 → v2 computes the row MACs over the rows as found. Whatever was changed
 * in a v1 file before this upgrade cannot be told apart any more (v1 had no
 * binding to check against); from then on every change is. Rows of an org
 * whose data key is gone get no MAC and are quarantined when read
 * (METADATA_MAC_MISSING), never silently accepted.
 *
 * v2 → v3 re-seals every template with its modality and slot in the AAD,
 * after checking its MAC: a template whose MAC or ciphertext fails is
 * quarantined instead, with that cause.
 */
import type { Sqlite } from '../store/sqlite.js';
import { TallyboxError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { uuidv7 } from '../util/uuidv7.js';
import { credentialRowMac, type CredentialRow } from './credentials.js';
import type { OrgKeyring } from './org-keys.js';
import { SCHEMA_V1_SQL, SCHEMA_V2_SQL, SCHEMA_VERSION } from './schema.js';
import { consentRowMac, subjectRowMac, type ConsentRow, type SubjectRow } from './subjects.js';
import { checkMac } from './integrity.js';
import { templateAad, templateRowMac, type TemplateRow } from './templates.js';

export interface SchemaOutcome {
  /** The version found (0: a new, empty database). */
  found: number;
  version: number;
}

/** 0 for an empty database; the recorded version otherwise; refuses a file it cannot place. */
async function readSchemaVersion(db: Sqlite, dbPath: string): Promise<number> {
  const tables = await db.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'");
  if (tables.length === 0) return 0;
  const unknown = (why: string): TallyboxError => new TallyboxError('VAULT_SCHEMA_UNKNOWN', `VAULT_SCHEMA_UNKNOWN: ${dbPath} ${why}; it was not written by Tallybox or is damaged, and is left untouched`, { path: dbPath });
  if (!tables.some((t) => t.name === 'meta')) throw unknown('has tables but no meta table');
  const row = await db.get<{ value: unknown }>("SELECT value FROM meta WHERE key = 'schema_version'");
  if (!row) throw unknown('records no schema version');
  const v = typeof row.value === 'number' ? row.value : typeof row.value === 'string' && /^\d+$/.test(row.value) ? Number(row.value) : NaN;
  if (!Number.isSafeInteger(v) || v < 1) throw unknown('records an invalid schema version');
  return v;
}

async function setVersion(db: Sqlite, version: number): Promise<void> {
  await db.run("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [version]);
}

/** Counts only: nothing about who is in the vault. */
interface MigrationCounts {
  subjects: number;
  consents: number;
  templates: number;
  credentials: number;
  /** Rows of orgs without a data key: left without a MAC (quarantined when read). */
  unbound: number;
}

async function migrateV1toV2(db: Sqlite, keyring: OrgKeyring, clock: () => number): Promise<MigrationCounts> {
  // v1 agents ran their (idempotent) CREATE IF NOT EXISTS on every open; so does the upgrade.
  await db.exec(SCHEMA_V1_SQL);
  await db.exec(SCHEMA_V2_SQL);
  const now = clock();
  for (const r of await db.all<{ rid: number }>('SELECT rowid AS rid FROM credentials')) {
    await db.run('UPDATE credentials SET record_id = ? WHERE rowid = ?', [uuidv7(now), r.rid]);
  }
  const counts: MigrationCounts = { subjects: 0, consents: 0, templates: 0, credentials: 0, unbound: 0 };
  const orgs = await db.all<{ org_id: string }>('SELECT org_id FROM subjects UNION SELECT org_id FROM consents UNION SELECT org_id FROM templates UNION SELECT org_id FROM credentials ORDER BY org_id');
  for (const { org_id: orgId } of orgs) {
    const keys = await keyring.keysFor(orgId, false);
    if (!keys) {
      for (const t of ['subjects', 'consents', 'templates', 'credentials'] as const) {
        const r = await db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${t} WHERE org_id = ?`, [orgId]);
        counts.unbound += r?.n ?? 0;
      }
      continue;
    }
    for (const r of await db.all<SubjectRow & { rid: number }>('SELECT rowid AS rid, * FROM subjects WHERE org_id = ?', [orgId])) {
      await db.run('UPDATE subjects SET mac = ? WHERE rowid = ?', [subjectRowMac(keys, r), r.rid]);
      counts.subjects++;
    }
    for (const r of await db.all<ConsentRow & { rid: number }>('SELECT rowid AS rid, * FROM consents WHERE org_id = ?', [orgId])) {
      await db.run('UPDATE consents SET mac = ? WHERE rowid = ?', [consentRowMac(keys, r), r.rid]);
      counts.consents++;
    }
    for (const r of await db.all<Omit<TemplateRow, 'ct'> & { rid: number }>('SELECT rowid AS rid, record_id, org_id, subject_id, modality, slot, key_version FROM templates WHERE org_id = ?', [orgId])) {
      await db.run('UPDATE templates SET mac = ? WHERE rowid = ?', [templateRowMac(keys, r), r.rid]);
      counts.templates++;
    }
    for (const r of await db.all<CredentialRow & { rid: number }>('SELECT rowid AS rid, * FROM credentials WHERE org_id = ?', [orgId])) {
      await db.run('UPDATE credentials SET mac = ? WHERE rowid = ?', [credentialRowMac(keys, r), r.rid]);
      counts.credentials++;
    }
  }
  return counts;
}

interface ResealCounts {
  resealed: number;
  /** Templates that failed their MAC or did not decrypt: quarantined, not re-sealed. */
  quarantined: number;
}

async function migrateV2toV3(db: Sqlite, keyring: OrgKeyring, clock: () => number): Promise<ResealCounts> {
  const counts: ResealCounts = { resealed: 0, quarantined: 0 };
  const now = clock();
  for (const { org_id: orgId } of await db.all<{ org_id: string }>('SELECT DISTINCT org_id FROM templates ORDER BY org_id')) {
    const keys = await keyring.keysFor(orgId, false);
    // Without the org's key its templates are unreadable either way (counted as unbound by v1 → v2).
    if (!keys) continue;
    for (const r of await db.all<TemplateRow & { rid: number }>('SELECT rowid AS rid, * FROM templates WHERE org_id = ? AND quarantined_at_ms IS NULL', [orgId])) {
      const v2Aad = { kind: 'template' as const, orgId, subjectId: r.subject_id, recordId: r.record_id, keyVersion: r.key_version };
      const bad = checkMac(templateRowMac(keys, r), r.mac);
      const plain = bad ?? keys.tryUnseal('templates', r.ct, v2Aad);
      if (plain instanceof Error) {
        const code = (plain as { code?: string }).code ?? 'DECRYPT_FAILED';
        await db.run('UPDATE templates SET quarantined_at_ms = ?, quarantine_code = ? WHERE rowid = ?', [now, code, r.rid]);
        counts.quarantined++;
        continue;
      }
      try {
        await db.run('UPDATE templates SET ct = ? WHERE rowid = ?', [keys.seal('templates', plain, templateAad(r)), r.rid]);
      } finally {
        plain.fill(0);
      }
      counts.resealed++;
    }
  }
  return counts;
}

/**
 * Create or upgrade the schema, checking the KEK first: a wrong key refuses the
 * file before anything in it changes.
 */
export async function prepareSchema(opts: { db: Sqlite; dbPath: string; keyring: OrgKeyring; providerKind: string; log: Logger; clock: () => number }): Promise<SchemaOutcome> {
  const { db, dbPath, keyring, log } = opts;
  const found = await readSchemaVersion(db, dbPath);
  if (found > SCHEMA_VERSION) {
    throw new TallyboxError('VAULT_SCHEMA_UNSUPPORTED', `VAULT_SCHEMA_UNSUPPORTED: ${dbPath} has schema version ${found}, newer than this agent's ${SCHEMA_VERSION}; run the agent version that wrote it (the file is left untouched)`, {
      path: dbPath,
      found,
      supported: SCHEMA_VERSION,
    });
  }
  if (found === 0) {
    await db.transaction(async () => {
      await db.exec(SCHEMA_V1_SQL);
      await db.exec(SCHEMA_V2_SQL);
      await setVersion(db, SCHEMA_VERSION);
    });
    await keyring.checkKek(opts.providerKind, dbPath);
    return { found, version: SCHEMA_VERSION };
  }
  await keyring.checkKek(opts.providerKind, dbPath);
  if (found < SCHEMA_VERSION) {
    // One transaction for every step: a power cut leaves the file at `found`, upgraded again next time.
    const counts = await db.transaction(async () => {
      const c = found < 2 ? await migrateV1toV2(db, keyring, opts.clock) : undefined;
      const r = await migrateV2toV3(db, keyring, opts.clock);
      await setVersion(db, SCHEMA_VERSION);
      return { ...c, templatesResealed: r.resealed, templatesQuarantined: r.quarantined };
    });
    log.warn(
      { event: 'vault_schema_migrated', from: found, to: SCHEMA_VERSION, ...counts },
      found < 2
        ? `vault schema upgraded from v${found} to v${SCHEMA_VERSION}: integrity MACs computed over the existing rows as found (changes made before this upgrade cannot be detected), templates re-sealed`
        : `vault schema upgraded from v${found} to v${SCHEMA_VERSION}: templates re-sealed with modality and slot bound`,
    );
    if (counts.templatesQuarantined > 0) log.error({ event: 'vault_migration_quarantined', count: counts.templatesQuarantined }, 'templates failing their integrity check were quarantined during the upgrade');
  }
  return { found, version: SCHEMA_VERSION };
}
