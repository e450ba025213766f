/**
 * Issue 8 §1 (swallowed errors) and §5: `tallybox purge --org TYPO --yes`
 * used to exit 0 with "purged":true and a signed receipt for an org that
 * never existed. Now: ORG_UNKNOWN, non-zero exit, nothing erased, no
 * receipt. And `purge` without --yes and without a terminal is a usage
 * error (2), before anything is opened.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/agent-process.js';
import { device, enrol, open, queuedReceipts, type Device } from './helpers.js';

let d: Device;
beforeAll(async () => {
  d = await device();
  const o = await open(d);
  await enrol(o.privacy, 'org-real', 3);
  await o.close();
});
afterAll(() => d.cleanup());

const purge = (org: string, ...extra: string[]) => spawnSync(process.execPath, [CLI, 'purge', '--org', org, '--config', d.configFile, ...extra], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });

async function state(): Promise<{ orgs: string[]; receipts: string[]; pending: number }> {
  const o = await open(d);
  try {
    return { orgs: await o.privacy.vault.orgs(), receipts: (await queuedReceipts(o.outbox)).map((r) => r.orgId), pending: (await o.privacy.vault.pendingPurges()).length };
  } finally {
    await o.close();
  }
}

describe('tallybox purge', () => {
  it('refuses an org the device holds nothing of: ORG_UNKNOWN, exit 1, no receipt, nothing changed', async () => {
    const r = purge('org-reel', '--yes');
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^tallybox: ORG_UNKNOWN: this device holds nothing of organisation "org-reel".*Organisations on this device: org-real/m);
    expect(await state()).toEqual({ orgs: ['org-real'], receipts: [], pending: 0 });
  });

  it('without --yes and without a terminal: a usage error (exit 2), nothing changed', async () => {
    const r = purge('org-real');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^tallybox: .*pass --yes/);
    expect(await state()).toEqual({ orgs: ['org-real'], receipts: [], pending: 0 });
  });

  it('a real org is erased with exactly one receipt queued', async () => {
    const r = purge('org-real', '--yes');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toMatchObject({ purged: true, verification: 'verified', orgId: 'org-real', scanHits: 0, receiptQueued: true });
    expect(await state()).toEqual({ orgs: [], receipts: ['org-real'], pending: 0 });
    // Once erased, the org is unknown here: a second purge is refused, not receipted again.
    const again = purge('org-real', '--yes');
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/ORG_UNKNOWN/);
    expect((await state()).receipts).toEqual(['org-real']);
  });
});
