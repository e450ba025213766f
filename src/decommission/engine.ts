/**
 * Decommission: a whole-device erasure, journalled (state.ts) so that a crash
 * at any step resumes and finishes, with exactly one signed receipt.
 *
 *   sampling    fingerprint (keyed, from the KEK) every org's data before
 *               anything is erased: the evidence of the final scan
 *   delivering  when a broker is connected, let the outbox deliver what it
 *               can within a bounded time (the org purges delete queued punches)
 *   purging     every org through the purge pipeline: org key crypto-shredded
 *               first, rows deleted, erasure participants (outbox, sensor
 *               flash, in-memory indexes), checkpoint + vacuum, per-org scan
 *   journal     the command journal's subject-bearing rows, then vacuum
 *   outbox      punches still queued (any org) are counted and erased
 *   signing     scan every file left in the data and key directories; sign
 *               the receipt ONCE and persist it in the journal (one write)
 *   handover    write the receipt file; publish it on the result topic
 *   keys        destroy the KEK, then the identity key
 *   done        the durable marker: the device refuses to run until provisioned
 */
import { hkdfSync, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, lstatSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { PrivacyServices } from '../agent/privacy.js';
import { COMMANDS_DB_FILE, SUBJECT_BEARING_KINDS } from '../link/commands/erasure.js';
import type { Outbox } from '../outbox/outbox.js';
import type { CommandResultProps } from '../proto/index.js';
import { decodeSet, deriveJobKey, encodeSet, fingerprintSamples, keyCheck, keyMatches, type FingerprintKey } from '../privacy/fingerprint.js';
import type { PurgeOutcome } from '../privacy/purge.js';
import { scanForFingerprints, type ScanTarget } from '../privacy/scan.js';
import type { ErasureSample } from '../privacy/types.js';
import { Sqlite } from '../store/sqlite.js';
import { TallyboxError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { readPrivateFile, writePrivateFileAtomic } from '../util/private-fs.js';
import { uuidv7 } from '../util/uuidv7.js';
import type { DeviceIdentity, KeyProvider } from '../vault/keys.js';
import { destroyKeys } from './keys.js';
import { DECOMMISSION_RECEIPT_TYPE, signDecommissionReceipt, type DecommissionReceipt } from './receipt.js';
import { EVIDENCE_FILE, PHASES, RECEIPT_FILE, readDecommission, writeDecommission, type DecommissionState, type OrgSummary, type Phase } from './state.js';

export interface DecommissionDeps {
  config: Config;
  outbox: Outbox;
  /** Undefined on a device without a vault (or zeroised): nothing to purge, the identity still signs. */
  privacy: PrivacyServices | undefined;
  /** Signs the receipt; may be undefined only when resuming at the key step (it may be gone already). */
  identity: DeviceIdentity | undefined;
  keyProvider: KeyProvider | undefined;
  /** Organisations the device knows of besides the vault's (served, operator): their queued punches go too. */
  knownOrgs: () => readonly string[];
  /** A broker connection is up (delivery is attempted only then). */
  online: () => boolean;
  /** Queue a result durably and try to send it (ResultQueue.enqueue). */
  enqueueResult: (orgId: string, r: CommandResultProps) => Promise<void>;
  /** Device roles drop their in-memory state of the org (indexes, page maps). */
  forgetOrg?: (orgId: string) => void;
  logger: Logger;
  /** Bound on waiting for the broker to take queued punches and the receipt (default 30 s). */
  deliverTimeoutMs?: number;
}

/** Where the operator finds the receipt to upload. */
export function receiptFilePath(dataDir: string): string {
  return join(dataDir, RECEIPT_FILE);
}

function fingerprintRoot(kek: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', kek, Buffer.alloc(0), Buffer.from('tallybox.v1.decommission-fingerprint-root', 'utf8'), 32));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** Poll until `done()` or the bound (monotonic clock); returns whether it happened. */
async function waitFor(done: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    if (await done()) return true;
    if (performance.now() >= until) return false;
    await sleep(100);
  }
}

function countLabels(samples: readonly ErasureSample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) out[s.label] = (out[s.label] ?? 0) + 1;
  return out;
}

/** Every regular file under `dir` (not following links): what a disk image of the directory would show. */
export function filesUnder(dir: string, out: string[] = []): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw err;
  }
  for (const n of names) {
    const p = join(dir, n);
    const st = lstatSync(p);
    if (st.isDirectory()) filesUnder(p, out);
    else if (st.isFile()) out.push(p);
  }
  return out;
}

export class Decommission {
  private state: DecommissionState;
  private resumed: boolean;

  private constructor(
    private readonly deps: DecommissionDeps,
    state: DecommissionState,
    resumed: boolean,
  ) {
    this.state = state;
    this.resumed = resumed;
  }

  /** Start one, or pick up the one a crash interrupted (its requestRef stays the first one's). */
  static begin(deps: DecommissionDeps, requestRef: string): Decommission {
    const existing = readDecommission(deps.config.dataDir);
    if (existing) return new Decommission(deps, existing, true);
    const startedAtMs = Date.now();
    const s: DecommissionState = { v: 1, id: uuidv7(startedAtMs), phase: 'sampling', requestRef, startedAtMs, orgs: [] };
    writeDecommission(deps.config.dataDir, s);
    deps.logger.warn({ event: 'decommission_started', decommissionId: s.id, requestRef }, 'decommission started: every organisation will be erased and the device keys destroyed');
    return new Decommission(deps, s, false);
  }

  get current(): Readonly<DecommissionState> {
    return this.state;
  }

  private save(patch: Partial<DecommissionState>, next?: Phase): void {
    this.state = { ...this.state, ...patch, ...(next ? { phase: next } : {}) };
    writeDecommission(this.deps.config.dataDir, this.state);
    if (next) this.deps.logger.info({ event: 'decommission_phase', decommissionId: this.state.id, phase: next }, `decommission: ${next}`);
  }

  private at(p: Phase): boolean {
    return this.state.phase === p;
  }

  /** Run up to and including the signing: the receipt exists, durably, when this resolves. */
  async toReceipt(): Promise<string> {
    if (this.resumed) this.deps.logger.warn({ event: 'decommission_resumed', decommissionId: this.state.id, phase: this.state.phase }, `decommission resumed at ${this.state.phase}`);
    if (this.at('sampling')) await this.sample();
    if (this.at('delivering')) await this.deliverPunches();
    if (this.at('purging')) await this.purgeOrgs();
    if (this.at('journal')) await this.eraseCommandJournal();
    if (this.at('outbox')) await this.eraseOutbox();
    if (this.at('signing')) await this.sign();
    if (!this.state.signed) throw new TallyboxError('DECOMMISSION_STATE_CORRUPT', `decommission journal is at ${this.state.phase} without a signed receipt`);
    this.writeReceiptFile();
    // Its job is done once the receipt is signed (a crash may have come between the two).
    rmSync(join(this.deps.config.dataDir, EVIDENCE_FILE), { force: true });
    return this.state.signed;
  }

  /** Receipt and handover (publish, or `handedOver` when a command result carries it): afterwards only the keys are left. */
  async toKeys(opts: { handedOver?: () => Promise<boolean> } = {}): Promise<void> {
    const signed = PHASES.indexOf(this.state.phase) < PHASES.indexOf('keys') ? await this.toReceipt() : this.state.signed!;
    if (this.at('handover')) {
      const delivered = opts.handedOver ? await opts.handedOver() : await this.publishReceipt(signed);
      this.save({ delivered }, 'keys');
    }
  }

  /** Destroy the KEK, then the identity key, and leave the marker. Call once nothing holds the vault open. */
  async destroyKeys(): Promise<DecommissionState> {
    if (this.at('keys')) {
      const r = await destroyKeys(this.deps.config, this.deps.keyProvider);
      this.save({ kek: r.kek, identity: r.identity, ...(r.errors.length ? { keyErrors: r.errors } : {}), finishedAtMs: Date.now() }, 'done');
      const fields = { event: 'decommissioned', decommissionId: this.state.id, kek: r.kek, identity: r.identity, delivered: this.state.delivered };
      const msg = `device decommissioned: KEK ${r.kek}, identity key ${r.identity}; it refuses to run until provisioned again`;
      if (r.errors.length) this.deps.logger.error({ ...fields, errors: r.errors }, msg);
      else this.deps.logger.warn(fields, msg);
    }
    return this.state;
  }

  private async evidenceKey(salt: Buffer): Promise<FingerprintKey> {
    if (!this.deps.keyProvider) throw new TallyboxError('NO_VAULT', 'no key provider');
    const kek = await this.deps.keyProvider.loadKek({ dataDir: this.deps.config.dataDir });
    const root = fingerprintRoot(kek);
    kek.fill(0);
    const key = deriveJobKey(root, salt, `decommission:${this.state.id}`);
    root.fill(0);
    return key;
  }

  private async orgList(): Promise<string[]> {
    const orgs = new Set<string>(this.deps.privacy ? await this.deps.privacy.vault.orgs() : []);
    for (const j of this.deps.privacy ? await this.deps.privacy.purger.pending() : []) orgs.add(j.scope.orgId);
    for (const o of this.deps.knownOrgs()) if ((await this.deps.outbox.countOrg(o)) > 0 || orgs.has(o)) orgs.add(o);
    return [...orgs].sort();
  }

  private async sample(): Promise<void> {
    const orgs: OrgSummary[] = [];
    const all: ErasureSample[] = [];
    for (const orgId of await this.orgList()) {
      const samples = this.deps.privacy ? await this.deps.privacy.vault.sampleForErasure({ kind: 'org', orgId }) : [];
      orgs.push({ orgId, held: countLabels(samples), keyVersionsDestroyed: [], undeliveredPunches: 0 });
      all.push(...samples);
    }
    let evidence: DecommissionState['evidence'];
    if (this.deps.keyProvider && this.deps.privacy) {
      const salt = randomBytes(16);
      const key = await this.evidenceKey(salt);
      const set = fingerprintSamples(key, all);
      // Fingerprints only (never the bytes), under a key that derives from the KEK.
      writePrivateFileAtomic(join(this.deps.config.dataDir, EVIDENCE_FILE), encodeSet(set));
      evidence = { salt: salt.toString('base64'), check: keyCheck(key).toString('base64'), samples: set.count };
    }
    for (const s of all) s.bytes.fill(0);
    this.save({ orgs, ...(evidence ? { evidence } : {}) }, 'delivering');
  }

  private async deliverPunches(): Promise<void> {
    const before = this.deps.outbox.depth;
    if (before > 0 && this.deps.online()) {
      await waitFor(async () => this.deps.outbox.depth === 0, this.deps.deliverTimeoutMs ?? 30_000);
    }
    this.save({ punchesDelivered: Math.max(0, before - this.deps.outbox.depth) }, 'purging');
  }

  private async purgeOrgs(): Promise<void> {
    const p = this.deps.privacy;
    for (const org of this.state.orgs) {
      if (org.verification !== undefined) continue;
      org.undeliveredPunches = await this.deps.outbox.countOrg(org.orgId);
      this.deps.forgetOrg?.(org.orgId);
      let outcome: PurgeOutcome | undefined;
      if (p) {
        const pending = (await p.purger.pending()).some((j) => j.scope.orgId === org.orgId && j.scope.kind === 'org');
        if (pending) outcome = (await p.purger.resumePending()).find((o) => o.receipt.orgId === org.orgId && o.receipt.kind === 'org_withdrawal');
        else if ((await p.vault.orgs()).includes(org.orgId) || org.undeliveredPunches > 0) outcome = await p.purger.withdrawOrg(org.orgId, { requestRef: `decom:${this.state.id}` });
      }
      if (outcome) {
        org.counts = outcome.receipt.counts;
        org.keyVersionsDestroyed = outcome.receipt.keyVersionsDestroyed;
        org.verification = outcome.receipt.verification;
        if (outcome.receipt.problem) org.problem = outcome.receipt.problem;
        if (outcome.ok) org.purgeReceiptId = outcome.receipt.receiptId;
      } else {
        // Erased by a run a crash cut short after its purge completed: its own receipt went the usual way;
        // the final scan below is what covers it here.
        org.verification = p ? 'completed_before_interruption' : 'no_vault';
      }
      this.save({ orgs: this.state.orgs });
    }
    this.save({}, 'journal');
  }

  private async eraseCommandJournal(): Promise<void> {
    const path = join(this.deps.config.dataDir, COMMANDS_DB_FILE);
    let rows = this.state.commandRows ?? 0;
    // existsSync, not a read: closing a descriptor of commands.db would drop the intake connection's locks (store/pinned-read.ts).
    if (existsSync(path)) {
      const db = await Sqlite.open(path);
      try {
        await db.exec('PRAGMA secure_delete = ON');
        const have = await db.get<{ n: number }>("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'journal'");
        if (have && have.n > 0) rows += (await db.run(`DELETE FROM journal WHERE kind IN (${SUBJECT_BEARING_KINDS.map(() => '?').join(', ')})`, [...SUBJECT_BEARING_KINDS])).changes;
        await db.exec('PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);');
      } finally {
        await db.close();
      }
    }
    this.save({ commandRows: rows }, 'outbox');
  }

  private async eraseOutbox(): Promise<void> {
    const ob = this.deps.outbox;
    let left = 0;
    for (const orgId of new Set([...this.state.orgs.map((o) => o.orgId), ...this.deps.knownOrgs()])) {
      const n = await ob.deleteOrg(orgId);
      left += n;
      const o = this.state.orgs.find((x) => x.orgId === orgId);
      if (o) o.undeliveredPunches += n;
    }
    await ob.compact();
    await this.deps.privacy?.vault.compact();
    const results = (await ob.pendingResults(1_000_000)).length;
    if (left > 0) this.deps.logger.warn({ event: 'decommission_undelivered', punches: left }, `${left} queued punches could not be delivered and were erased`);
    this.save({ orgs: this.state.orgs, undeliveredResults: results }, 'signing');
  }

  private scanTargets(): ScanTarget[] {
    const c = this.deps.config;
    const dirs = new Set([c.dataDir]);
    if (c.vault?.kekFile) dirs.add(dirname(c.vault.kekFile));
    if (c.vault?.identityFile) dirs.add(dirname(c.vault.identityFile));
    const files = new Set<string>();
    for (const d of dirs) for (const f of filesUnder(d)) files.add(f);
    // Every sample applies to every file: after a decommission no file may hold even a subject id.
    return [...files].sort().map((path) => ({ path, scope: 'store' as const }));
  }

  private identity(): DeviceIdentity {
    if (!this.deps.identity) throw new TallyboxError('IDENTITY_KEY_MISSING', 'the device identity key is needed to sign the decommission receipt');
    return this.deps.identity;
  }

  private async sign(): Promise<void> {
    const s = this.state;
    const evPath = join(this.deps.config.dataDir, EVIDENCE_FILE);
    let problem: string | undefined;
    let scan: DecommissionReceipt['scan'] = { ok: true, samples: 0, hits: 0, hitsByLabel: {}, files: 0, filesWithHits: [], bytesScanned: 0 };
    if (s.evidence) {
      const salt = Buffer.from(s.evidence.salt, 'base64');
      const key = await this.evidenceKey(salt);
      const raw = readPrivateFile(evPath);
      if (!raw || !keyMatches(key, Buffer.from(s.evidence.check, 'base64'))) problem = raw ? 'FINGERPRINT_KEY_MISMATCH' : 'FINGERPRINTS_MISSING';
      else {
        const set = decodeSet(key, raw);
        const r = await scanForFingerprints(this.scanTargets(), set);
        scan = { ok: r.ok, samples: r.samples, hits: r.hits, hitsByLabel: r.hitsByLabel, files: r.files.filter((f) => f.present).length, filesWithHits: r.files.filter((f) => f.hits > 0).map((f) => f.file), bytesScanned: r.bytesScanned };
      }
    }
    const orgsOk = s.orgs.every((o) => o.verification === 'verified' || o.verification === 'completed_before_interruption' || o.verification === 'no_vault');
    const held = s.orgs.some((o) => Object.values(o.held).some((v) => v > 0));
    let verification: DecommissionReceipt['verification'] = 'verified';
    if (!orgsOk) [verification, problem] = ['failed', problem ?? 'ORG_PURGE_NOT_VERIFIED'];
    else if (!scan.ok) [verification, problem] = ['failed', 'FRAGMENTS_FOUND'];
    else if (problem) verification = 'unverified';
    else if (held && scan.samples === 0) [verification, problem] = ['unverified', 'NO_SAMPLES'];
    const signedAtMs = Date.now();
    const c = this.deps.config;
    const receipt: DecommissionReceipt = {
      type: DECOMMISSION_RECEIPT_TYPE,
      v: 1,
      receiptId: uuidv7(signedAtMs),
      decommissionId: s.id,
      deviceId: c.device.id,
      keyId: this.identity().keyId,
      requestRef: s.requestRef,
      ok: verification === 'verified',
      verification,
      ...(problem ? { problem } : {}),
      resumed: this.resumed,
      orgs: s.orgs.map((o) => ({ ...o })),
      commandJournalRowsErased: s.commandRows ?? 0,
      outbox: { punchesDelivered: s.punchesDelivered ?? 0, punchesUndelivered: s.orgs.reduce((n, o) => n + o.undeliveredPunches, 0), resultsUndelivered: s.undeliveredResults ?? 0 },
      scan,
      keysToDestroy: this.deps.keyProvider ? ['kek', 'identity'] : ['identity'],
      startedAtMs: s.startedAtMs,
      signedAtMs,
    };
    const signed = JSON.stringify(signDecommissionReceipt(receipt, this.identity()));
    // One write: from here on this is the receipt, re-delivered as is after any crash.
    this.save({ signed, receiptId: receipt.receiptId }, 'handover');
    rmSync(evPath, { force: true });
    this.deps.logger.warn({ event: 'decommission_receipt', receiptId: receipt.receiptId, verification, problem, scanHits: scan.hits }, `decommission receipt signed (${verification})`);
  }

  private writeReceiptFile(): void {
    const file = { signed: JSON.parse(this.state.signed!) as unknown, publicKeyPem: this.identity().publicKeyPem };
    writePrivateFileAtomic(receiptFilePath(this.deps.config.dataDir), `${JSON.stringify(file, null, 2)}\n`);
  }

  /** Queue the receipt as a signed result on the operator org's result topic (once), and wait a bounded time for the PUBACK. */
  private async publishReceipt(signed: string): Promise<boolean> {
    const { carriedReceiptId } = await import('../agent/privacy.js');
    const { resultFromJson } = await import('../agent/results.js');
    const id = this.state.receiptId!;
    const queued = async () => (await this.deps.outbox.pendingResults(1_000_000)).some((r) => carriedReceiptId(resultFromJson(r.body)) === id);
    if (!(await queued())) {
      const { resultSigningBytes } = await import('../link/commands/result.js');
      const { ResultCode } = await import('../proto/index.js');
      const unsigned: CommandResultProps = {
        deviceId: this.deps.config.device.id,
        counter: 0,
        code: ResultCode.RESULT_CODE_OK,
        reason: 'decommissioned',
        detail: `decommission ${this.state.id}`,
        atMs: Date.now(),
        receipt: Buffer.from(signed, 'utf8'),
        keyId: this.identity().keyId,
      };
      await this.deps.enqueueResult(this.deps.config.device.orgId, { ...unsigned, signature: this.identity().sign(resultSigningBytes(unsigned)) });
    }
    if (!this.deps.online()) return false;
    return waitFor(async () => !(await queued()), this.deps.deliverTimeoutMs ?? 30_000);
  }
}
