/**
 * Subjects and their consents (privacy rules 3 and 5). A subject's name is
 * sealed under the org's identity key; `minor` and each consent's kind and
 * time stay plain (the consent check reads them) but are bound by a row MAC,
 * so a row changed outside the vault is quarantined and never counts.
 */
import { TallyboxError } from '../util/errors.js';
import { uuidv7 } from '../util/uuidv7.js';
import { CONSENT_KINDS, type ConsentKind, type ConsentState } from './consent.js';
import type { VaultContext } from './context.js';
import { checkId } from './ids.js';
import { checkMac, consentMac, isMetadataCode, subjectMac } from './integrity.js';
import type { OrgKeys } from './org-keys.js';
import { MAX_DISPLAY_NAME_CHARS, type ConsentInput, type ConsentView, type SubjectInput, type SubjectView } from './types.js';

export interface SubjectRow {
  org_id: string;
  subject_id: string;
  record_id: string;
  key_version: number;
  name_ct: Buffer;
  minor: number;
  created_at_ms: number;
  last_seen_ms: number;
  quarantined_at_ms: number | null;
  quarantine_code: string | null;
  mac: Buffer | null;
}

export interface ConsentRow {
  org_id: string;
  subject_id: string;
  kind: ConsentKind;
  record_id: string;
  key_version: number;
  granted_at_ms: number;
  evidence_ct: Buffer | null;
  quarantined_at_ms: number | null;
  quarantine_code: string | null;
  mac: Buffer | null;
}

const MAX_EVIDENCE_CHARS = 1024;

export function checkConsentInput(c: ConsentInput): void {
  if (!CONSENT_KINDS.includes(c.kind)) {
    throw new TallyboxError('INVALID_ARGUMENT', `INVALID_ARGUMENT: consent kind must be ${CONSENT_KINDS.join(' | ')}, got ${String(c.kind)}`, { field: 'consent.kind' });
  }
  if (c.evidence !== undefined && (typeof c.evidence !== 'string' || c.evidence.length > MAX_EVIDENCE_CHARS)) {
    throw new TallyboxError('INVALID_ARGUMENT', `INVALID_ARGUMENT: consent evidence must be a string of at most ${MAX_EVIDENCE_CHARS} characters`, { field: 'consent.evidence' });
  }
}

/** Checked before the call is queued: bad input changes nothing. */
export function checkSubjectInputs(orgId: string, inputs: readonly SubjectInput[]): void {
  checkId('orgId', orgId);
  for (const input of inputs) {
    checkId('subjectId', input.subjectId);
    if (typeof input.displayName !== 'string' || input.displayName.length > MAX_DISPLAY_NAME_CHARS) {
      throw new TallyboxError('INVALID_ARGUMENT', `INVALID_ARGUMENT: displayName must be a string of at most ${MAX_DISPLAY_NAME_CHARS} characters`, { field: 'displayName' });
    }
    if (typeof input.minor !== 'boolean') throw new TallyboxError('INVALID_ARGUMENT', 'INVALID_ARGUMENT: minor must be a boolean', { field: 'minor' });
    for (const c of input.consents ?? []) checkConsentInput(c);
  }
}

/** The MAC a subject row must carry, over its columns as this module interprets them (`minor === 1`). */
export function subjectRowMac(keys: OrgKeys, r: SubjectRow): Buffer {
  return subjectMac(keys, { orgId: r.org_id, subjectId: r.subject_id, recordId: r.record_id, keyVersion: r.key_version, minor: r.minor === 1 });
}

/** The MAC a consent row must carry. */
export function consentRowMac(keys: OrgKeys, r: ConsentRow): Buffer {
  return consentMac(keys, {
    orgId: r.org_id,
    subjectId: r.subject_id,
    kind: r.kind,
    recordId: r.record_id,
    keyVersion: r.key_version,
    grantedAtMs: r.granted_at_ms,
    hasEvidence: r.evidence_ct !== null,
  });
}

export class SubjectStore {
  readonly #ctx: VaultContext;

  constructor(ctx: VaultContext) {
    this.#ctx = ctx;
  }

  /** Many subjects in one transaction (one fsync). All or nothing. Inputs already checked. */
  async upsert(orgId: string, inputs: readonly SubjectInput[]): Promise<Array<{ recordId: string; created: boolean }>> {
    const { db, keyring, clock } = this.#ctx;
    const keys = await keyring.keysFor(orgId, true);
    const now = clock();
    return db.transaction(async () => {
      const out: Array<{ recordId: string; created: boolean }> = [];
      for (const input of inputs) {
        const existing = await db.get<{ record_id: string }>('SELECT record_id FROM subjects WHERE org_id = ? AND subject_id = ?', [orgId, input.subjectId]);
        const recordId = existing?.record_id ?? uuidv7(now);
        const nameCt = keys.seal('identity', Buffer.from(input.displayName, 'utf8'), {
          kind: 'subject.name',
          orgId,
          subjectId: input.subjectId,
          recordId,
          keyVersion: keys.version,
        });
        const mac = subjectMac(keys, { orgId, subjectId: input.subjectId, recordId, keyVersion: keys.version, minor: input.minor });
        if (existing) {
          // A fresh seal and MAC replace a quarantined row, so an upsert also heals quarantine.
          await db.run('UPDATE subjects SET key_version = ?, name_ct = ?, minor = ?, mac = ?, updated_at_ms = ?, quarantined_at_ms = NULL, quarantine_code = NULL WHERE org_id = ? AND subject_id = ?', [
            keys.version,
            nameCt,
            input.minor ? 1 : 0,
            mac,
            now,
            orgId,
            input.subjectId,
          ]);
        } else {
          await db.run('INSERT INTO subjects (org_id, subject_id, record_id, key_version, name_ct, minor, mac, created_at_ms, updated_at_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', [
            orgId,
            input.subjectId,
            recordId,
            keys.version,
            nameCt,
            input.minor ? 1 : 0,
            mac,
            now,
            now,
            now,
          ]);
        }
        for (const c of input.consents ?? []) await this.writeConsent(keys, orgId, input.subjectId, c, now);
        out.push({ recordId, created: !existing });
      }
      return out;
    });
  }

  private async writeConsent(keys: OrgKeys, orgId: string, subjectId: string, c: ConsentInput, now: number): Promise<void> {
    const recordId = uuidv7(now);
    const grantedAtMs = c.grantedAtMs ?? now;
    const evidenceCt = c.evidence === undefined ? null : keys.seal('identity', Buffer.from(c.evidence, 'utf8'), { kind: 'consent.evidence', orgId, subjectId, recordId, keyVersion: keys.version });
    const mac = consentMac(keys, { orgId, subjectId, kind: c.kind, recordId, keyVersion: keys.version, grantedAtMs, hasEvidence: evidenceCt !== null });
    await this.#ctx.db.run(
      `INSERT INTO consents (org_id, subject_id, kind, record_id, key_version, granted_at_ms, evidence_ct, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (org_id, subject_id, kind) DO UPDATE SET record_id = excluded.record_id, key_version = excluded.key_version,
         granted_at_ms = excluded.granted_at_ms, evidence_ct = excluded.evidence_ct, mac = excluded.mac, quarantined_at_ms = NULL, quarantine_code = NULL`,
      [orgId, subjectId, c.kind, recordId, keys.version, grantedAtMs, evidenceCt, mac],
    );
  }

  /** The subject's row, unverified: existence checks only (never read `minor` from it). */
  async require(orgId: string, subjectId: string): Promise<SubjectRow> {
    const row = await this.#ctx.db.get<SubjectRow>('SELECT * FROM subjects WHERE org_id = ? AND subject_id = ?', [orgId, subjectId]);
    if (!row) throw new TallyboxError('SUBJECT_NOT_FOUND', `SUBJECT_NOT_FOUND: no subject ${subjectId} in organisation ${orgId}`, { orgId, subjectId });
    return row;
  }

  /**
   * The subject's row with its bound columns verified. Throws RECORD_QUARANTINED
   * (and quarantines the row) when its MAC fails, or when it was quarantined
   * for that before. A name that does not decrypt does not make `minor` untrue,
   * so a row quarantined only for DECRYPT_FAILED is returned.
   */
  async verified(keys: OrgKeys, orgId: string, subjectId: string, known?: SubjectRow): Promise<SubjectRow> {
    const row = known ?? (await this.require(orgId, subjectId));
    const bad = checkMac(subjectRowMac(keys, row), row.mac);
    if (bad) throw await this.#ctx.quarantine.mark('subjects', row.record_id, orgId, bad);
    if (isMetadataCode(row.quarantine_code)) throw this.#ctx.quarantine.quarantinedError('subjects', row.record_id, row.quarantine_code);
    return row;
  }

  /** The subject's consents that pass their MAC; failing ones are quarantined and left out. */
  private async verifiedConsents(keys: OrgKeys, orgId: string, subjectId: string): Promise<ConsentRow[]> {
    const out: ConsentRow[] = [];
    for (const c of await this.#ctx.db.all<ConsentRow>('SELECT * FROM consents WHERE org_id = ? AND subject_id = ? ORDER BY kind', [orgId, subjectId])) {
      const bad = checkMac(consentRowMac(keys, c), c.mac);
      if (bad) {
        await this.#ctx.quarantine.mark('consents', c.record_id, orgId, bad);
        continue;
      }
      if (isMetadataCode(c.quarantine_code)) continue;
      out.push(c);
    }
    return out;
  }

  /** What assertBiometricConsent needs, from verified rows only: a tampered row refuses, never passes. */
  async consentState(keys: OrgKeys, orgId: string, subjectId: string): Promise<ConsentState> {
    const subject = await this.verified(keys, orgId, subjectId);
    const consents = await this.verifiedConsents(keys, orgId, subjectId);
    return {
      minor: subject.minor === 1,
      biometricAtMs: consents.find((c) => c.kind === 'biometric')?.granted_at_ms ?? null,
      guardianAtMs: consents.find((c) => c.kind === 'guardian')?.granted_at_ms ?? null,
    };
  }

  /** Record a consent (biometric, or a guardian's for a subject aged 14 or under). */
  async recordConsent(orgId: string, subjectId: string, consent: ConsentInput): Promise<void> {
    const keys = await this.#ctx.keyring.keysFor(orgId, true);
    await this.require(orgId, subjectId);
    await this.writeConsent(keys, orgId, subjectId, consent, this.#ctx.clock());
  }

  async withdrawConsent(orgId: string, subjectId: string, kind: ConsentKind): Promise<boolean> {
    this.#ctx.keyring.assertNotPurging(orgId);
    const r = await this.#ctx.db.run('DELETE FROM consents WHERE org_id = ? AND subject_id = ? AND kind = ?', [orgId, subjectId, kind]);
    return r.changes > 0;
  }

  /** Decrypted, verified view of one subject; RECORD_QUARANTINED when the name does not decrypt or the row fails its MAC. */
  async get(orgId: string, subjectId: string): Promise<SubjectView> {
    const { keyring, quarantine } = this.#ctx;
    const keys = await keyring.keysFor(orgId, false);
    const unverified = await this.require(orgId, subjectId);
    if (!keys) throw new TallyboxError('SUBJECT_NOT_FOUND', `SUBJECT_NOT_FOUND: organisation ${orgId} has no data key`, { orgId });
    if (unverified.quarantined_at_ms !== null) throw quarantine.quarantinedError('subjects', unverified.record_id, unverified.quarantine_code);
    const row = await this.verified(keys, orgId, subjectId, unverified);
    const name = await quarantine.open('subjects', keys, 'identity', row.name_ct, {
      kind: 'subject.name',
      orgId,
      subjectId,
      recordId: row.record_id,
      keyVersion: row.key_version,
    });
    const consents: Partial<Record<ConsentKind, ConsentView>> = {};
    for (const c of await this.verifiedConsents(keys, orgId, subjectId)) {
      let evidence: string | null | undefined = null;
      if (c.quarantined_at_ms !== null) evidence = undefined;
      else if (c.evidence_ct) {
        try {
          evidence = (await quarantine.open('consents', keys, 'identity', c.evidence_ct, { kind: 'consent.evidence', orgId, subjectId, recordId: c.record_id, keyVersion: c.key_version })).toString('utf8');
        } catch {
          // Quarantined: the consent's kind and time (verified by its MAC) still stand, its evidence is unreadable.
          evidence = undefined;
        }
      }
      consents[c.kind] = { grantedAtMs: c.granted_at_ms, evidence };
    }
    return {
      orgId,
      subjectId,
      displayName: name.toString('utf8'),
      minor: row.minor === 1,
      consents,
      createdAtMs: row.created_at_ms,
      lastSeenMs: row.last_seen_ms,
    };
  }

  async ids(orgId: string): Promise<string[]> {
    this.#ctx.keyring.assertNotPurging(orgId);
    const rows = await this.#ctx.db.all<{ subject_id: string }>('SELECT subject_id FROM subjects WHERE org_id = ? ORDER BY subject_id', [orgId]);
    return rows.map((r) => r.subject_id);
  }

  async touch(orgId: string, subjectId: string, atMs: number): Promise<boolean> {
    const r = await this.#ctx.db.run('UPDATE subjects SET last_seen_ms = MAX(last_seen_ms, ?) WHERE org_id = ? AND subject_id = ?', [atMs, orgId, subjectId]);
    return r.changes > 0;
  }
}
