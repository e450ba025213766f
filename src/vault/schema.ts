/**
 * vault.db schema. Identity (subjects, consents) and biometrics (templates)
 * live in separate tables that share nothing but the opaque subject id
 * (privacy rule 3). Every personal value is either sealed (AES-256-GCM) or,
 * for credentials that must be looked up, a keyed HMAC. Plain columns hold
 * only ids, timestamps, flags and key versions.
 */
export const SCHEMA_VERSION = 1;

export const SCHEMA_SQL = `
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
