/**
 * Issue 9 §2 "Only served organisations":
 * - the list itself: config default, persisted file that wins, atomic writes
 *   that never follow a symlink, a damaged file refused (never a silent
 *   fall-back to the config);
 * - the intake: a validly signed command for an org the device does not serve
 *   is REFUSED org_not_served, its handler never runs, nothing is persisted,
 *   and the refusal goes to the operating org, not to the unserved one;
 *   ServedOrgsSet only from the operating org; OrgWithdraw still reaches an
 *   org that is no longer served but whose data is held;
 * - lookups: the served view of a real vault finds cards only in served orgs,
 *   and the vault's org scan lists only served orgs.
 */
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SERVED_ORGS_FILE, ServedOrgs, servedOrgsHandlers, servedVaultView } from '../../src/agent/served-orgs.js';
import { Reason } from '../../src/link/commands/index.js';
import { topic } from '../../src/link/topics.js';
import { ResultCode } from '../../src/proto/index.js';
import { openVault, sandbox } from '../vault/helpers.js';
import { bench, DEVICE, ORG, type Bench } from './helpers.js';

const dirs: string[] = [];
const benches: Bench[] = [];
afterEach(async () => {
  for (const b of benches.splice(0)) await b.cleanup();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'tbx-served-'));
  dirs.push(d);
  return d;
};

describe('the served list', () => {
  it('defaults to the configured list; a set list is persisted 0600 and wins over the config after a restart', () => {
    const dir = tmp();
    const a = ServedOrgs.load({ dataDir: dir, configured: ['org-a'] });
    expect(a.snapshot()).toEqual({ served: ['org-a'], retired: [] });
    expect(a.source).toBe('config');
    expect(existsSync(join(dir, SERVED_ORGS_FILE))).toBe(false);
    const change = a.set(['org-a', 'org-b', 'org-b'], 7);
    expect(change).toMatchObject({ served: ['org-a', 'org-b'], added: ['org-b'], removed: [] });
    expect(statSync(join(dir, SERVED_ORGS_FILE)).mode & 0o777).toBe(0o600);
    const b = ServedOrgs.load({ dataDir: dir, configured: ['org-a'] });
    expect(b.source).toBe('file');
    expect(b.snapshot()).toEqual({ served: ['org-a', 'org-b'], retired: [] });
    // Removing an org retires it: not served, still held, until an OrgWithdraw.
    expect(b.set(['org-b'], 8)).toMatchObject({ removed: ['org-a'], retired: ['org-a'] });
    expect(b.has('org-a')).toBe(false);
    expect(b.holds('org-a')).toBe(true);
    b.withdrawn('org-a');
    expect(ServedOrgs.load({ dataDir: dir, configured: ['x'] }).snapshot()).toEqual({ served: ['org-b'], retired: [] });
  });

  it('refuses an empty or bad list and changes nothing', () => {
    const dir = tmp();
    const s = ServedOrgs.load({ dataDir: dir, configured: ['org-a'] });
    for (const bad of [[], ['a/b'], ['#'], [''], [42], Array.from({ length: 65 }, (_, i) => `o${i}`)]) {
      expect(() => s.set(bad, 1)).toThrow(expect.objectContaining({ code: 'SERVED_ORGS_INVALID' }) as Error);
    }
    expect(s.snapshot().served).toEqual(['org-a']);
    expect(existsSync(join(dir, SERVED_ORGS_FILE))).toBe(false);
  });

  it('a zero-length, truncated or foreign file stops the start (SERVED_ORGS_CORRUPT); it is left as it was', () => {
    for (const content of ['', '{"version":1,"served":["org-a"', '{"version":2,"served":["a"],"retired":[]}', '{"version":1,"served":[],"retired":[]}', '{"version":1,"served":["a/b"],"retired":[]}']) {
      const dir = tmp();
      writeFileSync(join(dir, SERVED_ORGS_FILE), content);
      expect(() => ServedOrgs.load({ dataDir: dir, configured: ['org-a'] })).toThrow(expect.objectContaining({ code: 'SERVED_ORGS_CORRUPT' }) as Error);
      expect(readFileSync(join(dir, SERVED_ORGS_FILE), 'utf8')).toBe(content);
    }
  });

  it('writes never follow a symlink planted at the temp name', () => {
    const dir = tmp();
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious');
    symlinkSync(victim, join(dir, `${SERVED_ORGS_FILE}.${process.pid}.tmp`));
    const s = ServedOrgs.load({ dataDir: dir, configured: ['org-a'] });
    s.set(['org-b'], 1);
    expect(readFileSync(victim, 'utf8')).toBe('precious');
    expect(lstatSync(join(dir, SERVED_ORGS_FILE)).isSymbolicLink()).toBe(false);
  });

  it('orgs with data in the vault that are not served are retired at start, and said so', () => {
    const dir = tmp();
    const s = ServedOrgs.load({ dataDir: dir, configured: ['org-a'] });
    s.adoptHeld(['org-a', 'stray']);
    expect(ServedOrgs.load({ dataDir: dir, configured: ['org-a'] }).snapshot()).toEqual({ served: ['org-a'], retired: ['stray'] });
  });
});

describe('the intake refuses commands for organisations not served', () => {
  async function served(list: string[]) {
    const dir = tmp();
    const s = ServedOrgs.load({ dataDir: dir, configured: list });
    const b = await bench();
    benches.push(b);
    await b.reopen({ orgPolicy: { serves: (o) => s.has(o), holds: (o) => s.holds(o), operatorOrgId: ORG }, handlers: servedOrgsHandlers(b.handlers, s) });
    return { b, s };
  }

  it('a validly signed SubjectUpsert for another org: REFUSED org_not_served, no handler, nothing persisted, answered on the operating org only', async () => {
    const { b } = await served([ORG]);
    const before = await b.state();
    const cmd = b.signer.sign({ deviceId: DEVICE, orgId: 'org-x', subjectUpsert: { subjectId: 's-1', displayName: 'Someone' } });
    const r = await b.intake.handle(topic('org-x', DEVICE, 'cmd'), cmd);
    expect({ code: r.code, reason: r.reason }).toEqual({ code: ResultCode.RESULT_CODE_REFUSED, reason: Reason.orgNotServed });
    expect(b.handlers.calls).toEqual([]);
    expect(await b.state()).toEqual(before);
    expect(b.published.map((p) => p.orgId)).toEqual([ORG]);
    // The same command is still refused (it did not consume a counter), and every other kind too.
    for (const body of [{ subjectErase: { subjectId: 's' } }, { rosterSync: { subjectIds: [] } }, { configPatch: { retentionDays: 1 } }, { ping: {} }, { orgWithdraw: {} }]) {
      const x = await b.intake.handle(topic('org-x', DEVICE, 'cmd'), b.signer.sign({ deviceId: DEVICE, orgId: 'org-x', ...body }));
      expect(x.reason).toBe(Reason.orgNotServed);
    }
    expect(b.handlers.calls).toEqual([]);
    expect(await b.state()).toEqual(before);
  });

  it('ServedOrgsSet from the operating org changes the list (its own result); from any other org it is refused', async () => {
    const { b, s } = await served([ORG, 'org-b']);
    const refused = await b.intake.handle(topic('org-b', DEVICE, 'cmd'), b.signer.sign({ deviceId: DEVICE, orgId: 'org-b', servedOrgsSet: { orgIds: ['org-b', 'org-evil'] } }));
    expect(refused.reason).toBe(Reason.notOperatorOrg);
    expect(s.snapshot().served).toEqual([ORG, 'org-b']);

    const ok = await b.intake.handle(topic(ORG, DEVICE, 'cmd'), b.signer.sign({ deviceId: DEVICE, orgId: ORG, servedOrgsSet: { orgIds: [ORG, 'org-c'] } }));
    expect(ok).toMatchObject({ code: ResultCode.RESULT_CODE_OK, reason: 'served_orgs_set', servedOrgs: { served: [ORG, 'org-c'], retired: ['org-b'] } });
    expect(s.has('org-b')).toBe(false);
    expect(s.has('org-c')).toBe(true);

    const empty = await b.intake.handle(topic(ORG, DEVICE, 'cmd'), b.signer.sign({ deviceId: DEVICE, orgId: ORG, servedOrgsSet: { orgIds: [] } }));
    expect({ code: empty.code, reason: empty.reason }).toEqual({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'served_orgs_empty' });
    expect(s.snapshot().served).toEqual([ORG, 'org-c']);
  });

  it('a retired org: refused for everything but OrgWithdraw, which erases it and ends its retirement', async () => {
    const { b, s } = await served([ORG, 'org-b']);
    s.set([ORG], 1);
    const upsert = await b.intake.handle(topic('org-b', DEVICE, 'cmd'), b.signer.sign({ deviceId: DEVICE, orgId: 'org-b', subjectUpsert: { subjectId: 's' } }));
    expect(upsert.reason).toBe(Reason.orgNotServed);
    const w = await b.intake.handle(topic('org-b', DEVICE, 'cmd'), b.signer.sign({ deviceId: DEVICE, orgId: 'org-b', orgWithdraw: {} }));
    expect(w.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(b.handlers.calls.map((c) => [c.kind, c.orgId])).toEqual([['orgWithdraw', 'org-b']]);
    // The withdrawal receipt goes back to the withdrawn org; it is held no more.
    expect(b.published.at(-1)!.orgId).toBe('org-b');
    expect(s.holds('org-b')).toBe(false);
    const again = await b.intake.handle(topic('org-b', DEVICE, 'cmd'), b.signer.sign({ deviceId: DEVICE, orgId: 'org-b', orgWithdraw: {} }));
    expect(again.reason).toBe(Reason.orgNotServed);
  });

  it('garbage on an unserved org’s cmd topic gets no result anywhere', async () => {
    const { b } = await served([ORG]);
    await b.intake.handle(topic('org-x', DEVICE, 'cmd'), Buffer.from('garbage'));
    expect(b.published).toEqual([]);
    expect(b.intake.rejectionStats()).toMatchObject({ unrouted: 1, sent: 0 });
  });
});

describe('lookups search served organisations only', () => {
  it('card lookups and the org scan of a real vault see only served orgs, following changes at once', async () => {
    const sb = await sandbox();
    const vault = await openVault(sb);
    try {
      for (const org of ['org-a', 'org-b']) {
        await vault.upsertSubject(org, { subjectId: `s-${org}`, displayName: `Person of ${org}`, minor: false, consents: [] });
        await vault.putCredential(org, 'card', '4000123456', `s-${org}`);
      }
      const dir = tmp();
      const s = ServedOrgs.load({ dataDir: dir, configured: ['org-a'] });
      const view = servedVaultView(vault, s);
      // The unrestricted vault finds both; the view only the served one.
      expect((await vault.identifyCredential('card', '4000123456')).map((h) => h.orgId)).toEqual(['org-a', 'org-b']);
      expect(await view.identifyCredential('card', '4000123456')).toEqual([{ orgId: 'org-a', subjectId: 's-org-a' }]);
      expect(await view.orgs()).toEqual(['org-a']);
      s.set(['org-b'], 2);
      expect(await view.identifyCredential('card', '4000123456')).toEqual([{ orgId: 'org-b', subjectId: 's-org-b' }]);
      expect(await view.orgs()).toEqual(['org-b']);
      // Everything else is the vault itself (bound, private fields intact).
      expect((await view.getSubject('org-a', 's-org-a')).displayName).toBe('Person of org-a');
    } finally {
      await vault.close();
      await sb.cleanup();
    }
  });
});
