/**
 * Shared set-up for vault and erasure tests: real key files in a temp dir,
 * a real vault.db, and an independent byte scanner (plain Buffer.indexOf, so
 * the tests do not trust the scanner under test).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileKeyProvider, provisionKeyFiles, type ProvisionedKeys } from '../../src/vault/keys.js';
import { Vault } from '../../src/vault/vault.js';

export interface Sandbox {
  root: string;
  dataDir: string;
  keysDir: string;
  keys: ProvisionedKeys;
  provider: FileKeyProvider;
  cleanup(): Promise<void>;
}

export async function sandbox(): Promise<Sandbox> {
  const root = await mkdtemp(join(tmpdir(), 'tallybox-vault-'));
  const dataDir = join(root, 'data');
  const keysDir = join(root, 'keys');
  const keys = await provisionKeyFiles({ kekPath: join(keysDir, 'tallybox.kek'), dataDir });
  return {
    root,
    dataDir,
    keysDir,
    keys,
    provider: new FileKeyProvider({ kekPath: keys.kekPath }),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}

export function openVault(sb: Sandbox, clock?: () => number): Promise<Vault> {
  return Vault.open({ dataDir: sb.dataDir, keyProvider: sb.provider, ...(clock ? { clock } : {}) });
}

/** Every file SQLite may have written for the vault. */
export function dbFiles(sb: Sandbox): string[] {
  const db = join(sb.dataDir, 'vault.db');
  return [db, `${db}-wal`, `${db}-shm`, `${db}-journal`];
}

/** Read every existing file; concatenation is fine since we only look for needles. */
export async function readAll(paths: readonly string[]): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (const p of paths) {
    try {
      out.push(await readFile(p));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return out;
}

/** Needles found in any of the files (by index in `needles`). */
export async function findNeedles(paths: readonly string[], needles: readonly (Buffer | string)[]): Promise<number[]> {
  const bufs = await readAll(paths);
  const found: number[] = [];
  needles.forEach((n, i) => {
    const b = typeof n === 'string' ? Buffer.from(n, 'utf8') : n;
    if (bufs.some((buf) => buf.indexOf(b) !== -1)) found.push(i);
  });
  return found;
}
