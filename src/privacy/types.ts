/**
 * Contracts of the erasure pipeline. They live here, not in the vault, so that
 * every module holding personal data (vault, outbox, sensor drivers) depends on
 * privacy and privacy depends on none of them.
 */

/** What one purge erases. */
export type ErasureScope =
  /** Org withdrawal: the org's key, subjects, templates, credentials, consents. */
  | { kind: 'org'; orgId: string }
  /** Account closure (or a roster sync dropping people): everything of these subjects. */
  | { kind: 'subjects'; orgId: string; subjectIds: string[] }
  /** Retention: only the biometric templates of these subjects. */
  | { kind: 'templates'; orgId: string; subjectIds: string[] };

/** What a participant (or the vault) erased. Counts only: never personal data. */
export interface ErasureReport {
  ok: boolean;
  /** e.g. { punches: 120 } or { sensorSlots: 4 }. */
  counts: Record<string, number>;
  /** For people; must not contain personal data. */
  detail?: string;
}

/**
 * A module outside the vault that holds personal data: the outbox (queued
 * punches), sensor drivers (templates in module flash, in-memory indexes).
 * Every method must be idempotent: a purge interrupted by a power cut calls it
 * again on restart.
 */
export interface ErasureParticipant {
  name: string;
  eraseOrg(orgId: string): Promise<ErasureReport>;
  eraseSubject(orgId: string, subjectId: string): Promise<ErasureReport>;
  /**
   * Retention erases templates only. Participants that hold templates (sensor
   * flash) implement this; participants without it are not called for retention.
   */
  eraseSubjectTemplates?(orgId: string, subjectId: string): Promise<ErasureReport>;
  /** Database files this participant writes (db, -wal, -shm, journal): the verification scan covers them too. */
  scanFiles?(): readonly string[];
}

/** What a sample was taken from (reported as counts per label; the bytes never leave the device). */
export type SampleLabel = 'ciphertext' | 'wrapped_key' | 'lookup_hmac' | 'subject_id';

/**
 * A byte fragment sampled, before erasure, from data that must be gone after it.
 * `scope: 'store'` fragments are looked for in the store's own files only
 * (subject ids may rightly remain in the outbox as the org's attendance
 * records); `'all'` fragments (ciphertext, keys, HMACs) in every scanned file.
 */
export interface ErasureSample {
  bytes: Buffer;
  label: SampleLabel;
  scope: 'store' | 'all';
}

export type PurgeState = 'erasing' | 'compacting';

/** The persistent journal entry of a purge: lets a purge cut by power loss resume. */
export interface PurgeJob {
  jobId: string;
  scope: ErasureScope;
  /** Caller's reference (e.g. the command counter), echoed in the receipt; never personal data. */
  requestRef: string | null;
  state: PurgeState;
  startedAtMs: number;
  attempts: number;
  counts: Record<string, number>;
  keyVersionsDestroyed: number[];
}

export interface StoreErasureResult {
  counts: Record<string, number>;
  keyVersionsDestroyed: number[];
}

/** The primary store of personal data (the vault), driven by the purge pipeline. */
export interface ErasableStore {
  /** Its database files: main, -wal, -shm, -journal (missing ones are skipped by the scan). */
  databaseFiles(): string[];
  /**
   * Fragments of everything `scope` will erase, taken before anything is erased.
   * Return copies: the pipeline keeps only keyed fingerprints and zeroes these buffers.
   */
  sampleForErasure(scope: ErasureScope): Promise<ErasureSample[]>;
  /** Write the journal entry (durably) before anything is erased. */
  beginPurge(job: PurgeJob): Promise<void>;
  /**
   * Crypto-shred (org scope: the wrapped data key is deleted and committed
   * first), then delete the rows. Idempotent. Counts and destroyed key
   * versions are recorded in the journal entry in the same transactions.
   */
  erase(jobId: string, scope: ErasureScope): Promise<StoreErasureResult>;
  /** Mark the job as past erasure and drop the identifiers it held (subject ids). */
  markPurgeCompacting(jobId: string): Promise<void>;
  /** wal_checkpoint(TRUNCATE), VACUUM, wal_checkpoint(TRUNCATE). */
  compact(): Promise<void>;
  /** Delete the journal entry: the purge is complete and verified. */
  finishPurge(jobId: string): Promise<void>;
  pendingPurges(): Promise<PurgeJob[]>;
}
