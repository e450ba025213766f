/**
 * What a print job's outcome is, from evidence only: the printer simulator's
 * recordings (each job's bytes, by SHA-256, against what the cloud sent) and
 * the erasure receipts the cloud verified with the device's public key (a
 * PrintStatusBook given that key). The device's own report is shown next to
 * the evidence and a disagreement is called out ("contradicted"), but never
 * counts as evidence. Used by `tallybox demo --device p1` and the lab's p1 kind.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type { PrintStatusBook } from '../cloud/print-jobs.js';
import type { RecordedJob } from './types.js';

/** States after which the device sends nothing more for a job on its own (uncertain waits for the cloud's decision). */
export const SETTLED_JOB_STATES: ReadonlySet<string> = new Set(['confirmed', 'failed', 'cancelled', 'uncertain']);

/** A job the cloud sent, as the cloud knows it (the reference the evidence is compared with). */
export interface SentJob {
  jobId: string;
  source: 'inline' | 'fetched';
  bytes: number;
  sha256: string;
}

export interface JobEvidence {
  jobId: string;
  source: SentJob['source'];
  /** The agent's last verified report (confirmed, failed, uncertain, …; 'none' when nothing verifiable came back). */
  reported: string;
  /** Recordings of this job at the printer, and how many of them are complete and byte-identical to what was sent. */
  recordings: number;
  exactCopies: number;
  /** From the evidence only: exactly one exact copy is printed, anything else (none, corrupt, short, twice) failed. */
  outcome: 'printed' | 'failed';
  receipt: 'verified' | 'missing' | 'invalid';
  /** The agent's report disagrees with the evidence (confirmed but not printed, or failed but printed). */
  contradicted: boolean;
}

export interface P1Summary {
  sent: number;
  /** Jobs the printer recorded exactly once, byte for byte. */
  printed: number;
  /** sent − printed: no copy, a corrupt or short one, or more than one. */
  failed: number;
  /** Jobs the device reported `uncertain` (bytes out, never confirmed by the printer; left for the cloud's decision). */
  uncertain: number;
  /** Bytes the printer received that match what was sent (jobs printed exactly once). */
  bytes: number;
  receiptsVerified: number;
  /** Results whose device signature did not verify (tampered in transit, or not from this device). */
  resultsRejected: number;
  contradicted: number;
}

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

/**
 * The evidence, job by job: the printer's recordings (SHA-256 against what was
 * sent) and the receipts the cloud verified with the device's public key.
 */
export async function checkPrintEvidence(opts: {
  sent: readonly SentJob[];
  recorded: readonly RecordedJob[];
  recorderDir: string;
  book: PrintStatusBook;
  orgId: string;
  deviceId: string;
}): Promise<{ jobs: JobEvidence[]; summary: P1Summary }> {
  const jobs: JobEvidence[] = [];
  for (const s of opts.sent) {
    const recs = opts.recorded.filter((r) => r.name === s.jobId);
    let exactCopies = 0;
    for (const r of recs) if (r.state === 'completed' && r.bytes === s.bytes && (await fileSha256(join(opts.recorderDir, r.file))) === s.sha256) exactCopies++;
    const view = opts.book.jobs.get(s.jobId);
    const reported = view?.stateName ?? 'none';
    const printed = exactCopies === 1;
    const r = view?.receipt;
    const receipt = view?.receiptError ? 'invalid' : !r ? 'missing' : r.requestRef === `print:${s.jobId}` && r.orgId === opts.orgId && r.deviceId === opts.deviceId && r.ok && r.kind === 'print_job' ? 'verified' : 'invalid';
    jobs.push({
      jobId: s.jobId,
      source: s.source,
      reported,
      recordings: recs.length,
      exactCopies,
      outcome: printed ? 'printed' : 'failed',
      receipt,
      contradicted: (reported === 'confirmed' && !printed) || (reported === 'failed' && exactCopies > 0),
    });
  }
  const count = (f: (j: JobEvidence) => boolean) => jobs.filter(f).length;
  const summary: P1Summary = {
    sent: opts.sent.length,
    printed: count((j) => j.outcome === 'printed'),
    failed: count((j) => j.outcome === 'failed'),
    // The device's own admission that it does not know (it can only make a run look worse, never better).
    uncertain: count((j) => j.reported === 'uncertain'),
    bytes: opts.sent.filter((s) => jobs.find((j) => j.jobId === s.jobId)?.outcome === 'printed').reduce((n, s) => n + s.bytes, 0),
    receiptsVerified: count((j) => j.receipt === 'verified'),
    resultsRejected: opts.book.resultsBad,
    contradicted: count((j) => j.contradicted),
  };
  return { jobs, summary };
}

export const summaryOk = (s: P1Summary): boolean => s.sent > 0 && s.printed === s.sent && s.uncertain === 0 && s.receiptsVerified === s.sent && s.resultsRejected === 0 && s.contradicted === 0;

/** A printer-ready document (PostScript text): recognisable, and free of PJL's UEL so it is data, not a command. */
export function printerReadyDocument(pages: number, title: string): Buffer {
  const lines = ['%!PS-Adobe-3.0', `%%Title: ${title}`, `%%Pages: ${pages}`, '%%EndComments'];
  for (let p = 1; p <= pages; p++) {
    lines.push(`%%Page: ${p} ${p}`, '/Courier findfont 10 scalefont setfont');
    for (let y = 0; y < 60; y++) lines.push(`72 ${760 - y * 12} moveto (${randomBytes(24).toString('hex')}) show`);
    lines.push('showpage');
  }
  lines.push('%%EOF', '');
  return Buffer.from(lines.join('\n'), 'latin1');
}
