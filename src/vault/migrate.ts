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
 */
import type { Sqlite } from '../store/sqlite.js';
import { TallyboxError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { uuidv7 } from '../util/uuidv7.js';
import { credentialRowMac, type CredentialRow } from './credentials.js';
import type { OrgKeyring } from './org-keys.js';
import { SCHEMA_V1_SQL, SCHEMA_V2_SQL, SCHEMA_VERSION } from './schema.js';
import { consentRowMac, subjectRowMac, type ConsentRow, type SubjectRow } from './subjects.js';
import { templateRowMac, type TemplateRow } from './templates.js';

export interface SchemaOutcome {
  /** The version found (0: a new, empty database). */
  found: number;
  version: number;
}

/** 0 for an empty database; the recorded version otherwise; refuses a file it cannot place. */
async function readSchemaVersion(db: Sqlite, dbPath: string): Promise<number> {
  const tables = await db.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'");
  if (tables.length === 0) return 0;
  const unknown = (why: string): TallyboxError =>
    new TallyboxError('VAULT_SCHEMA_UNKNOWN', `VAULT_SCHEMA_UNKNOWN: ${dbPath} ${why}; it was not written by Tallybox or is damaged, and is left untouched`, { path: dbPath });
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
  const orgs = await db.all<{ org_id: string }>(
    'SELECT org_id FROM subjects UNION SELECT org_id FROM consents UNION SELECT org_id FROM templates UNION SELECT org_id FROM credentials ORDER BY org_id',
  );
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
    for (const r of await db.all<Omit<TemplateRow, 'ct'> & { rid: number }>(
      'SELECT rowid AS rid, record_id, org_id, subject_id, modality, slot, key_version FROM templates WHERE org_id = ?',
      [orgId],
    )) {
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

/**
 * Create or upgrade the schema, checking the KEK first: a wrong key refuses the
 * file before anything in it changes.
 */
export async function prepareSchema(opts: { db: Sqlite; dbPath: string; keyring: OrgKeyring; providerKind: string; log: Logger; clock: () => number }): Promise<SchemaOutcome> {
  const { db, dbPath, keyring, log } = opts;
  const found = await readSchemaVersion(db, dbPath);
  if (found > SCHEMA_VERSION) {
    throw new TallyboxError(
      'VAULT_SCHEMA_UNSUPPORTED',
      `VAULT_SCHEMA_UNSUPPORTED: ${dbPath} has schema version ${found}, newer than this agent's ${SCHEMA_VERSION}; run the agent version that wrote it (the file is left untouched)`,
      { path: dbPath, found, supported: SCHEMA_VERSION },
    );
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
  if (found === 1) {
    const counts = await db.transaction(async () => {
      const c = await migrateV1toV2(db, keyring, opts.clock);
      await setVersion(db, 2);
      return c;
    });
    log.warn(
      { event: 'vault_schema_migrated', from: 1, to: 2, ...counts },
      'vault schema upgraded from v1 to v2: integrity MACs computed over the existing rows as found (changes made before this upgrade cannot be detected)',
    );
  }
  return { found, version: SCHEMA_VERSION };
}
