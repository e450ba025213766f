/**
 * Issue 9 §8: the credential-lookup key is not exportable. It is derived in
 * memory (HKDF-SHA256 of the org's data key, label "credential-lookup"), used
 * only to HMAC card numbers and MACs, and never written or handed out: no
 * file in the data or key directory holds it, and no dump of the Vault object
 * (util.inspect, JSON) shows it. The derivation is recomputed here with
 * node:crypto alone, from the documented formats, to prove the key found is
 * the one in use.
 */
import { createDecipheriv, createHmac, hkdfSync } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import sqlite3 from 'sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Vault } from '../../src/vault/vault.js';
import { openVault, sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
let vault: Vault;
beforeEach(async () => {
  sb = await sandbox();
  vault = await openVault(sb);
});
afterEach(async () => {
  await vault.close().catch(() => undefined);
  await sb.cleanup();
});

const ORG = 'org-a';
const CARD = '0004512345';

/** The AAD encoding of src/vault/crypto.ts: every field as a 2-byte length and its UTF-8 bytes. */
function aad(fields: string[]): Buffer {
  return Buffer.concat(fields.flatMap((f) => [Buffer.from([Buffer.byteLength(f) >> 8, Buffer.byteLength(f) & 0xff]), Buffer.from(f, 'utf8')]));
}

function readRows<T>(file: string, sql: string): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(file, sqlite3.OPEN_READONLY, (err) => {
      if (err) return reject(err);
      db.all(sql, [], (e: Error | null, rows: T[]) => db.close((ce) => ((e ?? ce) ? reject(e ?? ce) : resolve(rows))));
    });
  });
}

/** Recompute the org's keys from the KEK file and vault.db, as someone holding both could. */
async function deriveKeys(orgId: string): Promise<{ dek: Buffer; wrapKey: Buffer; sub: Record<string, Buffer>; storedLookup: Buffer }> {
  const kek = await readFile(sb.keys.kekPath);
  const wrapKey = Buffer.from(hkdfSync('sha256', kek, 'tallybox.v1 kek', 'tallybox.v1/dek-wrap', 32));
  const db = join(sb.dataDir, 'vault.db');
  const [row] = await readRows<{ key_version: number; wrapped: Buffer }>(db, `SELECT key_version, wrapped FROM org_keys WHERE org_id = '${orgId}'`);
  const { key_version: v, wrapped } = row!;
  // Sealed format: [0x01][12-byte nonce][ciphertext][16-byte tag].
  const d = createDecipheriv('aes-256-gcm', wrapKey, wrapped.subarray(1, 13));
  d.setAAD(aad(['tallybox.v1', 'dek.wrap', orgId, '', 'dek', String(v)]));
  d.setAuthTag(wrapped.subarray(wrapped.length - 16));
  const dek = Buffer.concat([d.update(wrapped.subarray(13, wrapped.length - 16)), d.final()]);
  const sub: Record<string, Buffer> = {};
  for (const purpose of ['templates', 'identity', 'credential-lookup', 'row-integrity', 'face-transform']) {
    sub[purpose] = Buffer.from(hkdfSync('sha256', dek, `tallybox.v1 org ${orgId}`, `tallybox.v1/${purpose}/v${v}`, 32));
  }
  const [cred] = await readRows<{ lookup: Buffer }>(db, `SELECT lookup FROM credentials WHERE org_id = '${orgId}' AND kind = 'card'`);
  return { dek, wrapKey, sub, storedLookup: cred!.lookup };
}

async function allFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await allFiles(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Every way a 32-byte key might be written: raw, hex (both cases), base64, base64url. */
function encodings(key: Buffer): Buffer[] {
  return [key, Buffer.from(key.toString('hex')), Buffer.from(key.toString('hex').toUpperCase()), Buffer.from(key.toString('base64')), Buffer.from(key.toString('base64url'))];
}

async function filesContaining(keys: Record<string, Buffer>): Promise<string[]> {
  const hits: string[] = [];
  for (const file of [...(await allFiles(sb.dataDir)), ...(await allFiles(sb.keysDir))]) {
    const bytes = await readFile(file);
    for (const [name, key] of Object.entries(keys)) if (encodings(key).some((e) => bytes.includes(e))) hits.push(`${name} in ${file}`);
  }
  return hits;
}

async function seed(): Promise<void> {
  await vault.upsertSubject(ORG, { subjectId: 'subject-0001', displayName: 'Card Holder', minor: false, consents: [{ kind: 'biometric' }] });
  await vault.putCredential(ORG, 'card', CARD, 'subject-0001');
  expect(await vault.lookupCredential(ORG, 'card', CARD)).toBe('subject-0001');
}

describe('the credential-lookup key', () => {
  it('is HKDF-SHA256 of the org data key ("credential-lookup"): recomputed from the KEK file and vault.db it reproduces the stored HMAC', async () => {
    await seed();
    const { sub, storedLookup } = await deriveKeys(ORG);
    const hmac = createHmac('sha256', sub['credential-lookup']!).update(`tallybox.v1\0card\0${CARD}`).digest();
    expect(hmac.equals(storedLookup)).toBe(true);
    // And only that key: no other purpose key produces it.
    for (const p of ['templates', 'identity', 'row-integrity', 'face-transform']) {
      expect(createHmac('sha256', sub[p]!).update(`tallybox.v1\0card\0${CARD}`).digest().equals(storedLookup)).toBe(false);
    }
  });

  it('is in no file of the data directory or the key directory, while the vault is open, after a compaction, or after close (nor is the DEK or any sub-key)', async () => {
    await seed();
    const { dek, wrapKey, sub } = await deriveKeys(ORG);
    const secrets = { dek, wrapKey, ...sub };
    expect(await filesContaining(secrets)).toEqual([]);
    await vault.compact();
    expect(await filesContaining(secrets)).toEqual([]);
    await vault.close();
    expect(await filesContaining(secrets)).toEqual([]);
  });

  it('cannot be read off the Vault object: util.inspect (hidden fields, any depth) and JSON show no key material', async () => {
    await seed();
    const { dek, wrapKey, sub } = await deriveKeys(ORG);
    const dump = inspect(vault, { depth: Infinity, showHidden: true, maxArrayLength: Infinity, maxStringLength: Infinity });
    let json = '';
    try {
      json = JSON.stringify(vault);
    } catch {
      // A cycle makes JSON throw: then it cannot leak either.
    }
    for (const [name, key] of Object.entries({ 'credential-lookup': sub['credential-lookup']!, dek, wrapKey, ...sub })) {
      // inspect prints a Buffer as <Buffer 1a 2b ...>; a prefix is enough to count as leaked.
      const spaced = key.subarray(0, 8).toString('hex').match(/../g)!.join(' ');
      expect(dump.includes(spaced), `${name} visible in inspect()`).toBe(false);
      expect(json.includes(key.toString('hex')) || json.includes(key.toString('base64')), `${name} visible in JSON`).toBe(false);
    }
  });
});
