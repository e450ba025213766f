/**
 * Issue 14 §1: a device holding two organisations — templates in the vault
 * AND in the fingerprint module's flash (M1 simulator over a real pty),
 * card credentials, queued punches — decommissioned: no marker in any file
 * left, no key file left, module flash empty, one receipt that verifies with
 * the device public key, and `tallybox run` refuses afterwards (exit 78).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { enrolFinger, startM1Stack, type M1Stack } from '../../src/cli/demo-m1.js';
import { Decommission, receiptFilePath } from '../../src/decommission/engine.js';
import { verifyDecommissionReceipt } from '../../src/decommission/receipt.js';
import { agentDeps } from '../../src/decommission/runner.js';
import { readDecommission } from '../../src/decommission/state.js';
import { PunchMethod } from '../../src/proto/index.js';
import { DEFAULT_IDENTITY_FILE } from '../../src/vault/keys.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';
import { markerHits } from './helpers.js';

let s: M1Stack | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

describe('decommission of an M1 device with two organisations', () => {
  it('erases vault, module flash, outbox and command journal; one verified receipt; keys gone; run refuses', async () => {
    s = await startM1Stack({ servedOrgs: ['acme', 'globex'], agentLogLevel: 'silent' });
    await s.role.start();
    const markers: Buffer[] = [];
    const people: Array<[string, string, string]> = [
      ['acme', 'sub-acme-1', 'kim'],
      ['globex', 'sub-globex-1', 'lou'],
    ];
    for (const [org, sub, person] of people) {
      const name = `Marker Name ${sub}`;
      const card = `CARD${sub.replace(/-/g, '').toUpperCase()}0424242`;
      await s.vault.upsertSubject(org, { subjectId: sub, displayName: name, minor: false, consents: [{ kind: 'biometric' }] });
      await s.vault.putCredential(org, 'card', card, sub);
      const e = await enrolFinger(s, org, sub, { person, finger: 1 });
      markers.push(Buffer.from(sub), Buffer.from(name), Buffer.from(card), s.sim.device.getPage(e.page)!.subarray(0, 32));
    }
    expect(s.sim.device.pages()).toHaveLength(2);
    // Queued punches that cannot be delivered: the link is down.
    await s.agent.link.stop();
    for (const [org, sub] of people) for (let i = 0; i < 3; i++) await s.agent.punch({ orgId: org, subjectId: sub, method: PunchMethod.PUNCH_METHOD_FINGERPRINT });
    expect(s.agent.outbox.depth).toBe(6);

    const config = s.agent.config;
    const keyDir = dirname(config.vault!.kekFile!);
    const dirs = [config.dataDir, keyDir];
    expect(markerHits(dirs, markers).length).toBeGreaterThan(0); // the search finds them before

    const d = Decommission.begin(await agentDeps(s.agent, { deliverTimeoutMs: 2000 }), 'local');
    await d.toKeys();
    const publicKeyPem = s.agent.privacy!.identity.publicKeyPem;
    await s.agent.stop();
    const final = await Decommission.begin(await agentDeps(s.agent), 'local').destroyKeys();

    expect(final.phase).toBe('done');
    expect(final).toMatchObject({ kek: 'destroyed', identity: 'destroyed' });
    expect(s.sim.device.pages()).toEqual([]);
    expect(existsSync(config.vault!.kekFile!)).toBe(false);
    expect(existsSync(join(keyDir, DEFAULT_IDENTITY_FILE))).toBe(false);
    expect(markerHits(dirs, markers)).toEqual([]);

    const file = JSON.parse(readFileSync(receiptFilePath(config.dataDir), 'utf8')) as { signed: never; publicKeyPem: string };
    const r = verifyDecommissionReceipt(file.signed, publicKeyPem);
    expect(r).toMatchObject({ ok: true, verification: 'verified', deviceId: s.deviceId, scan: { ok: true, hits: 0 } });
    expect(r.scan.samples).toBeGreaterThan(0);
    expect(r.orgs.map((o) => o.orgId)).toEqual(['acme', 'globex']);
    for (const o of r.orgs) {
      expect(o.verification).toBe('verified');
      expect(o.keyVersionsDestroyed.length).toBeGreaterThan(0);
      expect(o.undeliveredPunches).toBe(3);
    }
    expect(r.outbox.punchesUndelivered).toBe(6);
    expect(readDecommission(config.dataDir)?.receiptId).toBe(r.receiptId);
    // A tampered receipt does not verify.
    const forged = { ...(file.signed as { body: string }), body: (file.signed as { body: string }).body.replace('"ok":true', '"ok":false') };
    expect(() => verifyDecommissionReceipt(forged as never, publicKeyPem)).toThrow(/RECEIPT_INVALID|does not verify/);

    const cfgFile = writeConfig(s.dir, JSON.parse(JSON.stringify(config)) as never);
    const run = spawnSync(process.execPath, [CLI, 'run', '--config', cfgFile], { encoding: 'utf8', timeout: 60_000 });
    expect(run.status, run.stderr).toBe(78);
    expect(run.stderr).toMatch(/^tallybox: DECOMMISSIONED: /m);
  }, 180_000);
});
