/**
 * vault.db files from previous schemas. Each fixture was written by that
 * version's vault code itself: v1 (commit 5132c29, no row MACs) and v2
 * (commit 0f9c33a, row MACs, templates sealed without modality and slot in
 * the AAD), each with an org holding an adult, a minor with guardian consent,
 * a minor without, three templates, two cards and a Wi-Fi MAC. Opening one
 * must upgrade it to the current schema in one step (logged), keep every
 * record readable, never launder a change made before the upgrade that the
 * old version could detect, and from then on detect changes; a file the agent
 * cannot place (newer, no version, wrong KEK) is refused and left
 * byte-for-byte untouched.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sqlite3 from 'sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/util/log.js';
import { FileKeyProvider, provisionKeyFiles } from '../../src/vault/keys.js';
import { Vault } from '../../src/vault/vault.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
let ORG = 'org-v1';

let root: string;
let dataDir: string;
let provider: FileKeyProvider;
let vault: Vault | undefined;

/** Put fixture `vault-vN` in place as DATA/vault.db with its keys. */
async function useFixture(version: 1 | 2): Promise<void> {
  ORG = `org-v${version}`;
  const keysDir = join(root, 'keys');
  await copyFile(join(FIXTURES, `vault-v${version}.db`), join(dataDir, 'vault.db'));
  // git keeps no 0600: the copies get it here, as provisioning would have made them.
  for (const [from, to] of [
    [`vault-v${version}.kek`, 'tallybox.kek'],
    [`vault-v${version}-identity.pem`, 'device-identity.pem'],
  ] as const) {
    await copyFile(join(FIXTURES, from), join(keysDir, to));
    await chmod(join(keysDir, to), 0o600);
  }
  await chmod(join(dataDir, 'vault.db'), 0o600);
  provider = new FileKeyProvider({ kekPath: join(keysDir, 'tallybox.kek') });
}

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'tallybox-vault-old-'));
  dataDir = join(root, 'data');
  await mkdir(dataDir, { mode: 0o700 });
  await mkdir(join(root, 'keys'), { mode: 0o700 });
  await useFixture(1);
});
afterEach(async () => {
  await vault?.close().catch(() => undefined);
  vault = undefined;
  await rm(root, { recursive: true, force: true });
});

function memoryLogger(lines: Array<Record<string, unknown>>): Logger {
  const at =
    (level: string) =>
    (a: string | Record<string, unknown>, msg?: string): void =>
      void lines.push(typeof a === 'string' ? { level, msg: a } : { level, ...a, msg });
  const log = { level: 'trace', trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), fatal: at('fatal'), child: () => log };
  return log as unknown as Logger;
}

/** Query vault.db with the sqlite3 driver directly (vault closed). */
function raw<T>(sql: string, params: Array<string | number> = [], write = false): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(join(dataDir, 'vault.db'), write ? sqlite3.OPEN_READWRITE : sqlite3.OPEN_READONLY, (err) => {
      if (err) return reject(err);
      db.all(sql, params, (e: Error | null, rows: T[]) => db.close((ce) => ((e ?? ce) ? reject(e ?? ce) : resolve(rows))));
    });
  });
}

async function fileHashes(): Promise<string> {
  const h = createHash('sha256');
  for (const f of ['vault.db', 'vault.db-wal']) {
    h.update(f);
    h.update(await readFile(join(dataDir, f)).catch(() => Buffer.alloc(0)));
  }
  return h.digest('hex');
}

const schemaVersion = async (): Promise<unknown> => (await raw<{ value: unknown }>("SELECT value FROM meta WHERE key = 'schema_version'"))[0]?.value;

describe('upgrading a v1 vault.db', () => {
  it('computes the MACs and re-seals the templates on first open (schema v3), says so in the log, and every record reads as before', async () => {
    expect(await schemaVersion()).toBe(1);
    const logs: Array<Record<string, unknown>> = [];
    vault = await Vault.open({ dataDir, keyProvider: provider, logger: memoryLogger(logs) });
    expect(logs.filter((l) => l.event === 'vault_schema_migrated')).toMatchObject([{ level: 'warn', from: 1, to: 3, subjects: 3, consents: 4, templates: 3, credentials: 3, unbound: 0, templatesResealed: 3, templatesQuarantined: 0 }]);

    expect((await vault.getSubject(ORG, 'adult-0001')).displayName).toBe('Ada Adult');
    expect((await vault.getSubject(ORG, 'adult-0001')).consents.biometric).toMatchObject({ evidence: 'form-1' });
    const { templates, quarantined } = await vault.decryptTemplates(ORG);
    expect(quarantined).toEqual([]);
    expect(templates.map((t) => t.bytes.toString().replace(/\.+$/, '')).sort()).toEqual(['v1-face-template-adult', 'v1-fingerprint-template-adult', 'v1-fingerprint-template-minor']);
    expect(await vault.lookupCredential(ORG, 'card', '0004500123')).toBe('adult-0001');
    expect(await vault.identifyCredential('wifi_mac', 'AA-BB-CC-00-11-22')).toEqual([{ orgId: ORG, subjectId: 'minor-0003' }]);
    await expect(vault.enrolTemplate(ORG, 'minor-0003', 'face', 0, randomBytes(64))).rejects.toMatchObject({ reason: 'guardian_consent_missing' });
    await expect(vault.enrolTemplate(ORG, 'minor-0002', 'face', 0, randomBytes(64))).resolves.toBeDefined();
    expect(await vault.quarantined()).toEqual([]);
    await vault.close();
    vault = undefined;

    expect(await schemaVersion()).toBe(3);
    for (const t of ['subjects', 'consents', 'templates', 'credentials']) {
      expect(await raw(`SELECT rowid FROM ${t} WHERE mac IS NULL`), t).toEqual([]);
    }
    expect(await raw('SELECT rowid FROM credentials WHERE record_id IS NULL')).toEqual([]);

    // Once upgraded, a flipped minor is caught like in any v2 vault; the second open migrates nothing.
    await raw("UPDATE subjects SET minor = 0 WHERE subject_id = 'minor-0003'", [], true);
    logs.length = 0;
    vault = await Vault.open({ dataDir, keyProvider: provider, logger: memoryLogger(logs) });
    expect(logs.filter((l) => l.event === 'vault_schema_migrated')).toEqual([]);
    await expect(vault.enrolTemplate(ORG, 'minor-0003', 'face', 0, randomBytes(64))).rejects.toMatchObject({ code: 'RECORD_QUARANTINED', details: { cause: 'METADATA_MAC_MISMATCH' } });
  });

  it('with the wrong KEK the v1 file is refused before anything in it changes', async () => {
    const other = await provisionKeyFiles({ kekPath: join(root, 'other', 'tallybox.kek'), dataDir });
    const before = await fileHashes();
    await expect(Vault.open({ dataDir, keyProvider: new FileKeyProvider({ kekPath: other.kekPath }) })).rejects.toMatchObject({ code: 'KEK_MISMATCH' });
    expect(await fileHashes()).toBe(before);
    expect(await schemaVersion()).toBe(1);
  });

  it('a schema newer than this agent knows is refused and left untouched', async () => {
    await raw("UPDATE meta SET value = 4 WHERE key = 'schema_version'", [], true);
    const before = await fileHashes();
    const err = await Vault.open({ dataDir, keyProvider: provider }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'VAULT_SCHEMA_UNSUPPORTED', details: { found: 4, supported: 3 } });
    expect((err as Error).message).toMatch(/schema version 4, newer than this agent's 3/);
    expect(await fileHashes()).toBe(before);
  });

  it('a vault.db whose schema version is missing or garbage is refused, not re-created', async () => {
    await raw("DELETE FROM meta WHERE key = 'schema_version'", [], true);
    await expect(Vault.open({ dataDir, keyProvider: provider })).rejects.toMatchObject({ code: 'VAULT_SCHEMA_UNKNOWN', message: expect.stringContaining('records no schema version') });
    await raw("INSERT INTO meta (key, value) VALUES ('schema_version', 'two')", [], true);
    await expect(Vault.open({ dataDir, keyProvider: provider })).rejects.toMatchObject({ code: 'VAULT_SCHEMA_UNKNOWN', message: expect.stringContaining('invalid schema version') });
    expect(await raw('SELECT COUNT(*) AS n FROM subjects')).toEqual([{ n: 3 }]);
  });
});

describe('upgrading a v2 vault.db', () => {
  it('re-seals the templates with modality and slot bound; everything reads as before; a later relabel fails to decrypt and is named', async () => {
    await useFixture(2);
    expect(await schemaVersion()).toBe(2);
    const ctBefore = await raw<{ record_id: string; ct: Buffer }>('SELECT record_id, ct FROM templates ORDER BY record_id');
    const logs: Array<Record<string, unknown>> = [];
    vault = await Vault.open({ dataDir, keyProvider: provider, logger: memoryLogger(logs) });
    expect(logs.filter((l) => l.event === 'vault_schema_migrated')).toMatchObject([{ level: 'warn', from: 2, to: 3, templatesResealed: 3, templatesQuarantined: 0 }]);
    const { templates, quarantined } = await vault.decryptTemplates(ORG);
    expect(quarantined).toEqual([]);
    expect(templates.map((t) => t.bytes.toString().replace(/\.+$/, '')).sort()).toEqual(['v1-face-template-adult', 'v1-fingerprint-template-adult', 'v1-fingerprint-template-minor']);
    expect(await vault.lookupCredential(ORG, 'card', '0004500456')).toBe('minor-0002');
    await expect(vault.enrolTemplate(ORG, 'minor-0003', 'face', 0, randomBytes(64))).rejects.toMatchObject({ reason: 'guardian_consent_missing' });
    await vault.close();
    vault = undefined;
    expect(await schemaVersion()).toBe(3);
    // Same records, new ciphertexts.
    const ctAfter = await raw<{ record_id: string; ct: Buffer }>('SELECT record_id, ct FROM templates ORDER BY record_id');
    expect(ctAfter.map((r) => r.record_id)).toEqual(ctBefore.map((r) => r.record_id));
    ctAfter.forEach((r, i) => expect(r.ct.equals(ctBefore[i]!.ct)).toBe(false));

    // A fingerprint relabelled as a face: the decrypt fails (modality is in the AAD) and the MAC names the cause.
    await raw("UPDATE templates SET modality = 'face' WHERE subject_id = 'minor-0002'", [], true);
    vault = await Vault.open({ dataDir, keyProvider: provider });
    const walk = await vault.forEachTemplate(ORG, 'face', 10, () => undefined);
    expect(walk.templates).toBe(1);
    expect(walk.quarantined).toMatchObject([{ table: 'templates', code: 'METADATA_MAC_MISMATCH' }]);
  });

  it('a template changed in the v2 file before the upgrade is quarantined, not re-sealed under its new label', async () => {
    await useFixture(2);
    await raw("UPDATE templates SET modality = 'face' WHERE subject_id = 'minor-0002'", [], true);
    const logs: Array<Record<string, unknown>> = [];
    vault = await Vault.open({ dataDir, keyProvider: provider, logger: memoryLogger(logs) });
    expect(logs.filter((l) => l.event === 'vault_schema_migrated')).toMatchObject([{ templatesResealed: 2, templatesQuarantined: 1 }]);
    expect(logs.filter((l) => l.event === 'vault_migration_quarantined')).toMatchObject([{ level: 'error', count: 1 }]);
    const { templates, quarantined } = await vault.decryptTemplates(ORG);
    expect(templates).toHaveLength(2);
    expect(quarantined).toMatchObject([{ table: 'templates', code: 'METADATA_MAC_MISMATCH' }]);
    // Clearing the flag afterwards does not launder it either: the v3 AAD was never given the new label.
    await vault.close();
    await raw('UPDATE templates SET quarantined_at_ms = NULL, quarantine_code = NULL', [], true);
    vault = await Vault.open({ dataDir, keyProvider: provider });
    expect((await vault.decryptTemplates(ORG)).quarantined).toMatchObject([{ code: 'METADATA_MAC_MISMATCH' }]);
  });
});
