/**
 * Durable security-incident records, `incidents.db` in the data directory
 * (0600): what an operator needs to meet a 30-day notice with facts. A record
 * holds an id (uuidv7), a sequence number that is never reused (AUTOINCREMENT),
 * a wall-clock stamp (a stamp only: order comes from the sequence), the kind,
 * and its scope as counts and organisation ids — never personal data.
 *
 * One record per occurrence: every record carries a de-duplication key naming
 * the occurrence (STORAGE_LOST of one lost range, one tamper event, one key
 * file change, one purge job), unique in the table, so a condition seen again
 * at the next start (or at every check while it persists) is the same record.
 *
 * The table also keeps the keyed fingerprints of the key files (keyfiles.ts)
 * and the random key they are made with.
 */
import { randomBytes } from 'node:crypto';
import { chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { Sqlite } from '../store/sqlite.js';
import { sqliteCompanions } from '../util/private-fs.js';
import { uuidv7 } from '../util/uuidv7.js';
import { SerialQueue } from '../util/serial-queue.js';

export const INCIDENTS_FILE = 'incidents.db';

export type IncidentKindName = 'TAMPER' | 'STORAGE_LOST' | 'KEY_FILE_CHANGED' | 'KEY_FILE_MISSING' | 'AUTH_FAILURES' | 'PURGE_INCOMPLETE';

export interface IncidentInput {
  kind: IncidentKindName;
  /** Names the occurrence; recording the same key again is a no-op. Never personal data. */
  dedup: string;
  orgIds?: readonly string[];
  counts?: Record<string, number>;
  /** For people; never personal data. */
  detail: string;
}

export interface Incident {
  seq: number;
  id: string;
  kind: IncidentKindName;
  atMs: number;
  orgIds: string[];
  counts: Record<string, number>;
  detail: string;
  sends: number;
  ackedAtMs: number | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS incidents (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  id          TEXT NOT NULL UNIQUE,
  kind        TEXT NOT NULL,
  dedup       TEXT NOT NULL UNIQUE,
  at_ms       INTEGER NOT NULL,
  org_ids     TEXT NOT NULL,
  counts      TEXT NOT NULL,
  detail      TEXT NOT NULL,
  sends       INTEGER NOT NULL DEFAULT 0,
  acked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS incident_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
`;

interface Row {
  seq: number;
  id: string;
  kind: IncidentKindName;
  at_ms: number;
  org_ids: string;
  counts: string;
  detail: string;
  sends: number;
  acked_at_ms: number | null;
}

const row = (r: Row): Incident => ({
  seq: r.seq,
  id: r.id,
  kind: r.kind,
  atMs: r.at_ms,
  orgIds: JSON.parse(r.org_ids) as string[],
  counts: JSON.parse(r.counts) as Record<string, number>,
  detail: r.detail,
  sends: r.sends,
  ackedAtMs: r.acked_at_ms,
});

export class IncidentStore {
  /** One connection: statements go through the project's one serial queue. */
  private readonly queue = new SerialQueue();

  private constructor(private readonly db: Sqlite) {}

  static async open(dataDir: string, opts: { readonly?: boolean } = {}): Promise<IncidentStore> {
    const path = join(dataDir, INCIDENTS_FILE);
    const db = await Sqlite.open(path, opts.readonly ? { readonly: true } : {});
    try {
      if (!opts.readonly) {
        await db.exec(SCHEMA);
        for (const f of sqliteCompanions(path)) await chmod(f, 0o600).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
      }
    } catch (err) {
      await db.close().catch(() => undefined); // the open's own error is the one to report
      throw err;
    }
    return new IncidentStore(db);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  /** Record an occurrence once; `created` false when its key was recorded before (this or an earlier run). */
  record(i: IncidentInput): Promise<{ incident: Incident; created: boolean }> {
    return this.serial(async () => {
      const atMs = Date.now();
      const r = await this.db.run('INSERT OR IGNORE INTO incidents (id, kind, dedup, at_ms, org_ids, counts, detail) VALUES (?, ?, ?, ?, ?, ?, ?)', [
        uuidv7(atMs),
        i.kind,
        i.dedup,
        atMs,
        JSON.stringify([...(i.orgIds ?? [])].sort()),
        JSON.stringify(i.counts ?? {}),
        i.detail,
      ]);
      const got = await this.db.get<Row>('SELECT * FROM incidents WHERE dedup = ?', [i.dedup]);
      return { incident: row(got!), created: r.changes > 0 };
    });
  }

  /** Not yet acknowledged by the cloud, oldest first. */
  open(): Promise<Incident[]> {
    return this.serial(async () => (await this.db.all<Row>('SELECT * FROM incidents WHERE acked_at_ms IS NULL ORDER BY seq')).map(row));
  }

  all(): Promise<Incident[]> {
    return this.serial(async () => (await this.db.all<Row>('SELECT * FROM incidents ORDER BY seq')).map(row));
  }

  markSent(ids: readonly string[]): Promise<void> {
    return this.serial(async () => {
      for (const id of ids) await this.db.run('UPDATE incidents SET sends = sends + 1 WHERE id = ?', [id]);
    });
  }

  /** IncidentAck: returns how many open records it closed (unknown or already closed ids count 0). */
  ack(ids: readonly string[]): Promise<number> {
    return this.serial(async () => {
      let n = 0;
      const now = Date.now();
      for (const id of ids) n += (await this.db.run('UPDATE incidents SET acked_at_ms = ? WHERE id = ? AND acked_at_ms IS NULL', [now, id])).changes;
      return n;
    });
  }

  meta(name: string): Promise<Buffer | undefined> {
    return this.serial(async () => (await this.db.get<{ value: Buffer }>('SELECT value FROM incident_meta WHERE name = ?', [name]))?.value);
  }

  setMeta(name: string, value: Buffer): Promise<void> {
    return this.serial(async () => {
      await this.db.run('INSERT INTO incident_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value', [name, value]);
    });
  }

  deleteMetaPrefix(prefix: string): Promise<void> {
    return this.serial(async () => {
      await this.db.run('DELETE FROM incident_meta WHERE substr(name, 1, length(?)) = ?', [prefix, prefix]);
    });
  }

  /** The random key of the key-file fingerprints (created once). */
  async fingerprintKey(): Promise<Buffer> {
    const k = await this.meta('fingerprint-key');
    if (k) return k;
    const fresh = randomBytes(32);
    await this.setMeta('fingerprint-key', fresh);
    return fresh;
  }

  close(): Promise<void> {
    return this.serial(() => this.db.close());
  }
}
