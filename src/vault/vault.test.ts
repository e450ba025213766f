import { randomBytes } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Sqlite } from '../store/sqlite.js';
import { dbFiles, findNeedles, openVault, sandbox, type Sandbox } from '../../test/vault/helpers.js';
import { ConsentRefusedError } from './consent.js';
import type { Vault } from './vault.js';

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

const adult = (subjectId: string, displayName = `Name ${subjectId}`) => ({
  subjectId,
  displayName,
  minor: false,
  consents: [{ kind: 'biometric' as const, evidence: `form ${subjectId}` }],
});

/** Raw SQL on the vault file from outside the vault: what an attacker with the disk can do. */
async function tamper(sql: string, params: (string | Buffer)[] = []): Promise<void> {
  await vault.close();
  const db = await Sqlite.open(join(sb.dataDir, 'vault.db'));
  await db.run(sql, params);
  await db.close();
  vault = await openVault(sb);
}

describe('consent', () => {
  it('refuses biometric enrolment without recorded consent, with a reason code, and stores nothing', async () => {
    await vault.upsertSubject('org-a', { subjectId: 'subject-0001', displayName: 'No Consent', minor: false });
    const err = await vault.enrolTemplate('org-a', 'subject-0001', 'fingerprint', 0, randomBytes(64)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConsentRefusedError);
    expect(err).toMatchObject({ code: 'CONSENT_REFUSED', reason: 'consent_missing' });
    expect(await vault.listTemplates('org-a')).toEqual([]);
  });

  it('refuses a subject aged 14 or under without guardian consent, then accepts once it is recorded', async () => {
    await vault.upsertSubject('org-a', { subjectId: 'subject-0002', displayName: 'Kid', minor: true, consents: [{ kind: 'biometric' }] });
    await expect(vault.enrolTemplate('org-a', 'subject-0002', 'face', 0, randomBytes(64))).rejects.toMatchObject({
      code: 'CONSENT_REFUSED',
      reason: 'guardian_consent_missing',
      message: expect.stringContaining('14 or under'),
    });
    await vault.recordConsent('org-a', 'subject-0002', { kind: 'guardian', evidence: 'signed by parent' });
    await expect(vault.enrolTemplate('org-a', 'subject-0002', 'face', 0, randomBytes(64))).resolves.toMatchObject({ recordId: expect.any(String) });
    const s = await vault.getSubject('org-a', 'subject-0002');
    expect(s.consents.guardian?.evidence).toBe('signed by parent');
  });

  it('a withdrawn consent blocks further enrolment', async () => {
    await vault.upsertSubject('org-a', adult('subject-0003'));
    await vault.enrolTemplate('org-a', 'subject-0003', 'fingerprint', 0, randomBytes(64));
    expect(await vault.withdrawConsent('org-a', 'subject-0003', 'biometric')).toBe(true);
    await expect(vault.enrolTemplate('org-a', 'subject-0003', 'fingerprint', 1, randomBytes(64))).rejects.toMatchObject({ reason: 'consent_missing' });
  });

  it('a batch enrolment is refused as a whole when one subject lacks consent', async () => {
    await vault.upsertSubjects('org-a', [adult('subject-0001'), { subjectId: 'subject-0002', displayName: 'Kid', minor: true, consents: [{ kind: 'biometric' }] }]);
    await expect(
      vault.enrolTemplates('org-a', [
        { subjectId: 'subject-0001', modality: 'fingerprint', slot: 0, bytes: randomBytes(32) },
        { subjectId: 'subject-0002', modality: 'fingerprint', slot: 0, bytes: randomBytes(32) },
      ]),
    ).rejects.toMatchObject({ reason: 'guardian_consent_missing' });
    expect(await vault.listTemplates('org-a')).toEqual([]);
    const ids = await vault.enrolTemplates('org-a', [
      { subjectId: 'subject-0001', modality: 'fingerprint', slot: 0, bytes: randomBytes(32) },
      { subjectId: 'subject-0001', modality: 'face', slot: 0, bytes: randomBytes(32) },
    ]);
    expect((await vault.listTemplates('org-a')).map((t) => t.recordId).sort()).toEqual([...ids].sort());
  });

  it('enrolment for an unknown subject is SUBJECT_NOT_FOUND; bad input is a clear error', async () => {
    await expect(vault.enrolTemplate('org-a', 'subject-none', 'fingerprint', 0, randomBytes(8))).rejects.toMatchObject({ code: 'SUBJECT_NOT_FOUND' });
    await vault.upsertSubject('org-a', adult('subject-0004'));
    await expect(vault.enrolTemplate('org-a', 'subject-0004', 'iris' as never, 0, randomBytes(8))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(vault.enrolTemplate('org-a', 'subject-0004', 'face', 0, Buffer.alloc(0))).rejects.toMatchObject({ code: 'TEMPLATE_TOO_LARGE' });
    await expect(vault.upsertSubject('org a', adult('subject-0005'))).rejects.toMatchObject({ code: 'INVALID_ID' });
  });
});

describe('files', () => {
  it('vault.db and its -wal/-shm are 0600', async () => {
    await vault.upsertSubject('org-a', adult('subject-0001'));
    for (const f of dbFiles(sb).slice(0, 3)) expect((await stat(f)).mode & 0o777).toBe(0o600);
  });
});

describe('records', () => {
  it('stores nothing personal in plaintext: templates, names, consent evidence, card numbers, MACs', async () => {
    const markers = Array.from({ length: 4 }, () => randomBytes(32));
    const names = ['Zoë Plaintextova', 'Quentin Neverondisk'];
    await vault.upsertSubject('org-a', { ...adult('subject-0001', names[0]), consents: [{ kind: 'biometric', evidence: 'Evidence-Ref-8841' }] });
    await vault.upsertSubject('org-a', adult('subject-0002', names[1]));
    const templates = markers.map((m) => Buffer.concat([randomBytes(100), m, randomBytes(100)]));
    await vault.enrolTemplate('org-a', 'subject-0001', 'fingerprint', 0, templates[0]!);
    await vault.enrolTemplate('org-a', 'subject-0001', 'fingerprint', 1, templates[1]!);
    await vault.enrolTemplate('org-a', 'subject-0002', 'face', 0, templates[2]!);
    await vault.enrolTemplate('org-a', 'subject-0002', 'fingerprint', 0, templates[3]!);
    await vault.putCredential('org-a', 'card', '0004A1B2C3', 'subject-0001');
    await vault.putCredential('org-a', 'wifi_mac', 'AA:BB:CC:11:22:33', 'subject-0002');
    const needles = [...markers, ...names, 'Evidence-Ref-8841', '0004A1B2C3', 'aabbcc112233', 'AA:BB:CC:11:22:33', Buffer.from('aabbcc112233', 'hex')];
    // While open (WAL holds the writes) and after close (checkpointed into the main file).
    expect(await findNeedles(dbFiles(sb), needles)).toEqual([]);
    await vault.close();
    expect(await findNeedles(dbFiles(sb), needles)).toEqual([]);
    vault = await openVault(sb);
    const { templates: out, quarantined } = await vault.decryptTemplates('org-a');
    expect(quarantined).toEqual([]);
    expect(out.map((t) => t.bytes.toString('hex')).sort()).toEqual(templates.map((t) => t.toString('hex')).sort());
    expect((await vault.getSubject('org-a', 'subject-0001')).displayName).toBe(names[0]);
  });

  it('re-enrolling a slot replaces the template', async () => {
    await vault.upsertSubject('org-a', adult('subject-0001'));
    const first = await vault.enrolTemplate('org-a', 'subject-0001', 'fingerprint', 0, Buffer.from('first'));
    const second = await vault.enrolTemplate('org-a', 'subject-0001', 'fingerprint', 0, Buffer.from('second'));
    expect(second.recordId).not.toBe(first.recordId);
    const { templates } = await vault.decryptTemplates('org-a');
    expect(templates.map((t) => t.bytes.toString())).toEqual(['second']);
  });

  it('a ciphertext copied into another row fails with a clear error, is quarantined, and everything else still works', async () => {
    await vault.upsertSubject('org-a', adult('subject-0001'));
    await vault.upsertSubject('org-a', adult('subject-0002'));
    const a = await vault.enrolTemplate('org-a', 'subject-0001', 'fingerprint', 0, Buffer.from('template-A'));
    const b = await vault.enrolTemplate('org-a', 'subject-0002', 'fingerprint', 0, Buffer.from('template-B'));
    const c = await vault.enrolTemplate('org-a', 'subject-0002', 'face', 0, Buffer.from('template-C'));
    await tamper('UPDATE templates SET ct = (SELECT ct FROM templates WHERE record_id = ?) WHERE record_id = ?', [a.recordId, b.recordId]);

    const err = await vault.getTemplate('org-a', b.recordId).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'RECORD_QUARANTINED', details: { table: 'templates', recordId: b.recordId, cause: 'DECRYPT_FAILED' } });
    expect((err as Error).message).toMatch(/failed to decrypt .*copied from another record/);
    // Stays quarantined: the next read says so without trying again.
    await expect(vault.getTemplate('org-a', b.recordId)).rejects.toMatchObject({ code: 'RECORD_QUARANTINED', message: expect.stringContaining('is quarantined') });

    const { templates, quarantined } = await vault.decryptTemplates('org-a');
    expect(templates.map((t) => t.bytes.toString()).sort()).toEqual(['template-A', 'template-C']);
    expect(quarantined).toMatchObject([{ table: 'templates', recordId: b.recordId }]);
    expect(await vault.quarantined()).toMatchObject([{ table: 'templates', recordId: b.recordId, code: 'DECRYPT_FAILED' }]);
    expect((await vault.getTemplate('org-a', c.recordId)).bytes.toString()).toBe('template-C');
    // Re-enrolment heals it.
    await vault.enrolTemplate('org-a', 'subject-0002', 'fingerprint', 0, Buffer.from('template-B2'));
    expect((await vault.decryptTemplates('org-a')).quarantined).toEqual([]);
  });

  it('a template moved to another subject by editing subject_id fails to decrypt', async () => {
    await vault.upsertSubject('org-a', adult('subject-0001'));
    await vault.upsertSubject('org-a', adult('subject-0002'));
    const a = await vault.enrolTemplate('org-a', 'subject-0001', 'fingerprint', 0, Buffer.from('template-A'));
    await tamper("UPDATE templates SET subject_id = 'subject-0002' WHERE record_id = ?", [a.recordId]);
    const { templates, quarantined } = await vault.decryptTemplates('org-a');
    expect(templates).toEqual([]);
    expect(quarantined).toMatchObject([{ recordId: a.recordId }]);
  });

  it('a tampered ciphertext is a clear error and quarantined; a tampered name too', async () => {
    await vault.upsertSubject('org-a', adult('subject-0001'));
    await vault.upsertSubject('org-a', adult('subject-0002', 'Untouched'));
    const a = await vault.enrolTemplate('org-a', 'subject-0001', 'fingerprint', 0, randomBytes(256));
    // Flip one byte in the middle of the ciphertext, and one in a name.
    await tamper("UPDATE templates SET ct = substr(ct, 1, 100) || x'ff' || substr(ct, 102) WHERE record_id = ?", [a.recordId]);
    await tamper("UPDATE subjects SET name_ct = substr(name_ct, 1, 14) || x'00' || substr(name_ct, 16) WHERE subject_id = 'subject-0001'");
    await expect(vault.getTemplate('org-a', a.recordId)).rejects.toMatchObject({ code: 'RECORD_QUARANTINED', message: expect.stringContaining('tampered') });
    await expect(vault.getSubject('org-a', 'subject-0001')).rejects.toMatchObject({ code: 'RECORD_QUARANTINED', details: { table: 'subjects' } });
    expect((await vault.getSubject('org-a', 'subject-0002')).displayName).toBe('Untouched');
    // The upsert re-seals the name and lifts the quarantine.
    await vault.upsertSubject('org-a', adult('subject-0001', 'Restored'));
    expect((await vault.getSubject('org-a', 'subject-0001')).displayName).toBe('Restored');
  });
});

describe('credentials', () => {
  it('are keyed HMACs per org: lookups work, values are not stored, orgs do not share hashes', async () => {
    await vault.upsertSubject('org-a', adult('subject-0001'));
    await vault.upsertSubject('org-b', adult('subject-0009'));
    await vault.putCredential('org-a', 'card', '12345678', 'subject-0001');
    await vault.putCredential('org-b', 'card', '12345678', 'subject-0009');
    await vault.putCredential('org-a', 'wifi_mac', 'aa-bb-cc-dd-ee-ff', 'subject-0001');
    expect(await vault.lookupCredential('org-a', 'card', ' 12345678 ')).toBe('subject-0001');
    expect(await vault.lookupCredential('org-a', 'wifi_mac', 'AA:BB:CC:DD:EE:FF')).toBe('subject-0001');
    expect(await vault.lookupCredential('org-a', 'card', '87654321')).toBeUndefined();
    await expect(vault.lookupCredential('org-a', 'wifi_mac', '12345678')).rejects.toMatchObject({ code: 'INVALID_CREDENTIAL' });
    expect(await vault.identifyCredential('card', '12345678')).toEqual([
      { orgId: 'org-a', subjectId: 'subject-0001' },
      { orgId: 'org-b', subjectId: 'subject-0009' },
    ]);
    await vault.close();
    const db = await Sqlite.open(join(sb.dataDir, 'vault.db'), { readonly: true });
    const rows = await db.all<{ org_id: string; lookup: Buffer }>("SELECT org_id, lookup FROM credentials WHERE kind = 'card' ORDER BY org_id");
    await db.close();
    expect(rows.map((r) => r.lookup.length)).toEqual([32, 32]);
    expect(rows[0]!.lookup.equals(rows[1]!.lookup)).toBe(false);
    expect(await findNeedles(dbFiles(sb), ['12345678', 'aabbccddeeff', Buffer.from('aabbccddeeff', 'hex')])).toEqual([]);
    vault = await openVault(sb);
    expect(await vault.removeCredential('org-a', 'card', '12345678')).toBe(true);
    expect(await vault.lookupCredential('org-a', 'card', '12345678')).toBeUndefined();
  });

  it('rejects malformed values and unknown subjects', async () => {
    await expect(vault.putCredential('org-a', 'wifi_mac', 'not-a-mac', 'subject-0001')).rejects.toMatchObject({ code: 'INVALID_CREDENTIAL' });
    await expect(vault.putCredential('org-a', 'card', '123', 'subject-none')).rejects.toMatchObject({ code: 'SUBJECT_NOT_FOUND' });
  });
});

// The vault's statements run through the shared SerialQueue: one failing call reaches its caller and
// leaves the calls queued behind it alone; a close waits for what was queued before it, refuses what comes after.
const subject = (subjectId: string) => ({ subjectId, displayName: `Name ${subjectId}`, minor: false });

describe('queue (the shared SerialQueue)', () => {
  it('a failing call in the middle of a burst fails alone; the calls queued behind it run, in order', async () => {
    // Issued without awaiting: all three sit in the queue together.
    const first = vault.upsertSubject('org-a', subject('subject-0001'));
    const missing = vault.getSubject('org-a', 'subject-nobody').catch((e: unknown) => e);
    const after = vault.upsertSubject('org-a', subject('subject-0002'));
    const ids = vault.subjectIds('org-a');
    expect(await first).toMatchObject({ created: true });
    expect(await missing).toMatchObject({ code: 'SUBJECT_NOT_FOUND' });
    expect(await after).toMatchObject({ created: true });
    // Queued after both upserts, so it sees both.
    expect(await ids).toEqual(['subject-0001', 'subject-0002']);
  });

  it('close while busy waits for the queued calls, then refuses new ones with VAULT_CLOSED', async () => {
    const queued = Array.from({ length: 20 }, (_, i) => vault.upsertSubject('org-a', subject(`subject-${String(i).padStart(4, '0')}`)));
    const closing = vault.close();
    const late = vault.subjectIds('org-a').catch((e: unknown) => e);
    const results = await Promise.all(queued);
    expect(results.every((r) => r.created)).toBe(true);
    await closing;
    expect(await late).toMatchObject({ code: 'VAULT_CLOSED' });
    await expect(vault.orgs()).rejects.toMatchObject({ code: 'VAULT_CLOSED' });
    // What close waited for is on disk.
    vault = await openVault(sb);
    expect(await vault.subjectIds('org-a')).toHaveLength(20);
  });
});
