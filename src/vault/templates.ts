/**
 * Biometric templates (privacy rules 1, 2, 5): sealed under the org's
 * template key. The AAD binds org, subject, record id, key version and (since
 * schema v3) modality and slot, so a template relabelled or moved in vault.db
 * does not decrypt: the bulk start-up walk pays nothing extra for the binding.
 * The same columns also carry a row MAC, which lets the metadata-only listing
 * notice a change without decrypting, and names the cause when a read fails.
 * Enrolment checks consent from verified rows only. A failing record is
 * quarantined and the rest are returned.
 */
import { TallyboxError } from '../util/errors.js';
import { uuidv7 } from '../util/uuidv7.js';
import { assertBiometricConsent } from './consent.js';
import type { VaultContext } from './context.js';
import { checkId } from './ids.js';
import type { AadParts } from './crypto.js';
import { checkMac, templateMac } from './integrity.js';
import type { OrgKeys } from './org-keys.js';
import type { SubjectStore } from './subjects.js';
import { MAX_TEMPLATE_BYTES, MODALITIES, type DecryptedTemplate, type DecryptTemplatesResult, type Modality, type QuarantinedRecord, type TemplateInput, type TemplateMeta } from './types.js';

export interface TemplateRow {
  record_id: string;
  org_id: string;
  subject_id: string;
  modality: Modality;
  slot: number;
  key_version: number;
  ct: Buffer;
  created_at_ms: number;
  quarantined_at_ms: number | null;
  quarantine_code: string | null;
  mac: Buffer | null;
}

/** One turn of forEachTemplate: a batch of plaintexts and where the next one starts. */
export interface TemplateBatchRead {
  templates: DecryptedTemplate[];
  quarantined: QuarantinedRecord[];
  last: number | undefined;
  full: boolean;
}

export function checkModality(modality: unknown): void {
  if (!MODALITIES.includes(modality as Modality)) {
    throw new TallyboxError('INVALID_ARGUMENT', `INVALID_ARGUMENT: modality must be ${MODALITIES.join(' | ')}, got ${String(modality)}`, { field: 'modality' });
  }
}

/** Checked before the call is queued: bad input changes nothing. */
export function checkTemplateInputs(orgId: string, items: readonly TemplateInput[]): void {
  checkId('orgId', orgId);
  for (const it of items) {
    checkId('subjectId', it.subjectId);
    checkModality(it.modality);
    if (!Number.isInteger(it.slot) || it.slot < 0 || it.slot > 255) throw new TallyboxError('INVALID_ARGUMENT', 'INVALID_ARGUMENT: slot must be an integer 0-255', { field: 'slot' });
    if (!(it.bytes instanceof Uint8Array) || it.bytes.length === 0 || it.bytes.length > MAX_TEMPLATE_BYTES) {
      throw new TallyboxError('TEMPLATE_TOO_LARGE', `TEMPLATE_TOO_LARGE: a template must be 1-${MAX_TEMPLATE_BYTES} bytes, got ${it.bytes instanceof Uint8Array ? it.bytes.length : 'none'}`);
    }
  }
}

function toDecrypted(r: TemplateRow, bytes: Buffer): DecryptedTemplate {
  return { recordId: r.record_id, orgId: r.org_id, subjectId: r.subject_id, modality: r.modality, slot: r.slot, bytes };
}

type TemplateIdentity = Pick<TemplateRow, 'record_id' | 'org_id' | 'subject_id' | 'modality' | 'slot' | 'key_version'>;

/** The AAD a template is sealed with (schema v3): its identity and its modality and slot. */
export function templateAad(r: TemplateIdentity): AadParts {
  return { kind: 'template', orgId: r.org_id, subjectId: r.subject_id, recordId: r.record_id, keyVersion: r.key_version, bound: [String(r.modality), String(r.slot)] };
}

/** The MAC a template row must carry. */
export function templateRowMac(keys: OrgKeys, r: TemplateIdentity): Buffer {
  return templateMac(keys, { recordId: r.record_id, orgId: r.org_id, subjectId: r.subject_id, modality: r.modality, slot: r.slot, keyVersion: r.key_version });
}

export class TemplateStore {
  readonly #ctx: VaultContext;
  readonly #subjects: SubjectStore;

  constructor(opts: { ctx: VaultContext; subjects: SubjectStore }) {
    this.#ctx = opts.ctx;
    this.#subjects = opts.subjects;
  }

  /**
   * Decrypt (the AAD checks every bound column): the plaintext or the error to
   * quarantine with. Only on failure is the MAC consulted, to say whether the
   * metadata or the ciphertext was changed. Synchronous: no promise per record
   * on a start-up walk.
   */
  private tryRead(keys: OrgKeys, r: TemplateRow): Buffer | Error {
    const out = keys.tryUnseal('templates', r.ct, templateAad(r));
    if (!(out instanceof Error)) return out;
    return checkMac(templateRowMac(keys, r), r.mac) ?? out;
  }

  /** Enrol in one transaction (one fsync). All or nothing: one refused consent refuses the batch. Inputs already checked. */
  async enrol(orgId: string, items: readonly TemplateInput[]): Promise<string[]> {
    const { db, keyring, clock } = this.#ctx;
    const keys = await keyring.keysFor(orgId, true);
    for (const subjectId of new Set(items.map((it) => it.subjectId))) {
      assertBiometricConsent(await this.#subjects.consentState(keys, orgId, subjectId));
    }
    const now = clock();
    const recordIds: string[] = [];
    await db.transaction(async () => {
      for (const { subjectId, modality, slot, bytes } of items) {
        const recordId = uuidv7(now);
        const ct = keys.seal('templates', bytes, templateAad({ org_id: orgId, subject_id: subjectId, record_id: recordId, key_version: keys.version, modality, slot }));
        const mac = templateMac(keys, { recordId, orgId, subjectId, modality, slot, keyVersion: keys.version });
        // A new record id per enrolment: the replaced row is deleted (zeroed by secure_delete).
        await db.run('DELETE FROM templates WHERE org_id = ? AND subject_id = ? AND modality = ? AND slot = ?', [orgId, subjectId, modality, slot]);
        await db.run('INSERT INTO templates (record_id, org_id, subject_id, modality, slot, key_version, ct, mac, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', [recordId, orgId, subjectId, modality, slot, keys.version, ct, mac, now]);
        await db.run('UPDATE subjects SET last_seen_ms = MAX(last_seen_ms, ?) WHERE org_id = ? AND subject_id = ?', [now, orgId, subjectId]);
        recordIds.push(recordId);
      }
    });
    return recordIds;
  }

  /** Template metadata without decrypting; a row whose MAC fails is quarantined and listed as such. */
  async list(orgId: string, subjectId?: string): Promise<TemplateMeta[]> {
    const { db, keyring, quarantine } = this.#ctx;
    keyring.assertNotPurging(orgId);
    const keys = await keyring.keysFor(orgId, false);
    const rows = await db.all<Omit<TemplateRow, 'ct'>>(
      `SELECT record_id, org_id, subject_id, modality, slot, key_version, created_at_ms, quarantined_at_ms, quarantine_code, mac FROM templates WHERE org_id = ? ${subjectId ? 'AND subject_id = ?' : ''} ORDER BY subject_id, modality, slot`,
      subjectId ? [orgId, subjectId] : [orgId],
    );
    const out: TemplateMeta[] = [];
    for (const r of rows) {
      // Without the org's key nothing can be verified or decrypted: such rows are unusable.
      let quarantined = r.quarantined_at_ms !== null || !keys;
      if (!quarantined && keys) {
        const bad = checkMac(templateRowMac(keys, r), r.mac);
        if (bad) {
          await quarantine.mark('templates', r.record_id, orgId, bad);
          quarantined = true;
        }
      }
      out.push({ recordId: r.record_id, orgId: r.org_id, subjectId: r.subject_id, modality: r.modality, slot: r.slot, createdAtMs: r.created_at_ms, quarantined });
    }
    return out;
  }

  /** Decrypt every template of an org; failures are quarantined and listed, the rest returned. */
  async decryptAll(orgId: string): Promise<DecryptTemplatesResult> {
    const keys = await this.#ctx.keyring.keysFor(orgId, false);
    const out: DecryptTemplatesResult = { templates: [], quarantined: [] };
    if (!keys) return out;
    const rows = await this.#ctx.db.all<TemplateRow>('SELECT * FROM templates WHERE org_id = ?', [orgId]);
    await this.readRows(keys, rows, out.templates, out.quarantined);
    return out;
  }

  /**
   * One batch of an org's templates of one modality after rowid `after`
   * (keyset pagination: each batch seeks forward in the table's own b-tree, so
   * the walk is linear; paging on record_id made SQLite sort the org's rows
   * again for every batch). null when the org has no key.
   */
  async batch(orgId: string, modality: Modality, after: number, batchSize: number): Promise<TemplateBatchRead | null> {
    const keys = await this.#ctx.keyring.keysFor(orgId, false);
    if (!keys) return null;
    const rows = await this.#ctx.db.all<TemplateRow & { rid: number }>('SELECT rowid AS rid, * FROM templates WHERE rowid > ? AND org_id = ? AND modality = ? ORDER BY rowid LIMIT ?', [after, orgId, modality, batchSize]);
    const out: TemplateBatchRead = { templates: [], quarantined: [], last: rows[rows.length - 1]?.rid, full: rows.length === batchSize };
    await this.readRows(keys, rows, out.templates, out.quarantined);
    return out;
  }

  private async readRows(keys: OrgKeys, rows: readonly TemplateRow[], templates: DecryptedTemplate[], quarantined: QuarantinedRecord[]): Promise<void> {
    const q = this.#ctx.quarantine;
    for (const r of rows) {
      if (r.quarantined_at_ms !== null) {
        quarantined.push({ table: 'templates', recordId: r.record_id, orgId: r.org_id, code: r.quarantine_code ?? 'DECRYPT_FAILED', atMs: r.quarantined_at_ms });
        continue;
      }
      const bytes = this.tryRead(keys, r);
      if (!(bytes instanceof Error)) {
        templates.push(toDecrypted(r, bytes));
        continue;
      }
      await q.mark('templates', r.record_id, r.org_id, bytes);
      quarantined.push(q.entry('templates', r.record_id, r.org_id, bytes));
    }
  }

  /** One template; RECORD_QUARANTINED (and quarantined) when it fails its MAC or does not decrypt. */
  async get(orgId: string, recordId: string): Promise<DecryptedTemplate> {
    const { db, keyring, quarantine } = this.#ctx;
    const keys = await keyring.keysFor(orgId, false);
    const r = await db.get<TemplateRow>('SELECT * FROM templates WHERE org_id = ? AND record_id = ?', [orgId, recordId]);
    if (!r || !keys) throw new TallyboxError('TEMPLATE_NOT_FOUND', `TEMPLATE_NOT_FOUND: no template record ${recordId} in organisation ${orgId}`, { orgId, recordId });
    if (r.quarantined_at_ms !== null) throw quarantine.quarantinedError('templates', r.record_id, r.quarantine_code);
    const bytes = this.tryRead(keys, r);
    if (bytes instanceof Error) throw await quarantine.mark('templates', r.record_id, orgId, bytes);
    return toDecrypted(r, bytes);
  }
}
