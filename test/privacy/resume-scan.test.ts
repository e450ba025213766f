/**
 * Issue 8 §1 "A resumed purge re-verifies nothing": a purge cut short after
 * erasing must, when resumed, scan for the fingerprints its first run stored
 * (not for samples re-taken from rows that are already gone), so a copy of
 * the org's ciphertext left on disk is found. Zero samples for non-zero
 * counts, lost or unusable fingerprints: `unverified`, never ok.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ReceiptDelivery } from '../../src/agent/privacy.js';
import { resultToJson } from '../../src/agent/results.js';
import { PurgeJournal } from '../../src/privacy/journal.js';
import { Purger } from '../../src/privacy/purge.js';
import type { ErasableStore, ErasureParticipant } from '../../src/privacy/types.js';
import { Sqlite } from '../../src/store/sqlite.js';
import { silentLogger } from '../../src/util/log.js';
import { device, enrol, open, queuedReceipts, type Device, type Opened } from './helpers.js';

let d: Device;
let o: Opened | undefined;
beforeEach(async () => {
  d = await device();
});
afterEach(async () => {
  await o?.close();
  o = undefined;
  await d.cleanup();
});

/** The raw sealed bytes of an org's rows, read from vault.db (what a disk image holds). */
async function ciphertexts(orgId: string): Promise<Buffer[]> {
  const db = await Sqlite.open(join(d.dataDir, 'vault.db'), { readonly: true });
  try {
    const rows = await db.all<{ b: Buffer }>('SELECT ct AS b FROM templates WHERE org_id = ? UNION ALL SELECT name_ct FROM subjects WHERE org_id = ?', [orgId, orgId]);
    return rows.map((r) => r.b);
  } finally {
    await db.close();
  }
}

/** The vault as the pipeline sees it, with a power cut at the first compaction (rows erased, nothing verified). */
function cutAtCompact(store: ErasableStore): ErasableStore {
  return new Proxy(store, {
    get(target, prop, recv) {
      if (prop === 'compact') return () => Promise.reject(Object.assign(new Error('power cut'), { code: 'POWER_CUT' }));
      const v = Reflect.get(target, prop, recv) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** Run a withdrawal that is cut after erasing; returns with everything closed, as after a crash. */
async function crashedWithdrawal(orgId: string): Promise<void> {
  const o1 = await open(d);
  try {
    const p = o1.privacy;
    const cut = new Purger({ store: cutAtCompact(p.vault), signer: p.identity, deviceId: d.config.device.id, journal: p.journal });
    await expect(cut.withdrawOrg(orgId)).rejects.toThrow('power cut');
    expect((await p.vault.pendingPurges()).map((j) => j.scope.orgId)).toEqual([orgId]);
    // The rows are gone already: re-sampling them now (what the old resume did) finds nothing.
    expect(await p.vault.sampleForErasure({ kind: 'org', orgId })).toEqual([]);
  } finally {
    await o1.close();
  }
}

function leaky(path: string): ErasureParticipant {
  return { name: 'stale-copy', eraseOrg: async () => ({ ok: true, counts: {} }), eraseSubject: async () => ({ ok: true, counts: {} }), scanFiles: () => [path] };
}

describe('a resumed purge', () => {
  it("scans for the first run's fingerprints: a copy of the org's ciphertext left on disk is reported, and the purge is not ok until it is gone", async () => {
    o = await open(d);
    await enrol(o.privacy, 'org-alpha', 20);
    await enrol(o.privacy, 'org-beta', 3);
    const stale = await ciphertexts('org-alpha');
    await o.close();
    o = undefined;
    // A stale copy (a backup, a file a sensor driver wrote) of the org's sealed rows.
    const copy = join(d.root, 'stale-copy.bin');
    await writeFile(copy, Buffer.concat([randomBytes(333), ...stale.slice(0, 3), randomBytes(100)]));

    await crashedWithdrawal('org-alpha');

    o = await open(d);
    o.privacy.purger.register(leaky(copy));
    const [first, ...more] = await o.privacy.purger.resumePending();
    expect(more).toEqual([]);
    expect(first!.ok).toBe(false);
    expect(first!.receipt).toMatchObject({ resumed: true, verification: 'failed', problem: 'FRAGMENTS_FOUND', scan: { ok: false } });
    expect(first!.receipt.scan.samples).toBeGreaterThanOrEqual(20 * 3);
    expect(first!.receipt.scan.hits).toBeGreaterThan(0);
    expect(first!.receipt.scan.hitsByLabel.ciphertext).toBeGreaterThan(0);
    expect(first!.queued).toBe(false);
    expect(await o.privacy.vault.pendingPurges()).toHaveLength(1);
    expect(await o.privacy.journal.pendingReceipts()).toEqual([]);

    // Once the copy is gone the same evidence verifies, and exactly one receipt is queued.
    await rm(copy);
    const [second] = await o.privacy.purger.resumePending();
    expect(second!.receipt).toMatchObject({ ok: true, verification: 'verified', resumed: true, scan: { hits: 0, samples: first!.receipt.scan.samples } });
    expect(second!.receipt.counts).toMatchObject({ dataKeys: 1, subjects: 20, templates: 20 });
    expect(await o.privacy.vault.pendingPurges()).toEqual([]);
    const delivery = new ReceiptDelivery({
      journal: o.privacy.journal,
      outbox: o.outbox,
      deviceId: d.config.device.id,
      identity: o.privacy.identity,
      enqueue: async (org, r) => void (await o!.outbox.enqueueResult(org, resultToJson(r))),
      logger: silentLogger(),
    });
    expect(await delivery.flushAll()).toBe(1);
    expect(await delivery.flushAll()).toBe(0);
    const receipts = await queuedReceipts(o.outbox);
    expect(receipts.map((r) => [r.orgId, r.receipt.receiptId])).toEqual([['org-alpha', second!.receipt.receiptId]]);
    expect((await o.privacy.vault.decryptTemplates('org-beta')).templates).toHaveLength(3);
  });

  it('the purge journal holds none of the sampled bytes: only keyed fingerprints', async () => {
    o = await open(d);
    await enrol(o.privacy, 'org-alpha', 10);
    const stale = await ciphertexts('org-alpha');
    const ids = await o.privacy.vault.subjectIds('org-alpha');
    await o.close();
    o = undefined;
    await crashedWithdrawal('org-alpha');
    const journalBytes = Buffer.concat(await Promise.all(['', '-wal'].map((s) => readFile(join(d.dataDir, `purge-journal.db${s}`)).catch(() => Buffer.alloc(0)))));
    expect(journalBytes.length).toBeGreaterThan(0);
    // Positive control: the same search finds the ciphertext in the copy we make of it.
    expect(Buffer.concat(stale).indexOf(stale[4]!.subarray(10, 26))).toBeGreaterThanOrEqual(0);
    for (const ct of stale) for (const at of [0, 10, ct.length - 16]) expect(journalBytes.indexOf(ct.subarray(at, at + 16))).toBe(-1);
    for (const id of ids) expect(journalBytes.indexOf(Buffer.from(id))).toBe(-1);
  });

  it('with fingerprints under another key (a different KEK) the resumed purge is unverified, not ok', async () => {
    o = await open(d);
    await enrol(o.privacy, 'org-alpha', 5);
    await o.close();
    o = undefined;
    await crashedWithdrawal('org-alpha');
    o = await open(d);
    // Same journal file, wrong root key.
    const wrong = await PurgeJournal.open({ path: join(d.dataDir, 'purge-journal.db'), root: randomBytes(32) });
    try {
      const purger = new Purger({ store: o.privacy.vault, signer: o.privacy.identity, deviceId: 'dev', journal: wrong });
      const [r] = await purger.resumePending();
      expect(r!.receipt).toMatchObject({ ok: false, verification: 'unverified', problem: 'FINGERPRINT_KEY_MISMATCH', scan: { hits: 0 } });
      expect(await o.privacy.vault.pendingPurges()).toHaveLength(1);
    } finally {
      await wrong.close();
    }
  });

  it('damaged fingerprints make the resumed purge unverified (FINGERPRINTS_CORRUPT), never a shorter list that passes', async () => {
    o = await open(d);
    await enrol(o.privacy, 'org-alpha', 5);
    await o.close();
    o = undefined;
    await crashedWithdrawal('org-alpha');
    const db = await Sqlite.open(join(d.dataDir, 'purge-journal.db'));
    await db.run('UPDATE purge_fingerprints SET entries = substr(entries, 1, length(entries) - 5)');
    await db.close();
    o = await open(d);
    const [r] = await o.privacy.purger.resumePending();
    expect(r!.receipt).toMatchObject({ ok: false, verification: 'unverified', problem: 'FINGERPRINTS_CORRUPT' });
  });
});

describe('zero samples', () => {
  it('rows erased with zero samples is unverified, never ok', async () => {
    o = await open(d);
    await enrol(o.privacy, 'org-alpha', 4);
    const vault = o.privacy.vault;
    // A store whose sampling silently returns nothing (a bug, a schema change it does not know).
    const blind = new Proxy(vault, {
      get(target, prop, recv) {
        if (prop === 'sampleForErasure') return async () => [];
        const v = Reflect.get(target, prop, recv) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const purger = new Purger({ store: blind, signer: o.privacy.identity, deviceId: 'dev', journal: o.privacy.journal });
    const r = await purger.withdrawOrg('org-alpha');
    expect(r.receipt.counts).toMatchObject({ templates: 4, subjects: 4 });
    expect(r.receipt).toMatchObject({ ok: false, verification: 'unverified', problem: 'NO_SAMPLES', scan: { samples: 0, hits: 0 } });
    expect(r.queued).toBe(false);
    expect(await vault.pendingPurges()).toHaveLength(1);
  });

  it('an org with nothing to erase has nothing to verify: ok with zero samples and zero counts', async () => {
    o = await open(d);
    const r = await o.privacy.purger.withdrawOrg('org-never');
    expect(r.receipt).toMatchObject({ ok: true, verification: 'verified', scan: { samples: 0 } });
    expect(Object.values(r.receipt.counts).every((v) => v === 0)).toBe(true);
  });
});
