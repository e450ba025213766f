/**
 * The purge journal is the agent's own file, and so is input: a damaged one
 * stops start-up with a clear code and is left as it was (it may hold the
 * only copy of a receipt); an entry orphaned by a crash between the journal
 * write and the vault's is dropped without erasing anything.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openPrivacy } from '../../src/agent/privacy.js';
import { Outbox } from '../../src/outbox/outbox.js';
import { silentLogger } from '../../src/util/log.js';
import { device, enrol, open, type Device } from './helpers.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('purge journal', () => {
  it('a damaged purge-journal.db stops start-up with STORAGE_CORRUPT and is left untouched', async () => {
    const d: Device = await device();
    cleanups.push(() => d.cleanup());
    await mkdir(d.dataDir, { recursive: true, mode: 0o700 });
    const garbage = Buffer.concat([Buffer.from('not a database'), randomBytes(5000)]);
    await writeFile(join(d.dataDir, 'purge-journal.db'), garbage, { mode: 0o600 });
    const outbox = await Outbox.open({ path: join(d.dataDir, 'outbox.db'), capacity: 1000 });
    cleanups.push(() => outbox.close());
    await expect(openPrivacy({ config: d.config, outbox, logger: silentLogger() })).rejects.toMatchObject({ code: 'STORAGE_CORRUPT' });
    expect((await readFile(join(d.dataDir, 'purge-journal.db'))).equals(garbage)).toBe(true);
  });

  it('fingerprints recorded for a purge the vault never journalled (crash between the writes) are dropped; nothing is erased', async () => {
    const d: Device = await device();
    cleanups.push(() => d.cleanup());
    let o = await open(d);
    await enrol(o.privacy, 'org-o', 4);
    await o.privacy.journal.record('job-orphan', 'org-o', await o.privacy.vault.sampleForErasure({ kind: 'org', orgId: 'org-o' }));
    await o.close();
    o = await open(d);
    cleanups.push(() => o.close());
    expect(await o.privacy.journal.evidence('job-orphan')).toMatchObject({ state: 'sampled' });
    expect(await o.privacy.purger.resumePending()).toEqual([]);
    expect(await o.privacy.journal.evidence('job-orphan')).toEqual({ state: 'missing' });
    expect((await o.privacy.vault.decryptTemplates('org-o')).templates).toHaveLength(4);
  });
});
