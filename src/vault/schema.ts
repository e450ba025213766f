/**
 * vault.db schema. Identity (subjects, consents) and biometrics (templates)
 * live in separate tables that share nothing but the opaque subject id
 * (privacy rule 3). Every personal value is either sealed (AES-256-GCM) or,
 * for credentials that must be looked up, a keyed HMAC. Plain columns hold
 * only ids, timestamps, flags and key versions, and those a decision is made
 * on are bound to their row by a MAC (schema v2, integrity.ts).
 *
 * A new vault is built exactly as an old one is upgraded: the version 1 tables,
 * then each migration in turn (migrate.ts), so both end in the same shape.
 */
export const SCHEMA_VERSION = 2;

/** The tables as version 1 created them. Frozen: changes go into a new migration. */
export const SCHEMA_V1_SQL = `
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value BLOB NOT NULL
) WITHOUT ROWID;

-- The org's data key, wrapped by the device KEK. Deleting this row is the
-- crypto-shredding step of an org withdrawal.
CREATE TABLE IF NOT EXISTS org_keys (
  org_id        TEXT PRIMARY KEY,
  key_version   INTEGER NOT NULL,
  wrapped       BLOB NOT NULL,
  created_at_ms INTEGER NOT NULL
);

-- Survives withdrawal so a re-joining org never reuses a key version. Holds no personal data.
CREATE TABLE IF NOT EXISTS org_key_versions (
  org_id       TEXT PRIMARY KEY,
  last_version INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS subjects (
  org_id            TEXT NOT NULL,
  subject_id        TEXT NOT NULL,
  record_id         TEXT NOT NULL UNIQUE,
  key_version       INTEGER NOT NULL,
  name_ct           BLOB NOT NULL,
  minor             INTEGER NOT NULL CHECK (minor IN (0, 1)),
  created_at_ms     INTEGER NOT NULL,
  updated_at_ms     INTEGER NOT NULL,
  last_seen_ms      INTEGER NOT NULL,
  quarantined_at_ms INTEGER,
  quarantine_code   TEXT,
  PRIMARY KEY (org_id, subject_id)
);
CREATE INDEX IF NOT EXISTS subjects_last_seen ON subjects (last_seen_ms);

CREATE TABLE IF NOT EXISTS consents (
  org_id            TEXT NOT NULL,
  subject_id        TEXT NOT NULL,
  kind              TEXT NOT NULL CHECK (kind IN ('biometric', 'guardian')),
  record_id         TEXT NOT NULL UNIQUE,
  key_version       INTEGER NOT NULL,
  granted_at_ms     INTEGER NOT NULL,
  evidence_ct       BLOB,
  quarantined_at_ms INTEGER,
  quarantine_code   TEXT,
  PRIMARY KEY (org_id, subject_id, kind)
);

CREATE TABLE IF NOT EXISTS templates (
  record_id         TEXT PRIMARY KEY,
  org_id            TEXT NOT NULL,
  subject_id        TEXT NOT NULL,
  modality          TEXT NOT NULL CHECK (modality IN ('fingerprint', 'face')),
  slot              INTEGER NOT NULL,
  key_version       INTEGER NOT NULL,
  ct                BLOB NOT NULL,
  created_at_ms     INTEGER NOT NULL,
  quarantined_at_ms INTEGER,
  quarantine_code   TEXT,
  UNIQUE (org_id, subject_id, modality, slot)
);

CREATE TABLE IF NOT EXISTS credentials (
  org_id        TEXT NOT NULL,
  kind          TEXT NOT NULL CHECK (kind IN ('card', 'wifi_mac')),
  lookup        BLOB NOT NULL,
  subject_id    TEXT NOT NULL,
  key_version   INTEGER NOT NULL,
  created_at_ms INTEGER NOT NULL,
  PRIMARY KEY (org_id, kind, lookup)
);
CREATE INDEX IF NOT EXISTS credentials_subject ON credentials (org_id, subject_id);

-- Purge journal: a purge cut by a power loss resumes from here.
CREATE TABLE IF NOT EXISTS purge_jobs (
  job_id        TEXT PRIMARY KEY,
  kind          TEXT NOT NULL CHECK (kind IN ('org', 'subjects', 'templates')),
  org_id        TEXT NOT NULL,
  subject_ids   TEXT,
  request_ref   TEXT,
  state         TEXT NOT NULL CHECK (state IN ('erasing', 'compacting')),
  started_at_ms INTEGER NOT NULL,
  attempts      INTEGER NOT NULL DEFAULT 0,
  counts        TEXT NOT NULL DEFAULT '{}',
  key_versions  TEXT NOT NULL DEFAULT '[]'
);
`;

/**
 * Version 2 (issue 9 §6): a MAC per row over the columns the vault acts on
 * without decrypting (minor; consent kind and time; template modality and
 * slot; credential owner). Credentials get a record id (quarantine reports
 * name records, never the HMAC of a card number) and quarantine columns.
 */
export const SCHEMA_V2_SQL = `
ALTER TABLE subjects    ADD COLUMN mac BLOB;
ALTER TABLE consents    ADD COLUMN mac BLOB;
ALTER TABLE templates   ADD COLUMN mac BLOB;
ALTER TABLE credentials ADD COLUMN record_id TEXT;
ALTER TABLE credentials ADD COLUMN mac BLOB;
ALTER TABLE credentials ADD COLUMN quarantined_at_ms INTEGER;
ALTER TABLE credentials ADD COLUMN quarantine_code TEXT;
CREATE UNIQUE INDEX credentials_record ON credentials (record_id);
`;
