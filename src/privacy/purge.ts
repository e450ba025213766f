/**
 * The purge pipeline (privacy rule 4): org withdrawal, account closure and
 * retention all run the same steps, journalled so a power cut resumes them:
 *
 *   1. sample byte fragments of everything to be erased (kept in memory only)
 *   2. journal entry, durably
 *   3. crypto-shred: the org's wrapped data key is deleted and committed first
 *   4. delete the rows
 *   5. erasure participants (outbox, sensor flash, in-memory indexes)
 *   6. drop identifiers from the journal entry
 *   7. wal_checkpoint(TRUNCATE), VACUUM, wal_checkpoint(TRUNCATE)  (secure_delete=ON throughout)
 *   8. verify: byte-scan db, -wal, -shm, journal for the samples; any hit →
 *      compact and scan again, up to `maxPasses`; still hits → failed receipt,
 *      journal kept, retried by resumePending() at the next start
 *   9. signed receipt: counts, key versions destroyed, scan result, duration
 */
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { isTallyboxError, TallyboxError } from '../util/errors.js';
import { uuidv7 } from '../util/uuidv7.js';
import { signReceipt, RECEIPT_TYPE, type ErasureKind, type ErasureReceipt, type ParticipantSummary, type ReceiptSigner, type SignedErasureReceipt } from './receipt.js';
import { scanForSamples, type ScanResult, type ScanTarget } from './scan.js';
import type { ErasableStore, ErasureParticipant, ErasureReport, ErasureSample, ErasureScope, PurgeJob } from './types.js';

export interface PurgerOptions {
  store: ErasableStore;
  /** Device identity key (vault's DeviceIdentity). */
  signer: ReceiptSigner;
  deviceId: string;
  participants?: ErasureParticipant[];
  logger?: Logger;
  clock?: () => number;
  /** Compact + scan passes before a purge is reported failed (default 3). */
  maxPasses?: number;
  /** Attempts per participant call before it is reported failed (default 3). */
  participantAttempts?: number;
}

export interface PurgeRequest {
  /** Echoed in the receipt: e.g. the command's counter. Never personal data. */
  requestRef?: string;
}

export interface PurgeOutcome {
  ok: boolean;
  receipt: ErasureReceipt;
  signed: SignedErasureReceipt;
}

const KIND: Record<ErasureScope['kind'], ErasureKind> = { org: 'org_withdrawal', subjects: 'subject_erasure', templates: 'retention' };

export class Purger {
  private readonly store: ErasableStore;
  private readonly signer: ReceiptSigner;
  private readonly deviceId: string;
  private readonly participants: ErasureParticipant[];
  private readonly log: Logger;
  private readonly clock: () => number;
  private readonly maxPasses: number;
  private readonly participantAttempts: number;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(opts: PurgerOptions) {
    this.store = opts.store;
    this.signer = opts.signer;
    this.deviceId = opts.deviceId;
    this.participants = [...(opts.participants ?? [])];
    this.log = opts.logger ?? silentLogger();
    this.clock = opts.clock ?? Date.now;
    this.maxPasses = Math.max(1, opts.maxPasses ?? 3);
    this.participantAttempts = Math.max(1, opts.participantAttempts ?? 3);
  }

  /** Add a module holding personal data; names must be unique. */
  register(participant: ErasureParticipant): void {
    if (this.participants.some((p) => p.name === participant.name)) {
      throw new TallyboxError('DUPLICATE_PARTICIPANT', `DUPLICATE_PARTICIPANT: an erasure participant named ${participant.name} is already registered`);
    }
    this.participants.push(participant);
  }

  /** Org withdrawal: everything of the org on this device. */
  withdrawOrg(orgId: string, req: PurgeRequest = {}): Promise<PurgeOutcome> {
    return this.purge({ kind: 'org', orgId }, req);
  }

  /** Account closure: one subject (or several, for a roster sync) in one pass and one receipt. */
  eraseSubjects(orgId: string, subjectIds: readonly string[], req: PurgeRequest = {}): Promise<PurgeOutcome> {
    return this.purge({ kind: 'subjects', orgId, subjectIds: [...new Set(subjectIds)] }, req);
  }

  eraseSubject(orgId: string, subjectId: string, req: PurgeRequest = {}): Promise<PurgeOutcome> {
    return this.eraseSubjects(orgId, [subjectId], req);
  }

  /** Retention: erase the templates (only) of these subjects. */
  eraseTemplates(orgId: string, subjectIds: readonly string[], req: PurgeRequest = {}): Promise<PurgeOutcome> {
    return this.purge({ kind: 'templates', orgId, subjectIds: [...new Set(subjectIds)] }, req);
  }

  /** Any scope; purges run one at a time. */
  purge(scope: ErasureScope, req: PurgeRequest = {}): Promise<PurgeOutcome> {
    return this.serial(async () => {
      const startedAtMs = this.clock();
      const samples = await this.store.sampleForErasure(scope);
      const job: PurgeJob = {
        jobId: uuidv7(startedAtMs),
        scope,
        requestRef: req.requestRef ?? null,
        state: 'erasing',
        startedAtMs,
        attempts: 0,
        counts: {},
        keyVersionsDestroyed: [],
      };
      await this.store.beginPurge(job);
      return this.complete(job, samples, false);
    });
  }

  /**
   * Finish purges cut short by a crash or that failed verification. Call once
   * at start-up, before the vault serves reads. Samples are re-taken from
   * whatever rows remain (the in-memory samples of the first run are gone).
   */
  resumePending(): Promise<PurgeOutcome[]> {
    return this.serial(async () => {
      const out: PurgeOutcome[] = [];
      for (const job of await this.store.pendingPurges()) {
        const samples = await this.store.sampleForErasure(job.scope);
        out.push(await this.complete(job, samples, true));
      }
      return out;
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async complete(job: PurgeJob, samples: ErasureSample[], resumed: boolean): Promise<PurgeOutcome> {
    const scope = job.scope;
    const t0 = performance.now();
    const counts = { ...job.counts };
    const keyVersions = new Set(job.keyVersionsDestroyed);
    if (job.state === 'erasing') {
      const r = await this.store.erase(job.jobId, scope);
      for (const [k, v] of Object.entries(r.counts)) counts[k] = (counts[k] ?? 0) + v;
      for (const v of r.keyVersionsDestroyed) keyVersions.add(v);
    }
    const t1 = performance.now();

    let participants: ParticipantSummary[] = [];
    let participantsOk = true;
    if (job.state === 'erasing') {
      participants = await this.runParticipants(scope);
      participantsOk = participants.every((p) => p.ok);
      // Only after every participant has erased may the subject ids leave the
      // journal: a resumed purge needs them to call the participants again.
      if (participantsOk) await this.store.markPurgeCompacting(job.jobId);
    }
    const t2 = performance.now();

    let scan: ScanResult | undefined;
    let passes = 0;
    let compactMs = 0;
    let scanMs = 0;
    const targets = this.scanTargets();
    while (passes < this.maxPasses) {
      passes++;
      const c0 = performance.now();
      await this.store.compact();
      const c1 = performance.now();
      scan = await scanForSamples(targets, samples);
      compactMs += c1 - c0;
      scanMs += performance.now() - c1;
      if (scan.ok) break;
      this.log.warn({ jobId: job.jobId, pass: passes, hits: scan.hits, hitsByLabel: scan.hitsByLabel }, 'erasure scan found fragments; compacting again');
    }
    const finalScan = scan!;
    const ok = participantsOk && finalScan.ok;
    if (ok) await this.store.finishPurge(job.jobId);

    const finishedAtMs = this.clock();
    const receipt: ErasureReceipt = {
      type: RECEIPT_TYPE,
      v: 1,
      receiptId: uuidv7(finishedAtMs),
      deviceId: this.deviceId,
      keyId: this.signer.keyId,
      kind: KIND[scope.kind],
      orgId: scope.orgId,
      requestRef: job.requestRef,
      ok,
      resumed,
      counts,
      keyVersionsDestroyed: [...keyVersions].sort((a, b) => a - b),
      participants,
      scan: {
        ok: finalScan.ok,
        samples: finalScan.samples,
        hits: finalScan.hits,
        hitsByLabel: finalScan.hitsByLabel,
        files: finalScan.files.filter((f) => f.present).length,
        bytesScanned: finalScan.bytesScanned,
        passes,
      },
      startedAtMs: job.startedAtMs,
      finishedAtMs,
      durationMs: Math.max(0, finishedAtMs - job.startedAtMs),
      timingsMs: { erase: Math.round(t1 - t0), participants: Math.round(t2 - t1), compact: Math.round(compactMs), scan: Math.round(scanMs) },
    };
    const logFields = { jobId: job.jobId, kind: receipt.kind, orgId: scope.orgId, ok, counts, scanHits: finalScan.hits, passes, resumed };
    if (ok) this.log.info(logFields, 'erasure complete and verified');
    else this.log.error(logFields, 'erasure incomplete; it stays journalled and is retried at the next start');
    return { ok, receipt, signed: signReceipt(receipt, this.signer) };
  }

  private scanTargets(): ScanTarget[] {
    const targets: ScanTarget[] = this.store.databaseFiles().map((path) => ({ path, scope: 'store' as const }));
    const seen = new Set(targets.map((t) => t.path));
    for (const p of this.participants) {
      for (const path of p.scanFiles?.() ?? []) {
        if (!seen.has(path)) {
          seen.add(path);
          targets.push({ path, scope: 'other' });
        }
      }
    }
    return targets;
  }

  private async runParticipants(scope: ErasureScope): Promise<ParticipantSummary[]> {
    const out: ParticipantSummary[] = [];
    for (const p of this.participants) {
      const calls: Array<() => Promise<ErasureReport>> = [];
      if (scope.kind === 'org') calls.push(() => p.eraseOrg(scope.orgId));
      else if (scope.kind === 'subjects') for (const s of scope.subjectIds) calls.push(() => p.eraseSubject(scope.orgId, s));
      else if (p.eraseSubjectTemplates) for (const s of scope.subjectIds) calls.push(() => p.eraseSubjectTemplates!(scope.orgId, s));
      if (calls.length === 0) continue;
      const summary: ParticipantSummary = { name: p.name, ok: true, counts: {} };
      for (const call of calls) {
        const report = await this.callWithRetry(p.name, call);
        summary.ok &&= report.ok;
        for (const [k, v] of Object.entries(report.counts)) summary.counts[k] = (summary.counts[k] ?? 0) + v;
      }
      out.push(summary);
    }
    return out;
  }

  private async callWithRetry(name: string, call: () => Promise<ErasureReport>): Promise<ErasureReport> {
    let last: ErasureReport = { ok: false, counts: {} };
    for (let attempt = 1; attempt <= this.participantAttempts; attempt++) {
      try {
        last = await call();
        if (last.ok) return last;
      } catch (err) {
        // Log the code only: a participant's message could carry what it was erasing.
        this.log.warn({ participant: name, attempt, code: isTallyboxError(err) ? err.code : 'ERROR' }, 'erasure participant failed');
        last = { ok: false, counts: {}, detail: isTallyboxError(err) ? err.code : 'ERROR' };
      }
    }
    return last;
  }
}
