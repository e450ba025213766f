/**
 * The command journal in an erasure (src/link/commands/erasure.ts): results of
 * subject-bearing commands echo subject ids, so an org withdrawal or an account
 * closure takes the journal rows with them — from the real commands.db file,
 * byte-scanned afterwards — while a result not yet queued for delivery stays,
 * and replay protection (counter, nonces) is untouched.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { commandJournalErasureParticipant } from '../../src/link/commands/erasure.js';
import { ReplayStore } from '../../src/link/commands/store.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** commands.db with one finished command per entry; `queued: false` leaves its result undelivered. */
async function journalWith(rows: { orgId: string; kind: string; subject: string; queued?: boolean }[]): Promise<{ dir: string; store: ReplayStore; nonces: Uint8Array[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-cmdjournal-'));
  dirs.push(dir);
  const store = await ReplayStore.open(join(dir, 'commands.db'));
  const nonces: Uint8Array[] = [];
  let counter = 0;
  for (const r of rows) {
    counter++;
    const nonce = randomBytes(16);
    nonces.push(nonce);
    await store.accept({ counter, nonce, keepNonceUntilMs: Date.now() + 3_600_000, orgId: r.orgId, kind: r.kind, nowMs: Date.now() });
    await store.finish(counter, 1, `window armed for ${r.subject}`, Date.now(), JSON.stringify({ reason: `window armed for ${r.subject}` }));
    if (r.queued !== false) await store.markQueued(counter);
  }
  return { dir, store, nonces };
}

const fileHas = (dir: string, text: string): boolean =>
  ['commands.db', 'commands.db-wal'].some((f) => {
    try {
      return readFileSync(join(dir, f)).includes(Buffer.from(text));
    } catch {
      return false;
    }
  });

describe('the command journal as an erasure participant', () => {
  it('org withdrawal: every delivered row of the org goes (not a byte of its subject ids left), the other org and replay protection stay', async () => {
    const { dir, store, nonces } = await journalWith([
      { orgId: 'acme', kind: 'subjectUpsert', subject: 'sub-ana-7f3c' },
      { orgId: 'acme', kind: 'rosterSync', subject: 'sub-bo-91aa' },
      { orgId: 'other', kind: 'subjectUpsert', subject: 'sub-cy-5d20' },
    ]);
    try {
      // The scan below sees an id where there is one (a check that cannot fail proves nothing).
      expect(fileHas(dir, 'sub-ana-7f3c')).toBe(true);
      const report = await commandJournalErasureParticipant(dir).eraseOrg('acme');
      expect(report).toMatchObject({ ok: true, counts: { commandRows: 2 } });
      expect(fileHas(dir, 'sub-ana-7f3c')).toBe(false);
      expect(fileHas(dir, 'sub-bo-91aa')).toBe(false);
      expect(fileHas(dir, 'sub-cy-5d20')).toBe(true);
      expect(await store.lastCounter()).toBe(3);
      for (const n of nonces) expect(await store.nonceSeen(n)).toBe(true);
      // Idempotent: a purge resumed after a power cut calls it again.
      expect(await commandJournalErasureParticipant(dir).eraseOrg('acme')).toMatchObject({ ok: true, counts: { commandRows: 0 } });
    } finally {
      await store.close();
    }
  });

  it('account closure: the org’s subject-bearing rows go; a result not yet queued for delivery stays until it is delivered', async () => {
    const { dir, store } = await journalWith([
      { orgId: 'acme', kind: 'subjectUpsert', subject: 'sub-ana-7f3c' },
      { orgId: 'acme', kind: 'subjectErase', subject: 'sub-ana-7f3c', queued: false },
      { orgId: 'acme', kind: 'deviceConfig', subject: 'none-at-all' },
    ]);
    try {
      const report = await commandJournalErasureParticipant(dir).eraseSubject('acme', 'sub-ana-7f3c');
      expect(report).toMatchObject({ ok: true, counts: { commandRows: 1 } });
      expect((await store.unqueued()).map((e) => e.counter)).toEqual([2]);
      expect((await store.journal()).map((e) => e.kind).sort()).toEqual(['deviceConfig', 'subjectErase']);
    } finally {
      await store.close();
    }
  });

  it('no commands.db (a device that never took a command): nothing to do, ok', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-cmdjournal-'));
    dirs.push(dir);
    expect(await commandJournalErasureParticipant(dir).eraseOrg('acme')).toEqual({ ok: true, counts: { commandRows: 0 } });
  });
});
