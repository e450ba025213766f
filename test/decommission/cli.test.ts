/**
 * Issue 14 §1 through the real `tallybox decommission` process:
 *  - without --yes and without a terminal: refused (exit 2), nothing changed;
 *  - the check can fail: a copy of a subject id left in a file of the data
 *    directory makes the receipt's scan say so (failed, FRAGMENTS_FOUND);
 *  - >= 20 SIGKILLs at random points (timed from the process's own log
 *    lines, never from sleeps): every device still ends decommissioned, with
 *    exactly one receipt, which verifies with the device public key.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resultFromJson } from '../../src/agent/results.js';
import { receiptFilePath } from '../../src/decommission/engine.js';
import { verifyDecommissionReceipt, DECOMMISSION_RECEIPT_TYPE } from '../../src/decommission/receipt.js';
import { readDecommission } from '../../src/decommission/state.js';
import { Outbox } from '../../src/outbox/outbox.js';
import { PunchMethod } from '../../src/proto/index.js';
import type { SignedErasureReceipt } from '../../src/privacy/receipt.js';
import { CLI } from '../helpers/agent-process.js';
import { device, enrol, open, type Device } from '../privacy/helpers.js';
import { markerHits } from './helpers.js';

const devices: Device[] = [];
afterAll(() => Promise.all(devices.map((d) => d.cleanup())));

/** A device with two orgs: subjects, templates, a card each, queued punches. Returns the plaintext markers. */
async function seeded(): Promise<{ d: Device; markers: Buffer[]; publicKeyPem: string; subjectIds: string[] }> {
  const d = await device({ device: { id: 'dev-decom-1', kind: 'sim', orgId: 'org-a', servedOrgs: ['org-a', 'org-b'] } });
  devices.push(d);
  const o = await open(d);
  const markers: Buffer[] = [];
  const subjectIds: string[] = [];
  try {
    for (const org of ['org-a', 'org-b']) {
      const templates = await enrol(o.privacy, org, 4);
      const ids = await o.privacy.vault.subjectIds(org);
      subjectIds.push(...ids);
      await o.privacy.vault.putCredential(org, 'card', `C${org.replace('-', '').toUpperCase()}77123`, ids[0]!);
      for (const t of templates) markers.push(t.subarray(0, 32));
      for (const id of ids) markers.push(Buffer.from(id));
      for (let i = 0; i < 3; i++) await o.outbox.accept({ orgId: org, subjectId: ids[i]!, method: PunchMethod.PUNCH_METHOD_CARD });
    }
    return { d, markers, publicKeyPem: o.privacy.identity.publicKeyPem, subjectIds };
  } finally {
    await o.close();
  }
}

const decommission = (d: Device, ...extra: string[]) => spawnSync(process.execPath, [CLI, 'decommission', '--config', d.configFile, ...extra], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: 120_000 });

function keyDir(d: Device): string {
  return dirname(d.config.vault!.kekFile!);
}

/** Decommission receipts in the result queue (the broker is unreachable in these tests). */
async function queuedDecommissionReceipts(d: Device): Promise<string[]> {
  const ob = await Outbox.open({ path: join(d.dataDir, 'outbox.db'), capacity: 1000 });
  try {
    const ids: string[] = [];
    for (const r of await ob.pendingResults(1_000_000)) {
      const res = resultFromJson(r.body);
      if (!res.receipt?.length) continue;
      const body = JSON.parse((JSON.parse(Buffer.from(res.receipt).toString('utf8')) as SignedErasureReceipt).body) as { type: string; receiptId: string };
      if (body.type === DECOMMISSION_RECEIPT_TYPE) ids.push(body.receiptId);
    }
    return ids;
  } finally {
    await ob.close();
  }
}

describe('tallybox decommission', () => {
  it('without --yes and without a terminal: a usage error, nothing changed', async () => {
    const { d } = await seeded();
    const r = decommission(d);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/CONFIRMATION_REQUIRED.*--yes/);
    expect(readDecommission(d.dataDir)).toBeUndefined();
    expect(existsSync(d.config.vault!.kekFile!)).toBe(true);
  }, 60_000);

  it('the scan can fail: a subject id copied into a file of the data directory is reported, not verified', async () => {
    const { d, subjectIds, publicKeyPem } = await seeded();
    const stray = join(d.dataDir, 'operator-notes.txt');
    writeFileSync(stray, `left behind: ${subjectIds[0]}\n`);
    chmodSync(stray, 0o600);
    const r = decommission(d, '--yes');
    expect(r.status, r.stderr).toBe(1);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({ decommissioned: true, verification: 'failed', problem: 'FRAGMENTS_FOUND' });
    const file = JSON.parse(readFileSync(receiptFilePath(d.dataDir), 'utf8')) as { signed: SignedErasureReceipt };
    const receipt = verifyDecommissionReceipt(file.signed, publicKeyPem);
    expect(receipt).toMatchObject({ ok: false, verification: 'failed', scan: { ok: false, filesWithHits: ['operator-notes.txt'] } });
    expect(receipt.scan.hits).toBeGreaterThan(0);
    // The keys are destroyed all the same: the device cannot read what is left.
    expect(existsSync(d.config.vault!.kekFile!)).toBe(false);
  }, 120_000);

  it('survives >= 20 SIGKILLs at random points: always completes on restart, exactly one receipt', async () => {
    let kills = 0;
    let rounds = 0;
    const phases = new Set<string>();
    // Devices until enough kills have landed (each is killed until it completes).
    while (kills < 20) {
      const { d, markers, publicKeyPem } = await seeded();
      rounds++;
      let lastReceiptId: string | undefined;
      for (let attempt = 0; attempt < 60; attempt++) {
        const killAt = 1 + Math.floor(Math.random() * 28); // the n-th log line of this run (a full run writes ~30)
        const outcome = await new Promise<{ killed: boolean; code: number | null; stdout: string }>((resolve) => {
          const p = spawn(process.execPath, [CLI, 'decommission', '--config', d.configFile, '--yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
          let lines = 0;
          let buf = '';
          let out = '';
          let killed = false;
          p.stdout.on('data', (c: Buffer) => (out += c.toString()));
          p.stderr.on('data', (c: Buffer) => {
            buf += c.toString();
            let i: number;
            while ((i = buf.indexOf('\n')) >= 0) {
              buf = buf.slice(i + 1);
              if (++lines === killAt && !killed) {
                killed = p.kill('SIGKILL');
              }
            }
          });
          p.on('exit', (code, signal) => resolve({ killed: signal === 'SIGKILL', code, stdout: out }));
        });
        const s = readDecommission(d.dataDir);
        // Signed once: a receipt seen before a kill is the receipt after it.
        if (lastReceiptId && s?.receiptId) expect(s.receiptId).toBe(lastReceiptId);
        lastReceiptId = s?.receiptId ?? lastReceiptId;
        if (outcome.killed) {
          kills++;
          phases.add(s?.phase ?? 'not started');
          continue;
        }
        expect(outcome.code, outcome.stdout).toBe(0);
        break;
      }
      const s = readDecommission(d.dataDir)!;
      expect(s.phase).toBe('done');
      expect(existsSync(d.config.vault!.kekFile!)).toBe(false);
      expect(markerHits([d.dataDir, keyDir(d)], markers)).toEqual([]);
      const file = JSON.parse(readFileSync(receiptFilePath(d.dataDir), 'utf8')) as { signed: SignedErasureReceipt };
      const r = verifyDecommissionReceipt(file.signed, createPublicKey(publicKeyPem));
      expect(r.receiptId).toBe(s.receiptId);
      expect(r.verification).toBe('verified');
      expect(r.orgs.map((o) => o.orgId)).toEqual(['org-a', 'org-b']);
      // Exactly one receipt in the result queue, the same one.
      expect(await queuedDecommissionReceipts(d)).toEqual([s.receiptId]);
      // And `tallybox run` refuses now.
      const run = spawnSync(process.execPath, [CLI, 'run', '--config', d.configFile], { encoding: 'utf8', timeout: 60_000 });
      expect(run.status).toBe(78);
      expect(run.stderr).toMatch(/^tallybox: DECOMMISSIONED: /m);
      // A bound on time only: a kill point past a (shorter, resumed) run's last line lands no kill,
      // so the number of kills per device varies; 40 devices are far more than 20 kills need.
      if (rounds >= 40) break;
    }
    expect(kills).toBeGreaterThanOrEqual(20);
    // The kills landed in several steps, not all at the start.
    expect(phases.size, [...phases].join(',')).toBeGreaterThanOrEqual(3);
  }, 900_000);
});

describe('a damaged decommission journal', () => {
  it('is never read as "not decommissioning": run refuses (78), decommission stops with the code, nothing is erased', async () => {
    const { d } = await seeded();
    const journal = join(d.dataDir, 'decommission.json');
    writeFileSync(journal, '{"v":1,"id":"x","pha');
    chmodSync(journal, 0o600);
    const run = spawnSync(process.execPath, [CLI, 'run', '--config', d.configFile], { encoding: 'utf8', timeout: 60_000 });
    expect(run.status).toBe(78);
    expect(run.stderr).toMatch(/^tallybox: DECOMMISSIONED: .*decommission\.json.*20 bytes/m);
    const r = decommission(d, '--yes');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^tallybox: DECOMMISSION_STATE_CORRUPT: /m);
    expect(existsSync(d.config.vault!.kekFile!)).toBe(true);
    const o = await open(d);
    try {
      expect(await o.privacy.vault.orgs()).toEqual(['org-a', 'org-b']);
    } finally {
      await o.close();
    }
  }, 120_000);
});
