/**
 * Issue 8 §2 "Receipts that cannot be lost": `tallybox purge` (the real CLI,
 * a child process) is SIGKILLed at random moments: half of them at a random
 * point of the purge (after it logs "erasure started": before that nothing
 * is journalled or erased), half right after it logs "erasure complete and
 * verified" (the window in which the first wave lost receipts). After each kill the agent's start-up path
 * (startPrivacyRuntime: resume, then deliver what the journal holds) runs,
 * and then every purge that started has exactly one receipt in the result
 * queue, verified and signed; a purge that never started has none, and its
 * org is intact. A second restart adds nothing.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivacyRuntime } from '../../src/agent/privacy.js';
import { resultToJson } from '../../src/agent/results.js';
import { verifyErasureReceipt } from '../../src/privacy/receipt.js';
import { silentLogger } from '../../src/util/log.js';
import { CLI } from '../helpers/agent-process.js';
import { device, enrol, open, queuedReceipts, type Device } from './helpers.js';

let d: Device;
beforeAll(async () => {
  d = await device();
});
afterAll(() => d.cleanup());

type Run = 'killed' | 'finished';

type How = { afterStartMs: number } | { afterCompleteMs: number } | { never: true };

/** Spawn `tallybox purge`; SIGKILL it some ms after it logs the start, or the completion, of the erasure. */
function purgeAndKill(orgId: string, how: How): Promise<{ run: Run; purgeMs: number }> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [CLI, 'purge', '--org', orgId, '--config', d.configFile, '--yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    let startedAt: number | undefined;
    let completedAt: number | undefined;
    const kill = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString();
      if (startedAt === undefined && err.includes('"erasure started"')) {
        startedAt = performance.now();
        if ('afterStartMs' in how) setTimeout(kill, how.afterStartMs);
      }
      if (completedAt === undefined && err.includes('erasure complete and verified')) {
        completedAt = performance.now();
        if ('afterCompleteMs' in how) setTimeout(kill, how.afterCompleteMs);
      }
    });
    child.stdout.resume();
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      const purgeMs = startedAt !== undefined && completedAt !== undefined ? completedAt - startedAt : NaN;
      if (signal === 'SIGKILL') resolveRun({ run: 'killed', purgeMs });
      else if (code === 0) resolveRun({ run: 'finished', purgeMs });
      else reject(new Error(`purge exited ${code}: ${err}`));
    });
  });
}

/** What the agent does at start, then stop; returns the receipts queued per org. */
async function restart(): Promise<Map<string, string[]>> {
  const o = await open(d);
  try {
    const rt = await startPrivacyRuntime({
      services: o.privacy,
      config: d.config,
      outbox: o.outbox,
      enqueue: async (orgId, r) => void (await o.outbox.enqueueResult(orgId, resultToJson(r))),
      retentionDays: () => 365,
      clockSynced: () => true,
      logger: silentLogger(),
      onChange: () => undefined,
    });
    rt.stop();
    expect(await o.privacy.vault.pendingPurges()).toEqual([]);
    expect(await o.privacy.journal.pendingReceipts()).toEqual([]);
    const byOrg = new Map<string, string[]>();
    const key = createPublicKey(o.privacy.identity.publicKeyPem);
    for (const r of await queuedReceipts(o.outbox)) {
      const receipt = verifyErasureReceipt(r.signed, key);
      expect(receipt).toMatchObject({ ok: true, verification: 'verified', orgId: r.orgId, scan: { hits: 0 } });
      byOrg.set(r.orgId, [...(byOrg.get(r.orgId) ?? []), receipt.receiptId]);
    }
    return byOrg;
  } finally {
    await o.close();
  }
}

async function setUpOrg(orgId: string): Promise<void> {
  const o = await open(d);
  try {
    await enrol(o.privacy, orgId, 40);
  } finally {
    await o.close();
  }
}

async function orgIntact(orgId: string): Promise<boolean> {
  const o = await open(d);
  try {
    return (await o.privacy.vault.orgs()).includes(orgId) && (await o.privacy.vault.decryptTemplates(orgId)).templates.length === 40;
  } finally {
    await o.close();
  }
}

describe('SIGKILL during tallybox purge', () => {
  it('every purge that started ends with exactly one verified receipt queued; none is lost or doubled', async () => {
    expect(existsSync(CLI), 'run npm run build first').toBe(true);
    // One uninterrupted run to learn how long a purge takes on this machine.
    await setUpOrg('org-calib');
    const calib = await purgeAndKill('org-calib', { never: true });
    expect(calib.run).toBe('finished');
    const span = calib.purgeMs;
    expect(span).toBeGreaterThan(0);

    const outcomes: string[] = [];
    let kills = 0;
    for (let i = 0; kills < 22 && i < 60; i++) {
      const org = `org-k${i}`;
      await setUpOrg(org);
      const how: How = i % 2 === 0 ? { afterStartMs: Math.floor(Math.random() * span) } : { afterCompleteMs: Math.floor(Math.random() * 4) };
      const { run } = await purgeAndKill(org, how);
      if (run === 'killed') kills++;
      const intact = await orgIntact(org);
      const receipts = await restart();
      const mine = receipts.get(org) ?? [];
      // The purge had started (journalled) before any kill: never untouched, always exactly one receipt.
      expect(intact, `${org}: still intact after "erasure started"`).toBe(false);
      expect(mine, `${org} (${run}, ${JSON.stringify(how)})`).toHaveLength(1);
      outcomes.push(`${org}:${run}:${'afterCompleteMs' in how ? 'after-complete' : 'mid-purge'}`);
    }
    expect(kills).toBeGreaterThanOrEqual(20);
    const final = await restart();
    for (const [org, ids] of final) expect(ids, org).toHaveLength(1);
    expect(final.get('org-calib')).toHaveLength(1);
    // The interesting windows were hit: kills after completion was logged, and kills mid-purge that left it receipted.
    expect(outcomes.filter((x) => x.includes(':killed:after-complete')).length, outcomes.join(' ')).toBeGreaterThanOrEqual(10);
    expect(outcomes.filter((x) => x.includes(':killed:mid-purge')).length, outcomes.join(' ')).toBeGreaterThanOrEqual(5);
  }, 600_000);
});
