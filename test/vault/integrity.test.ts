/**
 * Issue 9 §6: metadata that cannot be flipped. Each test edits the real
 * vault.db with the sqlite3 driver directly (no vault code involved: what
 * anyone who can write the file can do) while the vault is closed, reopens it,
 * and checks the change is detected, the record quarantined with a clear
 * error, the consent check refuses rather than passes, and the rest works.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import sqlite3 from 'sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { assertBiometricConsent, ConsentRefusedError } from '../../src/vault/consent.js';
import { Sqlite } from '../../src/store/sqlite.js';
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
const T0 = 1_767_225_600_000;

/** Run SQL on vault.db with the sqlite3 driver itself, the vault closed, then reopen the vault. Returns the rows changed (-1 for a script). */
async function tamper(sql: string, params: Array<string | number | null> = []): Promise<number> {
  await vault.close();
  const changes = await new Promise<number>((resolve, reject) => {
    const db = new sqlite3.Database(join(sb.dataDir, 'vault.db'), sqlite3.OPEN_READWRITE, (err) => {
      if (err) return reject(err);
      const done = (e: Error | null, n: number): void => db.close((ce) => ((e ?? ce) ? reject(e ?? ce) : resolve(n)));
      // Several statements go through exec (no parameters, no change count).
      if (params.length === 0 && sql.trim().replace(/;$/, '').includes(';')) db.exec(sql, (e) => done(e, -1));
      else
        db.run(sql, params, function (this: sqlite3.RunResult, e: Error | null) {
          done(e, this?.changes ?? 0);
        });
    });
  });
  vault = await openVault(sb);
  return changes;
}

/** What the roles and the command handler do before asking a terminal to enrol. */
async function roleConsentCheck(subjectId: string): Promise<void> {
  const s = await vault.getSubject(ORG, subjectId);
  assertBiometricConsent({ minor: s.minor, biometricAtMs: s.consents.biometric?.grantedAtMs ?? null, guardianAtMs: s.consents.guardian?.grantedAtMs ?? null });
}

const adult = (subjectId: string) => ({ subjectId, displayName: `Name ${subjectId}`, minor: false, consents: [{ kind: 'biometric' as const, grantedAtMs: T0, evidence: `form ${subjectId}` }] });
const kid = (subjectId: string) => ({ subjectId, displayName: `Kid ${subjectId}`, minor: true, consents: [{ kind: 'biometric' as const, grantedAtMs: T0 }] });

describe('subjects: minor', () => {
  it('a minor made an adult in vault.db is detected and quarantined; every consent check refuses; the rest works; an upsert heals it', async () => {
    await vault.upsertSubjects(ORG, [kid('kid-0001'), adult('adult-0001')]);
    await expect(vault.enrolTemplate(ORG, 'kid-0001', 'fingerprint', 0, randomBytes(64))).rejects.toMatchObject({ reason: 'guardian_consent_missing' });
    const { recordId } = await vault.upsertSubject(ORG, kid('kid-0001'));

    expect(await tamper("UPDATE subjects SET minor = 0 WHERE subject_id = 'kid-0001'")).toBe(1);

    // The vault's own check: refused, not passed.
    const err = await vault.enrolTemplate(ORG, 'kid-0001', 'fingerprint', 0, randomBytes(64)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'RECORD_QUARANTINED', details: { table: 'subjects', recordId, cause: 'METADATA_MAC_MISMATCH' } });
    expect((err as Error).message).toMatch(/^subjects record \S+ failed its integrity check \(METADATA_MAC_MISMATCH: minor/);
    // The roles' check (getSubject, then assertBiometricConsent): refused too.
    await expect(roleConsentCheck('kid-0001')).rejects.toMatchObject({ code: 'RECORD_QUARANTINED' });
    expect(await vault.listTemplates(ORG, 'kid-0001')).toEqual([]);
    expect(await vault.quarantined()).toMatchObject([{ table: 'subjects', recordId, orgId: ORG, code: 'METADATA_MAC_MISMATCH' }]);
    // Everything else keeps working.
    await expect(vault.enrolTemplate(ORG, 'adult-0001', 'fingerprint', 0, randomBytes(64))).resolves.toMatchObject({ recordId: expect.any(String) });
    expect((await vault.getSubject(ORG, 'adult-0001')).minor).toBe(false);

    // Clearing the quarantine flag in the file does not help: the MAC is checked on every read.
    await tamper("UPDATE subjects SET quarantined_at_ms = NULL, quarantine_code = NULL WHERE subject_id = 'kid-0001'");
    await expect(vault.enrolTemplate(ORG, 'kid-0001', 'fingerprint', 0, randomBytes(64))).rejects.toMatchObject({ code: 'RECORD_QUARANTINED' });

    // A legitimate upsert (a signed SubjectUpsert) re-binds the row.
    await vault.upsertSubject(ORG, kid('kid-0001'));
    expect(await vault.getSubject(ORG, 'kid-0001')).toMatchObject({ minor: true });
    await expect(vault.enrolTemplate(ORG, 'kid-0001', 'fingerprint', 0, randomBytes(64))).rejects.toMatchObject({ reason: 'guardian_consent_missing' });
    expect(await vault.quarantined()).toEqual([]);
  });

  it('a row whose MAC was removed is not accepted as unbound (METADATA_MAC_MISSING)', async () => {
    await vault.upsertSubject(ORG, kid('kid-0002'));
    await tamper("UPDATE subjects SET mac = NULL, minor = 0 WHERE subject_id = 'kid-0002'");
    await expect(vault.enrolTemplate(ORG, 'kid-0002', 'face', 0, randomBytes(64))).rejects.toMatchObject({ code: 'RECORD_QUARANTINED', details: { cause: 'METADATA_MAC_MISSING' } });
    await expect(vault.getSubject(ORG, 'kid-0002')).rejects.toMatchObject({ code: 'RECORD_QUARANTINED' });
  });
});

describe('consents: kind and time', () => {
  it('a consent time changed in vault.db no longer counts: enrolment refused with consent_missing, the consent quarantined', async () => {
    await vault.upsertSubjects(ORG, [adult('adult-0001'), adult('adult-0002')]);
    await tamper("UPDATE consents SET granted_at_ms = granted_at_ms - 86400000 WHERE subject_id = 'adult-0001'");
    await expect(vault.enrolTemplate(ORG, 'adult-0001', 'fingerprint', 0, randomBytes(64))).rejects.toBeInstanceOf(ConsentRefusedError);
    await expect(vault.enrolTemplate(ORG, 'adult-0001', 'fingerprint', 0, randomBytes(64))).rejects.toMatchObject({ reason: 'consent_missing' });
    const view = await vault.getSubject(ORG, 'adult-0001');
    expect(view.consents).toEqual({});
    await expect(roleConsentCheck('adult-0001')).rejects.toMatchObject({ reason: 'consent_missing' });
    expect(await vault.quarantined(ORG)).toMatchObject([{ table: 'consents', code: 'METADATA_MAC_MISMATCH' }]);
    // The other subject's consent is intact.
    await expect(vault.enrolTemplate(ORG, 'adult-0002', 'fingerprint', 0, randomBytes(64))).resolves.toBeDefined();
    // Recording the consent again (a signed command) heals it.
    await vault.recordConsent(ORG, 'adult-0001', { kind: 'biometric', grantedAtMs: T0 });
    await expect(vault.enrolTemplate(ORG, 'adult-0001', 'fingerprint', 0, randomBytes(64))).resolves.toBeDefined();
  });

  it('a guardian consent forged by copying the biometric row under another kind does not let a minor enrol', async () => {
    await vault.upsertSubject(ORG, kid('kid-0003'));
    const forged = await tamper(
      `INSERT INTO consents (org_id, subject_id, kind, record_id, key_version, granted_at_ms, evidence_ct, mac)
       SELECT org_id, subject_id, 'guardian', record_id || '-g', key_version, granted_at_ms, evidence_ct, mac FROM consents WHERE subject_id = 'kid-0003'`,
    );
    expect(forged).toBe(1);
    await expect(vault.enrolTemplate(ORG, 'kid-0003', 'face', 0, randomBytes(64))).rejects.toMatchObject({ code: 'CONSENT_REFUSED', reason: 'guardian_consent_missing' });
    await expect(roleConsentCheck('kid-0003')).rejects.toMatchObject({ reason: 'guardian_consent_missing' });
    expect(Object.keys((await vault.getSubject(ORG, 'kid-0003')).consents)).toEqual(['biometric']);
    expect(await vault.quarantined(ORG)).toMatchObject([{ table: 'consents', code: 'METADATA_MAC_MISMATCH' }]);
  });

  it('a consent kind flipped in place is detected and stops counting', async () => {
    await vault.upsertSubject(ORG, adult('adult-0003'));
    await tamper("UPDATE consents SET kind = 'guardian' WHERE subject_id = 'adult-0003'");
    expect((await vault.getSubject(ORG, 'adult-0003')).consents).toEqual({});
    await expect(vault.enrolTemplate(ORG, 'adult-0003', 'face', 0, randomBytes(64))).rejects.toMatchObject({ reason: 'consent_missing' });
    expect(await vault.quarantined(ORG)).toMatchObject([{ table: 'consents', code: 'METADATA_MAC_MISMATCH' }]);
  });
});

describe('credentials: several values in one look-up', () => {
  it('finds each value held, with which value it was, in org order then value order; a tampered row among them identifies no one and is quarantined', async () => {
    const OTHER = 'org-b';
    await vault.upsertSubjects(ORG, [adult('adult-0001'), adult('adult-0002')]);
    await vault.upsertSubjects(OTHER, [adult('adult-0003')]);
    await vault.putCredential(ORG, 'wifi_mac', 'aa:bb:cc:00:00:01', 'adult-0001');
    await vault.putCredential(ORG, 'wifi_mac', 'aa:bb:cc:00:00:02', 'adult-0002');
    await vault.putCredential(OTHER, 'wifi_mac', 'aa:bb:cc:00:00:01', 'adult-0003');
    const values = ['aa:bb:cc:00:00:02', 'aa:bb:cc:00:00:09', 'aa:bb:cc:00:00:01'];
    expect(await vault.identifyCredentials('wifi_mac', values)).toEqual([
      { orgId: ORG, subjectId: 'adult-0002', value: 'aa:bb:cc:00:00:02' },
      { orgId: ORG, subjectId: 'adult-0001', value: 'aa:bb:cc:00:00:01' },
      { orgId: OTHER, subjectId: 'adult-0003', value: 'aa:bb:cc:00:00:01' },
    ]);
    // Only the organisations asked for.
    expect(await vault.identifyCredentials('wifi_mac', values, (o) => o === OTHER)).toEqual([{ orgId: OTHER, subjectId: 'adult-0003', value: 'aa:bb:cc:00:00:01' }]);
    // adult-0002's phone pointed at adult-0001 outside the vault.
    expect(await tamper("UPDATE credentials SET subject_id = 'adult-0001' WHERE subject_id = 'adult-0002'")).toBe(1);
    expect(await vault.identifyCredentials('wifi_mac', values)).toEqual([
      { orgId: ORG, subjectId: 'adult-0001', value: 'aa:bb:cc:00:00:01' },
      { orgId: OTHER, subjectId: 'adult-0003', value: 'aa:bb:cc:00:00:01' },
    ]);
    expect(await vault.quarantined(ORG)).toMatchObject([{ table: 'credentials', code: 'METADATA_MAC_MISMATCH' }]);
    await expect(vault.identifyCredentials('wifi_mac', ['not-a-mac'])).rejects.toMatchObject({ code: 'INVALID_CREDENTIAL' });
  });
});

describe('credentials: the rows matched in memory', () => {
  it('are only ever what the file holds: a write by any connection of this process drops them (a moved owner is quarantined, a deleted card identifies no one)', async () => {
    await vault.upsertSubjects(ORG, [adult('adult-0001'), adult('adult-0002')]);
    await vault.putCredential(ORG, 'card', '0004500123', 'adult-0001');
    await vault.putCredential(ORG, 'card', '0004500999', 'adult-0002');
    // Read into memory by the first look-up.
    expect(await vault.identifyCredential('card', '0004500123')).toEqual([{ orgId: ORG, subjectId: 'adult-0001' }]);
    // Another connection to the same file, in this process, with the vault open.
    const other = await Sqlite.open(join(sb.dataDir, 'vault.db'));
    try {
      expect((await other.run("UPDATE credentials SET subject_id = 'adult-0002' WHERE subject_id = 'adult-0001'")).changes).toBe(1);
      expect(await vault.identifyCredential('card', '0004500123')).toEqual([]);
      expect(await vault.quarantined(ORG)).toMatchObject([{ table: 'credentials', code: 'METADATA_MAC_MISMATCH' }]);
      expect(await vault.identifyCredential('card', '0004500999')).toEqual([{ orgId: ORG, subjectId: 'adult-0002' }]);
      expect((await other.run("DELETE FROM credentials WHERE subject_id = 'adult-0002'")).changes).toBe(2);
      expect(await vault.identifyCredential('card', '0004500999')).toEqual([]);
    } finally {
      await other.close();
    }
    // The vault's own writes too: a new card is found at once.
    await vault.putCredential(ORG, 'card', '0004500777', 'adult-0001');
    expect(await vault.identifyCredential('card', '0004500777')).toEqual([{ orgId: ORG, subjectId: 'adult-0001' }]);
  });
});

describe('credentials: owner', () => {
  it('a card pointed at another person in vault.db identifies no one; it is quarantined; other cards work; re-assigning heals it', async () => {
    await vault.upsertSubjects(ORG, [adult('adult-0001'), adult('adult-0002')]);
    await vault.putCredential(ORG, 'card', '0004500123', 'adult-0001');
    await vault.putCredential(ORG, 'card', '0004500999', 'adult-0002');
    expect(await tamper("UPDATE credentials SET subject_id = 'adult-0002' WHERE subject_id = 'adult-0001'")).toBe(1);

    expect(await vault.lookupCredential(ORG, 'card', '0004500123')).toBeUndefined();
    expect(await vault.identifyCredential('card', '0004500123')).toEqual([]);
    const q = await vault.quarantined(ORG);
    expect(q).toMatchObject([{ table: 'credentials', orgId: ORG, code: 'METADATA_MAC_MISMATCH', recordId: expect.any(String) }]);
    // The report names a record, never the card's HMAC or number.
    expect(q[0]!.recordId).not.toMatch(/0004500123/);
    expect(await vault.identifyCredential('card', '0004500999')).toEqual([{ orgId: ORG, subjectId: 'adult-0002' }]);

    await vault.putCredential(ORG, 'card', '0004500123', 'adult-0001');
    expect(await vault.lookupCredential(ORG, 'card', '0004500123')).toBe('adult-0001');
    expect(await vault.quarantined(ORG)).toEqual([]);
  });

  it('a card given the lookup hash of another card (moving the mapping) identifies no one', async () => {
    await vault.upsertSubjects(ORG, [adult('adult-0001'), adult('adult-0002')]);
    await vault.putCredential(ORG, 'card', '1111111111', 'adult-0001');
    await vault.putCredential(ORG, 'card', '2222222222', 'adult-0002');
    // Card 2222222222 now maps to adult-0001: keep row 1's owner, take row 2's lookup.
    await tamper(`CREATE TEMP TABLE stolen AS SELECT lookup FROM credentials WHERE subject_id = 'adult-0002';
      DELETE FROM credentials WHERE subject_id = 'adult-0002';
      UPDATE credentials SET lookup = (SELECT lookup FROM stolen) WHERE subject_id = 'adult-0001';`);
    expect(await vault.lookupCredential(ORG, 'card', '2222222222')).toBeUndefined();
  });
});

describe('templates: modality', () => {
  it('a face template relabelled as a fingerprint is quarantined, never handed to the fingerprint matcher; the rest load', async () => {
    await vault.upsertSubjects(ORG, [adult('adult-0001'), adult('adult-0002')]);
    const face = await vault.enrolTemplate(ORG, 'adult-0001', 'face', 0, Buffer.from('face-template-A'.padEnd(64, '.')));
    const finger = await vault.enrolTemplate(ORG, 'adult-0002', 'fingerprint', 0, Buffer.from('finger-template-B'.padEnd(64, '.')));
    const slotMoved = await vault.enrolTemplate(ORG, 'adult-0002', 'fingerprint', 1, Buffer.from('finger-template-B1'.padEnd(64, '.')));
    await tamper("UPDATE templates SET modality = 'fingerprint' WHERE record_id = ?", [face.recordId]);
    await tamper('UPDATE templates SET slot = 7 WHERE record_id = ?', [slotMoved.recordId]);

    const seen: string[] = [];
    const r = await vault.forEachTemplate(ORG, 'fingerprint', 10, (batch) => void seen.push(...batch.map((t) => t.recordId)));
    expect(seen).toEqual([finger.recordId]);
    expect(r.quarantined.map((q) => [q.recordId, q.code]).sort()).toEqual(
      [
        [face.recordId, 'METADATA_MAC_MISMATCH'],
        [slotMoved.recordId, 'METADATA_MAC_MISMATCH'],
      ].sort(),
    );
    const all = await vault.decryptTemplates(ORG);
    expect(all.templates.map((t) => t.recordId)).toEqual([finger.recordId]);
    await expect(vault.getTemplate(ORG, face.recordId)).rejects.toMatchObject({ code: 'RECORD_QUARANTINED', details: { table: 'templates' } });
    const listed = await vault.listTemplates(ORG);
    expect(listed.find((t) => t.recordId === face.recordId)).toMatchObject({ quarantined: true });
    expect(listed.find((t) => t.recordId === finger.recordId)).toMatchObject({ quarantined: false });
  });

  it('listTemplates notices a relabelled template before anything decrypts it', async () => {
    await vault.upsertSubject(ORG, adult('adult-0001'));
    const face = await vault.enrolTemplate(ORG, 'adult-0001', 'face', 0, randomBytes(64));
    await tamper("UPDATE templates SET modality = 'fingerprint' WHERE record_id = ?", [face.recordId]);
    expect(await vault.listTemplates(ORG)).toMatchObject([{ recordId: face.recordId, modality: 'fingerprint', quarantined: true }]);
    expect(await vault.quarantined()).toMatchObject([{ table: 'templates', recordId: face.recordId, code: 'METADATA_MAC_MISMATCH' }]);
  });
});
