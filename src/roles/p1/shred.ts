/**
 * Crypto-shredding of one ended print job, and its signed erasure receipt.
 *
 *   1. the job's wrapped data key is set to NULL in the same statement that
 *      ends the job (spool.ts): from that commit on the spool file is noise;
 *   2. the spool file is unlinked (and the directory fsynced);
 *   3. the row is deleted and the database's WAL checkpointed and truncated,
 *      so no old page image with the wrapped key stays in the -wal file;
 *   4. the spool directory and the database files are scanned for fragments
 *      sampled before step 1 (ciphertext, wrapped key): the receipt says what
 *      was found. No document content, file name or user name is in it.
 */
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { signReceipt, RECEIPT_TYPE, type ErasureReceipt, type ReceiptSigner, type SignedErasureReceipt } from '../../privacy/receipt.js';
import { scanForSamples, type ScanResult } from '../../privacy/scan.js';
import type { ErasureSample } from '../../privacy/types.js';
import { syncDir } from '../../util/private-fs.js';
import { uuidv7 } from '../../util/uuidv7.js';
import { open } from 'node:fs/promises';

/** Fragments of the spool file (ciphertext) and the wrapped key, taken while they still exist. */
export async function sampleJob(path: string, wrappedKey: Buffer | null): Promise<ErasureSample[]> {
  const out: ErasureSample[] = [];
  if (wrappedKey && wrappedKey.length >= 16) out.push({ bytes: Buffer.from(wrappedKey), label: 'wrapped_key', scope: 'all' });
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(path, 'r');
    const size = (await fh.stat()).size;
    // A few 32-byte fragments spread over the file (past the magic and the first header).
    for (const at of [32, Math.floor(size / 2), size - 48]) {
      if (at < 32 || at + 32 > size) continue;
      const b = Buffer.alloc(32);
      await fh.read(b, 0, 32, at);
      out.push({ bytes: b, label: 'ciphertext', scope: 'all' });
    }
  } catch {
    // No spool file (a job that never got its document, or one ended before a restart): nothing to sample.
  } finally {
    await fh?.close();
  }
  return out;
}

export async function removeSpoolFile(dir: string, file: string): Promise<boolean> {
  try {
    await unlink(join(dir, file));
    syncDir(dir);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false; // already gone (a shred resumed after a crash)
    throw err;
  }
}

/** Every file now in the spool directory plus the database files: what the scan reads. */
export async function scanTargets(dir: string, dbFiles: readonly string[]): Promise<string[]> {
  let names: string[] = [];
  try {
    names = await readdir(dir);
  } catch {
    // No spool directory: nothing there to find.
  }
  return [...names.map((n) => join(dir, n)), ...dbFiles];
}

export async function scanJob(dir: string, dbFiles: readonly string[], samples: readonly ErasureSample[]): Promise<ScanResult> {
  const targets = (await scanTargets(dir, dbFiles)).map((path) => ({ path, scope: 'store' as const }));
  return scanForSamples(targets, samples);
}

export interface JobReceiptInput {
  deviceId: string;
  orgId: string;
  jobId: string;
  counter: number;
  ended: 'confirmed' | 'failed' | 'cancelled';
  fileRemoved: boolean;
  /** The shred was finished after a restart (its samples are gone: unverified). */
  resumed: boolean;
  samples: number;
  scan: ScanResult | undefined;
  startedAtMs: number;
  durations: { erase: number; scan: number };
}

export function jobReceipt(i: JobReceiptInput, signer: ReceiptSigner): { receipt: ErasureReceipt; signed: SignedErasureReceipt } {
  const scanOk = (i.scan?.ok ?? false) && i.scan?.hits === 0;
  const verification = i.samples === 0 ? 'unverified' : scanOk ? 'verified' : 'failed';
  const finished = Date.now();
  const receipt: ErasureReceipt = {
    type: RECEIPT_TYPE,
    v: 1,
    receiptId: uuidv7(),
    deviceId: i.deviceId,
    keyId: signer.keyId,
    kind: 'print_job',
    orgId: i.orgId,
    // The job id is the cloud's own reference; it names no person and no file.
    requestRef: `print:${i.jobId}`,
    ok: verification === 'verified',
    verification,
    ...(verification === 'unverified' ? { problem: 'NO_SAMPLES' } : verification === 'failed' ? { problem: 'FRAGMENTS_FOUND' } : {}),
    resumed: i.resumed,
    counts: { printJobs: 1, jobKeysDestroyed: 1, spoolFilesRemoved: i.fileRemoved ? 1 : 0, command: i.counter },
    keyVersionsDestroyed: [],
    participants: [],
    scan: {
      ok: scanOk,
      samples: i.samples,
      hits: i.scan?.hits ?? 0,
      hitsByLabel: i.scan?.hitsByLabel ?? {},
      files: i.scan?.files.filter((f) => f.present).length ?? 0,
      bytesScanned: i.scan?.bytesScanned ?? 0,
      passes: i.scan ? 1 : 0,
    },
    startedAtMs: i.startedAtMs,
    finishedAtMs: finished,
    durationMs: Math.max(0, finished - i.startedAtMs),
    timingsMs: { erase: Math.round(i.durations.erase), participants: 0, compact: 0, scan: Math.round(i.durations.scan) },
  };
  return { receipt, signed: signReceipt(receipt, signer) };
}
