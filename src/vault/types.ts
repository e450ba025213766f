/**
 * The vault's public types: what callers (roles, privacy, agent, tests) pass
 * in and get back. Row shapes stay private to the module that owns each table.
 */
import type { ConsentKind } from './consent.js';

/** Feature templates are a few KiB; the cap also keeps raw images (which must never be stored) out. */
export const MAX_TEMPLATE_BYTES = 64 * 1024;
export const MAX_DISPLAY_NAME_CHARS = 256;

export type Modality = 'fingerprint' | 'face';
export const MODALITIES: readonly Modality[] = ['fingerprint', 'face'];
export type CredentialKind = 'card' | 'wifi_mac';
export const CREDENTIAL_KINDS: readonly CredentialKind[] = ['card', 'wifi_mac'];

export interface ConsentInput {
  kind: ConsentKind;
  /** When consent was given (default: now). */
  grantedAtMs?: number;
  /** Reference to the evidence (form id, guardian's name, …): personal data, stored sealed. */
  evidence?: string;
}

export interface SubjectInput {
  subjectId: string;
  displayName: string;
  /** Aged 14 or under: biometric enrolment also needs a guardian's consent. */
  minor: boolean;
  /** Consents to record with the subject (a SubjectUpsert carries them). */
  consents?: ConsentInput[];
}

export interface ConsentView {
  grantedAtMs: number;
  /** undefined when the evidence record is quarantined. */
  evidence: string | null | undefined;
}

export interface SubjectView {
  orgId: string;
  subjectId: string;
  displayName: string;
  minor: boolean;
  /**
   * Consents whose row passed its integrity check. A consent whose kind, time
   * or owner was changed outside the vault is quarantined and left out, so a
   * consent check on this view refuses.
   */
  consents: Partial<Record<ConsentKind, ConsentView>>;
  createdAtMs: number;
  lastSeenMs: number;
}

export interface TemplateInput {
  subjectId: string;
  modality: Modality;
  slot: number;
  bytes: Uint8Array;
}

export interface TemplateMeta {
  recordId: string;
  orgId: string;
  subjectId: string;
  modality: Modality;
  slot: number;
  createdAtMs: number;
  quarantined: boolean;
}

export interface DecryptedTemplate {
  recordId: string;
  orgId: string;
  subjectId: string;
  modality: Modality;
  slot: number;
  bytes: Buffer;
}

/** Tables whose rows can be quarantined. */
export type VaultTable = 'subjects' | 'consents' | 'templates' | 'credentials';

export interface QuarantinedRecord {
  table: VaultTable;
  recordId: string;
  orgId: string;
  /** DECRYPT_FAILED | KEY_VERSION_UNKNOWN | METADATA_MAC_MISMATCH | METADATA_MAC_MISSING. */
  code: string;
  atMs: number;
}

export interface DecryptTemplatesResult {
  templates: DecryptedTemplate[];
  /** Records skipped because they are (or just became) quarantined. */
  quarantined: QuarantinedRecord[];
}

/** A batch of decrypted templates handed to a forEachTemplate callback; every `bytes` is zeroed when the callback returns. */
export type TemplateBatch = DecryptedTemplate[];

export interface ForEachTemplateResult {
  /** Templates handed to the callback. */
  templates: number;
  /** Records skipped because they are (or just became) quarantined. */
  quarantined: QuarantinedRecord[];
  batches: number;
}
