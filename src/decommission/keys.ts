/**
 * The last step of a decommission: the KEK (every sealed record and the purge
 * fingerprints become unreadable for good), then the identity key (the device
 * can sign nothing more). Each file is overwritten with random bytes, synced
 * and unlinked; what could not be done is reported, never claimed.
 */
import { constants as fsc } from 'node:fs';
import { open, stat, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Config } from '../config/schema.js';
import { describeError } from '../util/errors.js';
import { syncDir } from '../util/private-fs.js';
import { DEFAULT_IDENTITY_FILE, type KeyProvider } from '../vault/keys.js';
import type { KeyFate } from './state.js';

/** The identity key file of a file-provider vault (undefined for systemd credentials). */
export function identityFileOf(config: Config): string | undefined {
  const v = config.vault;
  if (v?.keyProvider !== 'file' || !v.kekFile) return undefined;
  return v.identityFile ?? join(dirname(v.kekFile), DEFAULT_IDENTITY_FILE);
}

/** Overwrite, sync, unlink. ENOENT: 'absent' (already gone: destroyed by the run a crash interrupted, or never there). */
export async function shredFile(path: string): Promise<KeyFate> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  const fh = await open(path, fsc.O_WRONLY | (fsc.O_NOFOLLOW ?? 0));
  try {
    await fh.write(randomBytes(Math.max(size, 32)), 0, Math.max(size, 32), 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await unlink(path);
  syncDir(dirname(path));
  return 'destroyed';
}

export async function destroyKeys(config: Config, provider: KeyProvider | undefined): Promise<{ kek: KeyFate; identity: KeyFate; errors: string[] }> {
  const errors: string[] = [];
  let kek: KeyFate = 'absent';
  if (provider && config.vault) {
    try {
      const kekPath = config.vault.kekFile;
      const existed = kekPath
        ? await stat(kekPath).then(
            () => true,
            () => false,
          )
        : true;
      await provider.zeroiseKek();
      kek = existed ? 'destroyed' : 'absent';
    } catch (err) {
      kek = 'not_destroyed';
      errors.push(`kek: ${describeError(err)}`);
    }
  }
  let identity: KeyFate = 'absent';
  const idPath = identityFileOf(config);
  if (idPath) {
    try {
      identity = await shredFile(idPath);
    } catch (err) {
      identity = 'not_destroyed';
      errors.push(`identity: ${describeError(err)}`);
    }
  } else if (config.vault) {
    identity = 'not_destroyed';
    errors.push('identity: systemd credentials are read-only; destroy the encrypted credential on the host');
  }
  return { kek, identity, errors };
}
