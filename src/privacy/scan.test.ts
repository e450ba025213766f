import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeSet, encodeSet, ephemeralKey, fingerprintSamples } from './fingerprint.js';
import { scanForFingerprints, scanForSamples, sqliteFiles } from './scan.js';
import type { ErasureSample } from './types.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tallybox-scan-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const sample = (bytes: Buffer, scope: ErasureSample['scope'] = 'all', label: ErasureSample['label'] = 'ciphertext'): ErasureSample => ({ bytes, label, scope });

describe('scanForSamples', () => {
  it('finds samples at any offset, including the very start and end of a file, and counts by label', async () => {
    const s1 = randomBytes(16);
    const s2 = randomBytes(32);
    const s3 = Buffer.from('0190abcd-0000-7000-8000-000000000001');
    const absent = randomBytes(16);
    const body = Buffer.concat([s1, randomBytes(1001), s2, randomBytes(3), s2, s3]);
    const path = join(dir, 'x.db');
    await writeFile(path, body);
    const r = await scanForSamples([{ path, scope: 'store' }], [sample(s1), sample(s2, 'all', 'lookup_hmac'), sample(s3, 'store', 'subject_id'), sample(absent)]);
    expect(r).toMatchObject({ ok: false, hits: 4, samples: 4, bytesScanned: body.length, hitsByLabel: { ciphertext: 1, lookup_hmac: 2, subject_id: 1 } });
    expect(r.files).toEqual([{ file: 'x.db', bytes: body.length, hits: 4, present: true }]);
  });

  it('does not confuse samples sharing a prefix (time-ordered ids)', async () => {
    const ids = Array.from({ length: 50 }, (_, i) => Buffer.from(`0190abcd-0000-7000-8000-${String(i).padStart(12, '0')}`));
    const path = join(dir, 'ids.db');
    await writeFile(path, Buffer.concat([randomBytes(64), ids[7]!, randomBytes(64)]));
    const r = await scanForSamples(
      [{ path, scope: 'store' }],
      ids.map((b) => sample(b, 'store', 'subject_id')),
    );
    expect(r.hits).toBe(1);
  });

  it('looks for store-scoped samples only in the store files; skips missing files; ignores samples under 8 bytes', async () => {
    const id = Buffer.from('subject-0001-abcdef');
    const other = join(dir, 'outbox.db');
    await writeFile(other, Buffer.concat([randomBytes(10), id, Buffer.from('short')]));
    const r = await scanForSamples([{ path: other, scope: 'other' }, ...sqliteFiles(join(dir, 'vault.db')).map((path) => ({ path, scope: 'store' as const }))], [sample(id, 'store', 'subject_id'), sample(Buffer.from('short'))]);
    expect(r).toMatchObject({ ok: true, hits: 0, samples: 1 });
    expect(r.files.map((f) => [f.file, f.present])).toEqual([
      ['outbox.db', true],
      ['vault.db', false],
      ['vault.db-wal', false],
      ['vault.db-shm', false],
      ['vault.db-journal', false],
    ]);
  });

  it('finds short samples (8-14 bytes) at every alignment, only in store files', async () => {
    for (let len = 8; len <= 14; len++) {
      for (let at = 0; at < 8; at++) {
        const id = Buffer.from(`s${'x'.repeat(len - 3)}${at}${len % 10}`.slice(0, len));
        const path = join(dir, `short-${len}-${at}.db`);
        await writeFile(path, Buffer.concat([randomBytes(64 + at), id, randomBytes(5)]));
        const inStore = await scanForSamples([{ path, scope: 'store' }], [sample(id, 'store', 'subject_id')]);
        expect(inStore.hits, `len ${len} at ${at}`).toBe(1);
        const elsewhere = await scanForSamples([{ path, scope: 'other' }], [sample(id, 'store', 'subject_id')]);
        expect(elsewhere.hits).toBe(0);
      }
    }
  });

  it('fingerprints survive encoding; a set under another key finds nothing; a damaged encoding is refused', async () => {
    const s1 = randomBytes(40);
    const s2 = Buffer.from('subject-42');
    const path = join(dir, 'v.db');
    await writeFile(path, Buffer.concat([randomBytes(9), s1, randomBytes(3), s2]));
    const key = ephemeralKey();
    const set = fingerprintSamples(key, [sample(s1), sample(s2, 'store', 'subject_id'), sample(Buffer.from('tiny'))]);
    expect(set.count).toBe(2);
    const encoded = encodeSet(set);
    // Neither sample is in its encoding.
    expect(encoded.indexOf(s1.subarray(0, 8))).toBe(-1);
    expect(encoded.indexOf(s2)).toBe(-1);
    const back = decodeSet(key, encoded);
    expect(await scanForFingerprints([{ path, scope: 'store' }], back)).toMatchObject({ hits: 2, hitsByLabel: { ciphertext: 1, subject_id: 1 } });
    expect((await scanForFingerprints([{ path, scope: 'store' }], decodeSet(ephemeralKey(), encoded))).hits).toBe(0);
    expect(() => decodeSet(key, encoded.subarray(0, encoded.length - 1))).toThrow(expect.objectContaining({ code: 'FINGERPRINTS_CORRUPT' }));
    const badLen = Buffer.from(encoded);
    badLen.writeUInt16BE(3, 13); // first entry's length below the minimum
    expect(() => decodeSet(key, badLen)).toThrow(expect.objectContaining({ code: 'FINGERPRINTS_CORRUPT' }));
  });

  it('is fast enough for the purge budget: 16 MiB against 60,000 samples', async () => {
    const big = randomBytes(16 * 1024 * 1024);
    const samples = Array.from({ length: 60_000 }, () => sample(randomBytes(16)));
    const planted = samples[12_345]!.bytes;
    planted.copy(big, 9_000_001);
    const path = join(dir, 'big.db');
    await writeFile(path, big);
    const r = await scanForSamples([{ path, scope: 'store' }], samples);
    expect(r.hits).toBe(1);
    // Generous bound for a loaded CI box; a quadratic scan would take minutes.
    expect(r.durationMs).toBeLessThan(5000);
  });
});
