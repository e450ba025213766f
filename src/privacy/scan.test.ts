import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { scanForSamples, sqliteFiles } from './scan.js';
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
    const r = await scanForSamples([{ path, scope: 'store' }], ids.map((b) => sample(b, 'store', 'subject_id')));
    expect(r.hits).toBe(1);
  });

  it('looks for store-scoped samples only in the store files; skips missing files; ignores samples under 8 bytes', async () => {
    const id = Buffer.from('subject-0001-abcdef');
    const other = join(dir, 'outbox.db');
    await writeFile(other, Buffer.concat([randomBytes(10), id, Buffer.from('short')]));
    const r = await scanForSamples(
      [
        { path: other, scope: 'other' },
        ...sqliteFiles(join(dir, 'vault.db')).map((path) => ({ path, scope: 'store' as const })),
      ],
      [sample(id, 'store', 'subject_id'), sample(Buffer.from('short'))],
    );
    expect(r).toMatchObject({ ok: true, hits: 0, samples: 1 });
    expect(r.files.map((f) => [f.file, f.present])).toEqual([
      ['outbox.db', true],
      ['vault.db', false],
      ['vault.db-wal', false],
      ['vault.db-shm', false],
      ['vault.db-journal', false],
    ]);
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
