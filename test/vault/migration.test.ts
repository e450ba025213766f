/**
 * vault.db files from the previous schema (v1, no row MACs). The fixture was
 * written by the v1 vault code itself (commit 5132c29): org-v1 with an adult,
 * a minor with guardian consent, a minor without, three templates, two cards
 * and a Wi-Fi MAC. Opening it must upgrade it to v2 (MACs computed on first
 * open, logged), keep every record readable, and from then on detect changes;
 * a file the agent cannot place (newer, no version, wrong KEK) is refused and
 * left byte-for-byte untouched.
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
const ORG = 'org-v1';

let root: string;
let dataDir: string;
let provider: FileKeyProvider;
let vault: Vault | undefined;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'tallybox-vault-v1-'));
  dataDir = join(root, 'data');
  const keysDir = join(root, 'keys');
  await mkdir(dataDir, { mode: 0o700 });
  await mkdir(keysDir, { mode: 0o700 });
  await copyFile(join(FIXTURES, 'vault-v1.db'), join(dataDir, 'vault.db'));
  // git keeps no 0600: the copies get it here, as provisioning would have made them.
  for (const [from, to] of [
    ['vault-v1.kek', 'tallybox.kek'],
    ['vault-v1-identity.pem', 'device-identity.pem'],
  ] as const) {
    await copyFile(join(FIXTURES, from), join(keysDir, to));
    await chmod(join(keysDir, to), 0o600);
  }
  await chmod(join(dataDir, 'vault.db'), 0o600);
  provider = new FileKeyProvider({ kekPath: join(keysDir, 'tallybox.kek') });
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
      db.all(sql, params, (e: Error | null, rows: T[]) => db.close((ce) => (e ?? ce ? reject(e ?? ce) : resolve(rows))));
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
  it('computes the MACs on first open (schema v2), says so in the log, and every record reads as before', async () => {
    expect(await schemaVersion()).toBe(1);
    const logs: Array<Record<string, unknown>> = [];
    vault = await Vault.open({ dataDir, keyProvider: provider, logger: memoryLogger(logs) });
    expect(logs.filter((l) => l.event === 'vault_schema_migrated')).toMatchObject([
      { level: 'warn', from: 1, to: 2, subjects: 3, consents: 4, templates: 3, credentials: 3, unbound: 0 },
    ]);

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

    expect(await schemaVersion()).toBe(2);
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
    await raw("UPDATE meta SET value = 3 WHERE key = 'schema_version'", [], true);
    const before = await fileHashes();
    const err = await Vault.open({ dataDir, keyProvider: provider }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'VAULT_SCHEMA_UNSUPPORTED', details: { found: 3, supported: 2 } });
    expect((err as Error).message).toMatch(/schema version 3, newer than this agent's 2/);
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
