import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkMac, encodeRow, subjectMac, templateMac } from './integrity.js';
import { OrgKeys } from './org-keys.js';

describe('row MAC encoding', () => {
  it('is injective across field boundaries and types', () => {
    const distinct = [
      encodeRow('t', ['a', 'bc']),
      encodeRow('t', ['ab', 'c']),
      encodeRow('t', [1]),
      encodeRow('t', ['1']),
      encodeRow('t', [true]),
      encodeRow('t', [null]),
      encodeRow('t', ['']),
      encodeRow('t', [Buffer.from('1')]),
      encodeRow('t', [1.5]),
      encodeRow('u', [1]),
    ].map((b) => b.toString('hex'));
    expect(new Set(distinct).size).toBe(distinct.length);
    // Deterministic, and UTF-8 lengths count bytes, not characters.
    expect(encodeRow('t', ['Zoë', 7]).equals(encodeRow('t', ['Zoë', 7]))).toBe(true);
    expect(encodeRow('t', ['ë']).length).toBe(encodeRow('t', ['e']).length + 1);
  });

  it('binds every field: changing any one of them fails the check; a missing or malformed MAC fails too', () => {
    const keys = new OrgKeys({ orgId: 'org-a', version: 1, dek: randomBytes(32) });
    const b = { recordId: 'r-1', orgId: 'org-a', subjectId: 's-1', modality: 'face' as const, slot: 0, keyVersion: 1 };
    const mac = templateMac(keys, b);
    expect(checkMac(templateMac(keys, b), mac)).toBeNull();
    for (const changed of [{ recordId: 'r-2' }, { orgId: 'org-b' }, { subjectId: 's-2' }, { modality: 'fingerprint' as const }, { slot: 1 }, { keyVersion: 2 }]) {
      expect(checkMac(templateMac(keys, { ...b, ...changed }), mac)).toMatchObject({ code: 'METADATA_MAC_MISMATCH' });
    }
    expect(checkMac(mac, null)).toMatchObject({ code: 'METADATA_MAC_MISSING' });
    expect(checkMac(mac, mac.subarray(0, 16))).toMatchObject({ code: 'METADATA_MAC_MISMATCH' });
    expect(checkMac(mac, 'not a blob')).toMatchObject({ code: 'METADATA_MAC_MISMATCH' });
    // Another org's key (or another version's) gives another MAC for the same row.
    const other = new OrgKeys({ orgId: 'org-a', version: 1, dek: randomBytes(32) });
    expect(checkMac(templateMac(other, b), mac)).toMatchObject({ code: 'METADATA_MAC_MISMATCH' });
    const s = { orgId: 'org-a', subjectId: 's-1', recordId: 'r-1', keyVersion: 1 };
    expect(subjectMac(keys, { ...s, minor: true }).equals(subjectMac(keys, { ...s, minor: false }))).toBe(false);
  });

  it('a destroyed key refuses to compute instead of producing MACs under zeros', () => {
    const keys = new OrgKeys({ orgId: 'org-a', version: 1, dek: randomBytes(32) });
    keys.wipe();
    expect(() => keys.rowMac(Buffer.from('x'))).toThrow(expect.objectContaining({ code: 'NO_ORG_KEY' }));
    expect(() => keys.lookupHmac('x')).toThrow(expect.objectContaining({ code: 'NO_ORG_KEY' }));
  });
});
