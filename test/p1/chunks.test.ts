/**
 * Spool file encryption: round trip over chunk boundaries, and every
 * tampering is found (P1_SPOOL_CORRUPT): a chunk dropped from the end
 * (truncation), chunks swapped, a byte flipped, bytes appended, another key.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ChunkWriter, readChunks, SPOOL_MAGIC } from '../../src/roles/p1/chunks.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tbx-p1-chunks-'));
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

async function spool(doc: Buffer, key: Buffer, chunkBytes = 1000, pieces = 7): Promise<string> {
  const path = join(dir, 'a.spool');
  const fh = await open(path, 'wx', 0o600);
  const w = new ChunkWriter({ fh, key, jobId: 'job-1', chunkBytes });
  for (let i = 0; i < doc.length; i += pieces * 101) await w.write(doc.subarray(i, i + pieces * 101));
  await w.end();
  await fh.close();
  return path;
}

async function readAll(path: string, key: Buffer, jobId = 'job-1'): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of readChunks(path, key, jobId)) out.push(c);
  return Buffer.concat(out);
}

/** Offsets of every record: [start, end) after the magic. */
function records(file: Buffer): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let at = SPOOL_MAGIC.length;
  while (at < file.length) {
    const len = file.readUInt32BE(at);
    out.push([at, at + 4 + 12 + len + 16]);
    at += 4 + 12 + len + 16;
  }
  return out;
}

describe('spool chunks', () => {
  it('round trip: empty, exactly one chunk, many chunks', async () => {
    const key = randomBytes(32);
    for (const n of [0, 1000, 1, 5555]) {
      const doc = randomBytes(n);
      const path = await spool(doc, key);
      expect(await readAll(path, key)).toEqual(doc);
      if (n >= 16) expect((await readFile(path)).includes(doc.subarray(0, 16))).toBe(false);
      await rm(path);
    }
  });

  it('truncation (last chunk dropped), reordering, a flipped bit, trailing bytes, another key or job: P1_SPOOL_CORRUPT', async () => {
    const key = randomBytes(32);
    const doc = randomBytes(4500);
    const path = await spool(doc, key);
    const good = await readFile(path);
    const rec = records(good);
    expect(rec.length).toBe(5);
    const variants: Buffer[] = [
      good.subarray(0, rec[3]![1]), // final chunk dropped
      Buffer.concat([good.subarray(0, rec[1]![0]), good.subarray(rec[2]![0], rec[2]![1]), good.subarray(rec[1]![0], rec[1]![1]), good.subarray(rec[3]![0])]), // 1 and 2 swapped
      (() => {
        const b = Buffer.from(good);
        b[rec[2]![0] + 20]! ^= 1;
        return b;
      })(),
      Buffer.concat([good, Buffer.from([0])]),
      good.subarray(0, good.length - 3),
    ];
    for (const v of variants) {
      await writeFile(path, v);
      await expect(readAll(path, key)).rejects.toMatchObject({ code: 'P1_SPOOL_CORRUPT' });
    }
    await writeFile(path, good);
    await expect(readAll(path, randomBytes(32))).rejects.toMatchObject({ code: 'P1_SPOOL_CORRUPT' });
    await expect(readAll(path, key, 'job-2')).rejects.toMatchObject({ code: 'P1_SPOOL_CORRUPT' });
    expect(await readAll(path, key)).toEqual(doc);
  });

  it('large single writes and many small ones round trip; a write the disk refuses fails write() or end(), never silently', async () => {
    const key = randomBytes(32);
    for (const [size, piece] of [
      [3 * 1024 * 1024 + 17, 3 * 1024 * 1024 + 17],
      [3 * 1024 * 1024, 16 * 1024],
      [70_000, 1],
    ] as const) {
      const doc = randomBytes(size);
      const path = join(dir, `w-${size}-${piece}`);
      const fh = await open(path, 'wx', 0o600);
      const w = new ChunkWriter({ fh, key, jobId: 'job-1', chunkBytes: 64 * 1024 });
      for (let i = 0; i < size; i += piece) {
        const c = Buffer.from(doc.subarray(i, i + piece));
        await w.write(c);
        c.fill(0); // the caller may reuse its buffer once write() resolved
      }
      await w.end();
      await fh.close();
      expect((await readAll(path, key)).equals(doc)).toBe(true);
    }
    // Opened read-only: every queued write fails (EBADF); the failure surfaces, the writer does not pretend.
    await writeFile(join(dir, 'ro'), '');
    const ro = await open(join(dir, 'ro'), 'r');
    const w = new ChunkWriter({ fh: ro, key, jobId: 'job-1', chunkBytes: 1024 });
    await expect(
      (async () => {
        for (let i = 0; i < 10; i++) await w.write(randomBytes(512 * 1024));
        await w.end();
      })(),
    ).rejects.toMatchObject({ code: 'EBADF' });
    await ro.close();
  });
});
