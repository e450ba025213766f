import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { deriveKekWrapKey, deriveSubKey, encodeAad, freshNonce, NONCE_BYTES, seal, SEAL_OVERHEAD, unseal, type AadParts } from './crypto.js';

const aad: AadParts = { kind: 'template', orgId: 'org-a', subjectId: 'subj-1', recordId: 'rec-1', keyVersion: 1 };

describe('seal/unseal', () => {
  it('round-trips and adds only format byte, nonce and tag', () => {
    const key = randomBytes(32);
    const pt = randomBytes(100);
    const sealed = seal(key, pt, aad);
    expect(sealed.length).toBe(pt.length + SEAL_OVERHEAD);
    expect(unseal(key, sealed, aad).equals(pt)).toBe(true);
  });

  it.each([
    ['kind', { kind: 'subject.name' }],
    ['org id', { orgId: 'org-b' }],
    ['subject id', { subjectId: 'subj-2' }],
    ['record id', { recordId: 'rec-2' }],
    ['key version', { keyVersion: 2 }],
  ] as const)('refuses a ciphertext presented with another %s', (_what, change) => {
    const key = randomBytes(32);
    const sealed = seal(key, Buffer.from('template bytes'), aad);
    expect(() => unseal(key, sealed, { ...aad, ...change })).toThrow(expect.objectContaining({ code: 'DECRYPT_FAILED', message: expect.stringMatching(/authentication failed/) }));
  });

  it('AAD fields are length-prefixed, so shifting a separator changes the AAD', () => {
    expect(encodeAad({ ...aad, orgId: 'a', subjectId: 'bc' }).equals(encodeAad({ ...aad, orgId: 'ab', subjectId: 'c' }))).toBe(false);
  });

  it('bound metadata (a template modality and slot) is part of the AAD; without it the encoding is the original one', () => {
    expect(encodeAad({ ...aad, bound: [] }).equals(encodeAad(aad))).toBe(true);
    const key = randomBytes(32);
    const sealed = seal(key, Buffer.from('template bytes'), { ...aad, bound: ['face', '0'] });
    expect(unseal(key, sealed, { ...aad, bound: ['face', '0'] }).toString()).toBe('template bytes');
    for (const bound of [['fingerprint', '0'], ['face', '1'], ['face'], [], ['face0'], ['fac', 'e0']]) {
      expect(() => unseal(key, sealed, { ...aad, bound })).toThrow(expect.objectContaining({ code: 'DECRYPT_FAILED' }));
    }
  });

  it('refuses any single flipped bit (nonce, body, tag) and truncation', () => {
    const key = randomBytes(32);
    const sealed = seal(key, randomBytes(64), aad);
    for (const at of [1, 5, 13, 40, sealed.length - 1]) {
      const t = Buffer.from(sealed);
      t[at]! ^= 0x01;
      expect(() => unseal(key, t, aad)).toThrow(expect.objectContaining({ code: 'DECRYPT_FAILED' }));
    }
    expect(() => unseal(key, sealed.subarray(0, sealed.length - 1), aad)).toThrow(expect.objectContaining({ code: 'DECRYPT_FAILED' }));
    expect(() => unseal(key, sealed.subarray(0, 10), aad)).toThrow(expect.objectContaining({ code: 'DECRYPT_FAILED', message: expect.stringMatching(/malformed/) }));
  });

  it('refuses the wrong key', () => {
    const sealed = seal(randomBytes(32), Buffer.from('x'), aad);
    expect(() => unseal(randomBytes(32), sealed, aad)).toThrow(expect.objectContaining({ code: 'DECRYPT_FAILED' }));
  });

  it('refuses keys that are not 32 bytes', () => {
    expect(() => seal(randomBytes(16), Buffer.from('x'), aad)).toThrow(expect.objectContaining({ code: 'INVALID_KEY' }));
  });

  it('never repeats a nonce across 100,000 writes under one key', () => {
    const key = randomBytes(32);
    const seen = new Set<string>();
    const pt = Buffer.from('p');
    for (let i = 0; i < 100_000; i++) {
      // Through seal itself: the nonce actually written into each ciphertext.
      const sealed = seal(key, pt, aad);
      seen.add(sealed.toString('latin1', 1, 1 + NONCE_BYTES));
    }
    expect(seen.size).toBe(100_000);
    const n = freshNonce();
    expect(n.length).toBe(NONCE_BYTES);
    expect(n.equals(freshNonce())).toBe(false);
  });
});

describe('sub-keys', () => {
  it('differ per purpose, per org and per key version, and differ from the wrap key', () => {
    const dek = randomBytes(32);
    const keys = [
      deriveSubKey(dek, 'org-a', 1, 'templates'),
      deriveSubKey(dek, 'org-a', 1, 'identity'),
      deriveSubKey(dek, 'org-a', 1, 'credential-lookup'),
      deriveSubKey(dek, 'org-b', 1, 'templates'),
      deriveSubKey(dek, 'org-a', 2, 'templates'),
      deriveKekWrapKey(dek),
      dek,
    ].map((k) => k.toString('hex'));
    expect(new Set(keys).size).toBe(keys.length);
    expect(deriveSubKey(dek, 'org-a', 1, 'templates').equals(deriveSubKey(dek, 'org-a', 1, 'templates'))).toBe(true);
  });
});
