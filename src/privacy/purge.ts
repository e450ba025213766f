/**
 * The purge pipeline (privacy rule 4): org withdrawal, account closure and
 * retention all run the same steps, journalled so a power cut resumes them:
 *
 *   1. sample byte fragments of everything to be erased, and keep them only
 *      as keyed fingerprints, durably, in the purge journal (journal.ts)
 *   2. journal entry in the vault, durably
 *   3. crypto-shred: the org's wrapped data key is deleted and committed first
 *   4. delete the rows
 *   5. erasure participants (outbox, sensor flash, in-memory indexes)
 *   6. drop identifiers from the vault's journal entry
 *   7. wal_checkpoint(TRUNCATE), VACUUM, wal_checkpoint(TRUNCATE)  (secure_delete=ON throughout)
 *   8. verify: scan db, -wal, -shm, journals of the store, the participants
 *      and the purge journal for the fingerprints; any hit → compact and scan
 *      again, up to `maxPasses`; still hits → failed, journal kept, retried
 *      (resumePending, on a timer while the agent runs and at every start)
 *   9. complete: the signed receipt is queued in the purge journal in the
 *      same transaction that marks the purge done; only then does the
 *      vault's journal entry go. A crash anywhere leaves a purge to finish or
 *      a receipt to deliver, never neither, and never two receipts.
 *
 * A resumed purge verifies against the fingerprints of the first run. If
 * they are gone (no journal, a damaged entry, another KEK) and rows had
 * already been erased, the result is `unverified`, never ok: zero samples
 * for non-zero counts proves nothing.
 */
import { SerialQueue } from '../util/serial-queue.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { isTallyboxError, TallyboxError } from '../util/errors.js';
import { uuidv7 } from '../util/uuidv7.js';
import { ephemeralKey, fingerprintSamples, type FingerprintSet } from './fingerprint.js';
import type { PurgeJournal, QueuedReceipt } from './journal.js';
import { signReceipt, RECEIPT_TYPE, type ErasureKind, type ErasureReceipt, type ParticipantSummary, type ReceiptSigner, type SignedErasureReceipt, type Verification } from './receipt.js';
import { scanForFingerprints, type ScanResult, type ScanTarget } from './scan.js';
import type { ErasableStore, ErasureParticipant, ErasureReport, ErasureSample, ErasureScope, PurgeJob } from './types.js';

export interface PurgerOptions {
  store: ErasableStore;
  /** Device identity key (vault's DeviceIdentity). */
  signer: ReceiptSigner;
  deviceId: string;
  participants?: ErasureParticipant[];
  /**
   * Where fingerprints and receipts survive a crash. Without one, fingerprints
   * live in memory only (a resumed purge that had erased rows is then
   * `unverified`) and receipts are only returned to the caller.
   */
  journal?: PurgeJournal;
  /** Told of every outcome, with the receipt queued in the journal when there is one (to hand it to the result queue). */
  onOutcome?: (o: PurgeOutcome, queued: QueuedReceipt | undefined) => void;
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
  /** The receipt is queued in the purge journal (delivered from there until settled). */
  queued: boolean;
}

const KIND: Record<ErasureScope['kind'], ErasureKind> = { org: 'org_withdrawal', subjects: 'subject_erasure', templates: 'retention' };

/** What a scan is checked against. `lost` says why there are no first-run fingerprints. */
interface Evidence {
  set: FingerprintSet;
  lost?: string;
}

export class Purger {
  private readonly store: ErasableStore;
  private readonly signer: ReceiptSigner;
  private readonly deviceId: string;
  private readonly participants: ErasureParticipant[];
  private readonly journal: PurgeJournal | undefined;
  private readonly onOutcome: ((o: PurgeOutcome, queued: QueuedReceipt | undefined) => void) | undefined;
  private readonly log: Logger;
  private readonly clock: () => number;
  private readonly maxPasses: number;
  private readonly participantAttempts: number;
  private readonly queue = new SerialQueue();

  constructor(opts: PurgerOptions) {
    this.store = opts.store;
    this.signer = opts.signer;
    this.deviceId = opts.deviceId;
    this.participants = [...(opts.participants ?? [])];
    this.journal = opts.journal;
    this.onOutcome = opts.onOutcome;
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

  /** The registered participant of that name (a role attaches its live part to one registered before it ran). */
  participant(name: string): ErasureParticipant | undefined {
    return this.participants.find((p) => p.name === name);
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
      const jobId = uuidv7(startedAtMs);
      const samples = await this.store.sampleForErasure(scope);
      // Fingerprinted (and, with a journal, stored) before anything is erased; the bytes are then wiped.
      const set = this.journal ? await this.journal.record(jobId, scope.orgId, samples) : fingerprintSamples(ephemeralKey(), samples);
      wipe(samples);
      const job: PurgeJob = {
        jobId,
        scope,
        requestRef: req.requestRef ?? null,
        state: 'erasing',
        startedAtMs,
        attempts: 0,
        counts: {},
        keyVersionsDestroyed: [],
      };
      await this.store.beginPurge(job);
      // From here a crash leaves a journalled purge that resumes to a receipt.
      this.log.info({ jobId, kind: KIND[scope.kind], orgId: scope.orgId, samples: set.count }, 'erasure started');
      return this.complete(job, { set }, false);
    });
  }

  /** Purges journalled and not complete (failed, unverified, or cut short). */
  pending(): Promise<PurgeJob[]> {
    return this.serial(() => this.store.pendingPurges());
  }

  /**
   * Finish purges cut short by a crash or that failed verification. Called
   * at start-up, before the vault serves reads, and on a timer while the
   * agent runs. Each verifies against the fingerprints its first run stored.
   * A purge that had already completed (receipt queued) is only tidied up: it
   * gets no second receipt.
   */
  resumePending(): Promise<PurgeOutcome[]> {
    return this.serial(async () => {
      const out: PurgeOutcome[] = [];
      const jobs = await this.store.pendingPurges();
      await this.journal?.dropOrphans(new Set(jobs.map((j) => j.jobId)));
      for (const job of jobs) {
        const ev = this.journal ? await this.journal.evidence(job.jobId) : ({ state: 'missing' } as const);
        if (ev.state === 'done') {
          // Killed between queuing the receipt and dropping the vault's entry.
          await this.store.finishPurge(job.jobId);
          await this.journal!.forget(job.jobId);
          this.log.info({ jobId: job.jobId }, 'purge had completed before the interruption; its receipt is already queued');
          continue;
        }
        let evidence: Evidence;
        if (ev.state === 'sampled') evidence = { set: ev.set };
        else {
          // Rows still present can be sampled again; rows already erased cannot (see `lost` in complete()).
          const samples = await this.store.sampleForErasure(job.scope);
          evidence = { set: fingerprintSamples(ephemeralKey(), samples), lost: ev.state === 'missing' ? 'FINGERPRINTS_MISSING' : ev.reason };
          wipe(samples);
        }
        out.push(await this.complete(job, evidence, true));
      }
      return out;
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  private async complete(job: PurgeJob, evidence: Evidence, resumed: boolean): Promise<PurgeOutcome> {
    const scope = job.scope;
    const t0 = performance.now();
    const counts = { ...job.counts };
    const keyVersions = new Set(job.keyVersionsDestroyed);
    // Erased by an earlier run: evidence sampled now cannot cover these.
    const erasedBefore = Object.values(job.counts).some((v) => v > 0) || job.keyVersionsDestroyed.length > 0;
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
      scan = await scanForFingerprints(targets, evidence.set);
      compactMs += c1 - c0;
      scanMs += performance.now() - c1;
      if (scan.ok) break;
      this.log.warn({ jobId: job.jobId, pass: passes, hits: scan.hits, hitsByLabel: scan.hitsByLabel }, 'erasure scan found fragments; compacting again');
    }
    const finalScan = scan!;
    const storeErased = Object.values(counts).some((v) => v > 0) || keyVersions.size > 0;
    let verification: Verification = 'verified';
    let problem: string | undefined;
    if (!participantsOk) [verification, problem] = ['failed', 'PARTICIPANT_FAILED'];
    else if (!finalScan.ok) [verification, problem] = ['failed', 'FRAGMENTS_FOUND'];
    else if (evidence.lost && erasedBefore) [verification, problem] = ['unverified', evidence.lost];
    else if (finalScan.samples === 0 && storeErased) [verification, problem] = ['unverified', 'NO_SAMPLES'];
    const ok = verification === 'verified';

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
      verification,
      ...(problem ? { problem } : {}),
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
    const signed = signReceipt(receipt, this.signer);
    let queued: QueuedReceipt | undefined;
    if (ok) {
      if (this.journal) {
        queued = { receiptId: receipt.receiptId, jobId: job.jobId, orgId: scope.orgId, requestRef: job.requestRef, ok, resumed, signed: JSON.stringify(signed) };
        await this.journal.complete(queued);
      }
      await this.store.finishPurge(job.jobId);
      await this.journal?.forget(job.jobId);
    }
    const logFields = { jobId: job.jobId, kind: receipt.kind, orgId: scope.orgId, ok, verification, problem, counts, samples: finalScan.samples, scanHits: finalScan.hits, passes, resumed };
    if (ok) this.log.info(logFields, 'erasure complete and verified');
    else this.log.error(logFields, `erasure ${verification} (${problem}); it stays journalled and is retried`);
    const outcome: PurgeOutcome = { ok, receipt, signed, queued: queued !== undefined };
    try {
      this.onOutcome?.(outcome, queued);
    } catch (err) {
      // A listener's failure must not turn a completed purge into a failed one; the receipt is safe in the journal.
      this.log.warn({ jobId: job.jobId, err: isTallyboxError(err) ? err.code : 'ERROR' }, 'purge outcome listener failed');
    }
    return outcome;
  }

  private scanTargets(): ScanTarget[] {
    const targets: ScanTarget[] = this.store.databaseFiles().map((path) => ({ path, scope: 'store' as const }));
    const seen = new Set(targets.map((t) => t.path));
    // The purge journal is scanned like any other file: it must hold nothing of what was erased.
    for (const files of [...this.participants.map((p) => p.scanFiles?.() ?? []), this.journal?.files() ?? []]) {
      for (const path of files) {
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

/** The sampled bytes are not kept once fingerprinted. */
function wipe(samples: readonly ErasureSample[]): void {
  for (const s of samples) s.bytes.fill(0);
}
