/** What every vault store is built from. */
import type { Sqlite } from '../store/sqlite.js';
import type { Logger } from '../util/log.js';
import type { OrgKeyring } from './org-keys.js';
import type { Quarantine } from './quarantine.js';

/**
 * One connection, used only from inside the vault's queue (sqlite3 must not
 * interleave the statements of two transactions), the org keys, quarantine.
 */
export interface VaultContext {
  db: Sqlite;
  log: Logger;
  /** Milliseconds since the epoch: timestamps only. */
  clock: () => number;
  keyring: OrgKeyring;
  quarantine: Quarantine;
}
