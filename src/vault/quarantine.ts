/**
 * Quarantine: a record that fails to decrypt or whose bound metadata fails its
 * MAC is flagged (quarantined_at_ms, quarantine_code), excluded from every
 * read, reported, and logged by record id only; everything else keeps working.
 * A legitimate rewrite of the record (upsert, re-enrolment, new consent,
 * re-assigned credential) heals it.
 */
import type { Sqlite } from '../store/sqlite.js';
import { TallyboxError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { AadParts } from './crypto.js';
import { isMetadataCode } from './integrity.js';
import type { OrgKeys, SealPurpose } from './org-keys.js';
import type { QuarantinedRecord, VaultTable } from './types.js';

const TABLES: readonly VaultTable[] = ['subjects', 'consents', 'templates', 'credentials'];

/** Where a row is, when its record id cannot be trusted to find it (a credential planted without one). */
export interface RowLocator {
  where: string;
  params: Array<string | number | Buffer>;
}

function why(code: string): string {
  return isMetadataCode(code)
    ? `failed its integrity check (${code}: minor, consent kind or time, owner or modality was changed outside the vault)`
    : `failed to decrypt (${code}: tampered, copied from another record, or sealed under another key)`;
}

export class Quarantine {
  readonly #db: Sqlite;
  readonly #log: Logger;
  readonly #clock: () => number;

  constructor(opts: { db: Sqlite; log: Logger; clock: () => number }) {
    this.#db = opts.db;
    this.#log = opts.log;
    this.#clock = opts.clock;
  }

  /**
   * Flag the record and return the RECORD_QUARANTINED error to throw or report.
   * A metadata failure overrides an earlier decrypt code (it is the more
   * severe: the row's columns are not to be acted on) but keeps the first time.
   */
  async mark(table: VaultTable, recordId: string, orgId: string, err: unknown, at?: RowLocator): Promise<TallyboxError> {
    const code = (err as { code?: string }).code ?? 'DECRYPT_FAILED';
    const now = this.#clock();
    const locate = at ?? { where: 'record_id = ?', params: [recordId] };
    if (isMetadataCode(code)) {
      await this.#db.run(`UPDATE ${table} SET quarantined_at_ms = COALESCE(quarantined_at_ms, ?), quarantine_code = ? WHERE ${locate.where}`, [now, code, ...locate.params]);
    } else {
      await this.#db.run(`UPDATE ${table} SET quarantined_at_ms = ?, quarantine_code = ? WHERE ${locate.where} AND quarantined_at_ms IS NULL`, [now, code, ...locate.params]);
    }
    // Record ids only: never the subject, never the content.
    this.#log.error({ table, recordId, orgId, code }, isMetadataCode(code) ? 'record failed its integrity check and is quarantined' : 'record failed to decrypt and is quarantined');
    return new TallyboxError('RECORD_QUARANTINED', `RECORD_QUARANTINED: ${table} record ${recordId} ${why(code)}; it is quarantined and skipped until erased or re-enrolled`, { table, recordId, orgId, cause: code }, { cause: err });
  }

  /** The report entry for a record that was just marked. */
  entry(table: VaultTable, recordId: string, orgId: string, err: unknown): QuarantinedRecord {
    return { table, recordId, orgId, code: (err as { code?: string }).code ?? 'DECRYPT_FAILED', atMs: this.#clock() };
  }

  /** The error for a record already flagged: said without trying again. */
  quarantinedError(table: VaultTable, recordId: string, code: string | null): TallyboxError {
    return new TallyboxError('RECORD_QUARANTINED', `RECORD_QUARANTINED: ${table} record ${recordId} is quarantined (${code ?? 'DECRYPT_FAILED'}); erase or re-enrol it`, {
      table,
      recordId,
      cause: code,
    });
  }

  /** Unseal or quarantine. */
  async open(table: VaultTable, keys: OrgKeys, purpose: SealPurpose, ct: Buffer, aad: AadParts): Promise<Buffer> {
    const r = keys.tryUnseal(purpose, ct, aad);
    if (r instanceof Error) throw await this.mark(table, aad.recordId, aad.orgId, r);
    return r;
  }

  /** Every quarantined record (optionally of one org): for doctor and status. */
  async list(orgId?: string): Promise<QuarantinedRecord[]> {
    const out: QuarantinedRecord[] = [];
    for (const table of TABLES) {
      const rows = await this.#db.all<{ record_id: string | null; org_id: string; quarantine_code: string | null; quarantined_at_ms: number }>(
        `SELECT record_id, org_id, quarantine_code, quarantined_at_ms FROM ${table} WHERE quarantined_at_ms IS NOT NULL ${orgId ? 'AND org_id = ?' : ''} ORDER BY quarantined_at_ms`,
        orgId ? [orgId] : [],
      );
      for (const r of rows) out.push({ table, recordId: r.record_id ?? '', orgId: r.org_id, code: r.quarantine_code ?? 'DECRYPT_FAILED', atMs: r.quarantined_at_ms });
    }
    return out;
  }
}
