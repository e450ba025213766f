/**
 * Key files watched for change: at every start (before the vault opens, so a
 * vanished KEK is recorded even though the start then fails) and at every
 * check while the agent runs, a keyed fingerprint (HMAC-SHA-256 under a
 * random key kept in incidents.db) of each key file is compared with the one
 * recorded before. A different one is KEY_FILE_CHANGED, a missing file
 * KEY_FILE_MISSING; the new state becomes the reference, so each change is
 * one record. `tallybox provision` resets the references (new keys are
 * expected then). The fingerprint says nothing about the key: it is a MAC
 * under a key that is not derived from it.
 */
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { identityFileOf } from '../decommission/keys.js';
import type { IncidentStore } from './store.js';

const PREFIX = 'keyprint:';

export function keyFilesOf(config: Config): Array<{ name: 'kek' | 'identity'; path: string }> {
  const out: Array<{ name: 'kek' | 'identity'; path: string }> = [];
  if (config.vault?.keyProvider === 'file' && config.vault.kekFile) out.push({ name: 'kek', path: config.vault.kekFile });
  const id = identityFileOf(config);
  if (id) out.push({ name: 'identity', path: id });
  return out;
}

async function printOf(key: Buffer, path: string): Promise<string> {
  try {
    return createHmac('sha256', key)
      .update(await readFile(path))
      .digest('hex')
      .slice(0, 32);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Unreadable for another reason (permissions) is not "missing": the key provider reports that itself.
    return code === 'ENOENT' ? 'missing' : `unreadable:${code ?? 'ERROR'}`;
  }
}

/** Compare with the recorded fingerprints; record an incident per change. Returns how many were recorded. */
export async function checkKeyFiles(store: IncidentStore, config: Config, destroyedByUs: readonly string[] = []): Promise<number> {
  const key = await store.fingerprintKey();
  let n = 0;
  for (const f of keyFilesOf(config)) {
    const now = await printOf(key, f.path);
    if (now.startsWith('unreadable:')) continue;
    const before = (await store.meta(PREFIX + f.name))?.toString('utf8');
    if (before === undefined) {
      // First sight (just provisioned): the reference. A key that is missing at first sight is the provider's error to report.
      if (now !== 'missing') await store.setMeta(PREFIX + f.name, Buffer.from(now));
      continue;
    }
    if (before === now) continue;
    if (now === 'missing' && destroyedByUs.includes(f.name)) {
      await store.setMeta(PREFIX + f.name, Buffer.from(now));
      continue;
    }
    const missing = now === 'missing';
    const r = await store.record({
      kind: missing ? 'KEY_FILE_MISSING' : 'KEY_FILE_CHANGED',
      dedup: `KEY_FILE:${f.name}:${before}->${now}`,
      counts: {},
      detail: missing ? `the ${f.name} key file recorded earlier is gone` : `the ${f.name} key file differs from the one recorded earlier`,
    });
    if (r.created) n++;
    await store.setMeta(PREFIX + f.name, Buffer.from(now));
  }
  return n;
}

/** New keys are expected: forget the references (tallybox provision). */
export async function resetKeyFiles(store: IncidentStore): Promise<void> {
  await store.deleteMetaPrefix(PREFIX);
}

/** `tallybox provision`: new keys are expected, in the data directory's incident store if there is one. */
export async function resetKeyFilesIn(dataDir: string): Promise<void> {
  const { existsSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { INCIDENTS_FILE, IncidentStore } = await import('./store.js');
  if (!existsSync(join(dataDir, INCIDENTS_FILE))) return;
  const store = await IncidentStore.open(dataDir);
  try {
    await resetKeyFiles(store);
  } finally {
    await store.close();
  }
}
