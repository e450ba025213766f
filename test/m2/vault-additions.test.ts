// Vault additions for the M2 role: the per-org face-transform key and the
// batched template decrypt used at start-up.
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Sqlite } from '../../src/store/sqlite.js';
import { deriveSubKey } from '../../src/vault/crypto.js';
import type { DecryptedTemplate, Vault } from '../../src/vault/vault.js';
import { openVault, sandbox, type Sandbox } from '../vault/helpers.js';

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

const adult = (subjectId: string) => ({ subjectId, displayName: `Name ${subjectId}`, minor: false, consents: [{ kind: 'biometric' as const }] });

async function seed(orgId: string, n: number, modality: 'face' | 'fingerprint' = 'face', prefix = 's'): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(3, '0')}`);
  await vault.upsertSubjects(orgId, ids.map(adult));
  await vault.enrolTemplates(
    orgId,
    ids.map((subjectId, i) => ({ subjectId, modality, slot: 0, bytes: Buffer.from(`${modality}-template-${i}`.padEnd(64, '.')) })),
  );
  return ids;
}

describe('Vault.faceTransformKey', () => {
  it('is a 32-byte HKDF sub-key with its own label: stable, per org, not any other purpose key, a copy', async () => {
    await seed('org-a', 1);
    await seed('org-b', 1);
    const a = await vault.faceTransformKey('org-a');
    const b = await vault.faceTransformKey('org-b');
    expect(a.length).toBe(32);
    expect(a.equals(b)).toBe(false);
    expect((await vault.faceTransformKeyVersioned('org-a')).keyVersion).toBe(1);
    // Derivation check against the same HKDF construction with another purpose: never equal.
    const zero = Buffer.alloc(32);
    expect(deriveSubKey(zero, 'org-a', 1, 'face-transform').equals(deriveSubKey(zero, 'org-a', 1, 'templates'))).toBe(false);
    // Callers zero their copy; the vault's key is unaffected.
    a.fill(0);
    expect((await vault.faceTransformKey('org-a')).equals(Buffer.alloc(32))).toBe(false);
    // Survives a reopen (re-derived from the wrapped DEK, never stored).
    const before = await vault.faceTransformKey('org-b');
    await vault.close();
    vault = await openVault(sb);
    expect((await vault.faceTransformKey('org-b')).equals(before)).toBe(true);
  });

  it('NO_ORG_KEY for an org without a data key; invalid ids refused', async () => {
    await expect(vault.faceTransformKey('nobody')).rejects.toMatchObject({ code: 'NO_ORG_KEY' });
    await expect(vault.faceTransformKey('../x')).rejects.toMatchObject({ code: 'INVALID_ID' });
  });
});

describe('Vault.forEachTemplate', () => {
  it('walks one modality of one org in batches; each batch is zeroed when the callback returns', async () => {
    await seed('org-a', 7, 'face');
    await seed('org-a', 2, 'fingerprint', 'f');
    await seed('org-b', 3, 'face', 'b');
    const seen: DecryptedTemplate[] = [];
    const sizes: number[] = [];
    const r = await vault.forEachTemplate('org-a', 'face', 3, (batch) => {
      sizes.push(batch.length);
      for (const t of batch) {
        expect(t.bytes.toString()).toMatch(/^face-template-\d/);
        seen.push(t);
      }
    });
    expect(r).toMatchObject({ templates: 7, batches: 3, quarantined: [] });
    expect(sizes).toEqual([3, 3, 1]);
    expect(new Set(seen.map((t) => t.subjectId)).size).toBe(7);
    expect(seen.every((t) => t.orgId === 'org-a' && t.modality === 'face')).toBe(true);
    // The plaintexts handed out are wiped once the callback is done with them.
    for (const t of seen) expect(t.bytes.every((b) => b === 0)).toBe(true);
    // Same set as decryptTemplates.
    const all = await vault.decryptTemplates('org-a');
    expect(new Set(seen.map((t) => t.recordId))).toEqual(new Set(all.templates.filter((t) => t.modality === 'face').map((t) => t.recordId)));
  });

  it('an async callback may use the vault between batches (no deadlock); a thrown callback stops the walk and still zeroes', async () => {
    await seed('org-a', 5);
    let touched = 0;
    await vault.forEachTemplate('org-a', 'face', 2, async (batch) => {
      for (const t of batch) if (await vault.touchSubject('org-a', t.subjectId)) touched++;
    });
    expect(touched).toBe(5);
    let kept: DecryptedTemplate[] = [];
    await expect(
      vault.forEachTemplate('org-a', 'face', 2, (batch) => {
        kept = batch;
        throw new Error('stop');
      }),
    ).rejects.toThrow('stop');
    expect(kept).toHaveLength(2);
    for (const t of kept) expect(t.bytes.every((b) => b === 0)).toBe(true);
  });

  it('reports quarantined records and hands out the rest; an org without a key yields nothing; bad arguments refused', async () => {
    await seed('org-a', 4);
    const rows = (await vault.listTemplates('org-a')).map((t) => t.recordId);
    await vault.close();
    const db = await Sqlite.open(join(sb.dataDir, 'vault.db'));
    await db.run('UPDATE templates SET ct = (SELECT ct FROM templates WHERE record_id = ?) WHERE record_id = ?', [rows[0]!, rows[1]!]);
    await db.close();
    vault = await openVault(sb);
    let n = 0;
    const r = await vault.forEachTemplate('org-a', 'face', 10, (b) => void (n += b.length));
    expect(n).toBe(3);
    expect(r.quarantined).toMatchObject([{ table: 'templates', recordId: rows[1] }]);
    // Next walk: reported as quarantined without trying again.
    const again = await vault.forEachTemplate('org-a', 'face', 10, () => undefined);
    expect(again).toMatchObject({ templates: 3, quarantined: [{ recordId: rows[1] }] });
    expect(await vault.forEachTemplate('nobody', 'face', 10, () => undefined)).toEqual({ templates: 0, batches: 0, quarantined: [] });
    await expect(vault.forEachTemplate('org-a', 'face', 0, () => undefined)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(vault.forEachTemplate('org-a', 'iris' as 'face', 5, () => undefined)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
