/**
 * Issue 8 §3 "Time that cannot lie", for retention: nothing is erased on an
 * unsynchronised clock; a wall clock stepped years ahead (so every template
 * looks stale) erases at most `maxFraction` of the templates in one run, and
 * more only when a later run, at least `confirmAfterMs` of monotonic time
 * later and still synchronised, finds the same subjects stale; a clock
 * stepped back before then erases nothing.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { scheduleRetention } from '../../src/agent/privacy.js';
import { PurgeJournal } from '../../src/privacy/journal.js';
import { Purger } from '../../src/privacy/purge.js';
import { RetentionGuard, runRetention } from '../../src/privacy/retention.js';
import { silentLogger } from '../../src/util/log.js';
import type { Vault } from '../../src/vault/vault.js';
import { openVault, sandbox, type Sandbox } from '../vault/helpers.js';
import { waitUntil } from '../helpers/ports.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 5, 1);
const TEN_YEARS = 3652 * DAY;

let sb: Sandbox;
let vault: Vault;
let journal: PurgeJournal;
let purger: Purger;
let wall: number;
let mono: number;
let guard: RetentionGuard;
let stale: string;

beforeEach(async () => {
  sb = await sandbox();
  wall = T0 - 400 * DAY;
  vault = await openVault(sb, () => wall);
  journal = await PurgeJournal.open({ path: join(sb.dataDir, 'purge-journal.db'), root: randomBytes(32) });
  purger = new Purger({ store: vault, signer: vault.identity, deviceId: 'dev-r', journal });
  const ids = Array.from({ length: 30 }, (_, i) => `subj-${String(i).padStart(2, '0')}`);
  await vault.upsertSubjects(
    'org-r',
    ids.map((subjectId) => ({ subjectId, displayName: `P ${subjectId}`, minor: false, consents: [{ kind: 'biometric' as const }] })),
  );
  await vault.enrolTemplates(
    'org-r',
    ids.map((subjectId) => ({ subjectId, modality: 'fingerprint' as const, slot: 0, bytes: randomBytes(300) })),
  );
  // Everyone but one was seen today; subj-00 was last seen 400 days ago.
  wall = T0;
  for (const id of ids.slice(1)) await vault.touchSubject('org-r', id);
  stale = ids[0]!;
  mono = 1_000_000;
  guard = new RetentionGuard({ maxFraction: 0.1, confirmAfterMs: 24 * HOUR, monotonic: () => mono });
});
afterEach(async () => {
  await journal.close();
  await vault.close();
  await sb.cleanup();
});

const templates = async () => (await vault.listTemplates('org-r')).length;
const run = (nowMs: number, clockSynced: boolean) => runRetention({ source: vault, purger, periodDays: 365, nowMs, clockSynced, guard });

describe('retention and the clock', () => {
  it('erases nothing on an unsynchronised clock, even ten years ahead', async () => {
    expect(await run(T0 + TEN_YEARS, false)).toMatchObject({ status: 'skipped', reason: 'CLOCK_UNSYNCED' });
    expect(await run(T0, false)).toMatchObject({ status: 'skipped' });
    expect(await templates()).toBe(30);
  });

  it('on a synchronised clock, erases the genuinely stale within the fraction at once', async () => {
    const r = await run(T0, true);
    expect(r.status).toBe('erased');
    expect(r.outcomes.map((o) => [o.ok, o.receipt.kind, o.receipt.counts.templates])).toEqual([[true, 'retention', 1]]);
    expect((await vault.listTemplates('org-r')).some((t) => t.subjectId === stale)).toBe(false);
    expect(await templates()).toBe(29);
  });

  it('a forward jump of ten years erases at most the fraction; a step back before confirmation erases nothing', async () => {
    const held = await run(T0 + TEN_YEARS, true);
    expect(held).toMatchObject({ status: 'held', candidates: 30, total: 30 });
    expect(await templates()).toBe(30); // more than 10 % may not go in one run: nothing went
    expect(guard.hold).toMatchObject({ templates: 30, total: 30 });

    mono += 1 * HOUR; // too soon to confirm, whatever the wall clock says
    expect(await run(T0 + TEN_YEARS + 30 * DAY, true)).toMatchObject({ status: 'held' });
    expect(await templates()).toBe(30);

    mono += 24 * HOUR; // NTP has stepped the clock back to the truth by now
    const back = await run(T0 + 1 * DAY, true);
    expect(back).toMatchObject({ status: 'erased', confirmed: false });
    expect(back.outcomes.map((o) => o.receipt.counts.templates)).toEqual([1]); // only the one really stale
    expect(guard.hold).toBeUndefined();
    expect(await templates()).toBe(29);
  });

  it('a large stale set is erased only when a run at least N monotonic hours later, still synchronised, finds it again', async () => {
    expect(await run(T0 + TEN_YEARS, true)).toMatchObject({ status: 'held' });
    mono += 12 * HOUR;
    // The clock loses sync in between: the wait starts again.
    expect(await run(T0 + TEN_YEARS, false)).toMatchObject({ status: 'skipped' });
    expect(guard.hold).toBeUndefined();
    mono += 13 * HOUR;
    expect(await run(T0 + TEN_YEARS, true)).toMatchObject({ status: 'held' });
    expect(await templates()).toBe(30);
    mono += 24 * HOUR;
    const confirmed = await run(T0 + TEN_YEARS + DAY, true);
    expect(confirmed).toMatchObject({ status: 'erased', confirmed: true });
    expect(confirmed.outcomes.map((o) => [o.ok, o.receipt.counts.templates])).toEqual([[true, 30]]);
    expect(await templates()).toBe(0);
    expect((await vault.getSubject('org-r', stale)).displayName).toBe(`P ${stale}`); // identity stays
  });

  it("the agent's sweep asks the clock: unsynchronised, it erases nothing", async () => {
    wall = T0 + TEN_YEARS;
    let changes = 0;
    const services = { vault, purger, journal, identity: vault.identity, keyProvider: sb.provider, onOutcome: () => undefined };
    const sched = scheduleRetention({
      services,
      periodDays: () => 365,
      clockSynced: () => false,
      guard: new RetentionGuard({ maxFraction: 1 }),
      logger: silentLogger(),
      onChange: () => void changes++,
      firstMs: 10,
    });
    try {
      await waitUntil(() => changes > 0, 5000, 'first sweep');
      expect(await templates()).toBe(30);
    } finally {
      sched.stop();
    }
  });
});
