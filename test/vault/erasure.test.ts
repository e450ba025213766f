/**
 * Provable erasure, end to end on real files: enrol marker templates for two
 * organisations, erase one (or one person), then byte-scan every database file
 * with an independent scanner for anything that belonged to them.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rm, writeFile } from 'node:fs/promises';
import { randomBytes as rb } from 'node:crypto';
import { PurgeJournal } from '../../src/privacy/journal.js';
import { Purger } from '../../src/privacy/purge.js';
import { syncRoster } from '../../src/privacy/roster.js';
import { verifyErasureReceipt } from '../../src/privacy/receipt.js';
import { DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS, RetentionGuard, resolveRetentionDays, runRetention } from '../../src/privacy/retention.js';
import type { ErasureParticipant, ErasureReport } from '../../src/privacy/types.js';
import { Sqlite } from '../../src/store/sqlite.js';
import { uuidv7 } from '../../src/util/uuidv7.js';
import type { Vault } from '../../src/vault/vault.js';
import { dbFiles, findNeedles, openVault, readAll, sandbox, type Sandbox } from './helpers.js';

interface Person {
  subjectId: string;
  name: string;
  card: string;
  mac: string;
  evidence: string;
  markers: Buffer[];
  templates: Buffer[];
}

interface Org {
  orgId: string;
  people: Person[];
}

/** A sensor driver's side of erasure: it keeps its own copy of templates (module flash). */
class FakeSensorFlash implements ErasureParticipant {
  readonly name = 'fingerprint-sensor';
  readonly slots = new Map<string, Set<string>>(); // orgId -> subjectIds
  calls: string[] = [];
  failNext = 0;

  private maybeFail(): void {
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('sensor busy');
    }
  }

  async eraseOrg(orgId: string): Promise<ErasureReport> {
    this.maybeFail();
    this.calls.push(`org:${orgId}`);
    const n = this.slots.get(orgId)?.size ?? 0;
    this.slots.delete(orgId);
    return { ok: true, counts: { sensorSlots: n } };
  }

  async eraseSubject(orgId: string, subjectId: string): Promise<ErasureReport> {
    this.maybeFail();
    this.calls.push(`subject:${orgId}`);
    const had = this.slots.get(orgId)?.delete(subjectId) ?? false;
    return { ok: true, counts: { sensorSlots: had ? 1 : 0 } };
  }

  async eraseSubjectTemplates(orgId: string, subjectId: string): Promise<ErasureReport> {
    return this.eraseSubject(orgId, subjectId);
  }
}

let sb: Sandbox;
let vault: Vault;
let sensor: FakeSensorFlash;
let purger: Purger;
let journal: PurgeJournal;
let now: number;

function makePurger(): Purger {
  return new Purger({ store: vault, signer: vault.identity, deviceId: 'dev-0001', participants: [sensor], journal, clock: () => now });
}

beforeEach(async () => {
  now = Date.UTC(2025, 0, 1);
  sb = await sandbox();
  vault = await openVault(sb, () => now);
  journal = await PurgeJournal.open({ path: join(sb.dataDir, 'purge-journal.db'), root: rb(32) });
  sensor = new FakeSensorFlash();
  purger = makePurger();
});
afterEach(async () => {
  await journal.close().catch(() => undefined);
  await vault.close().catch(() => undefined);
  await sb.cleanup();
});

async function enrolOrg(orgId: string, n: number): Promise<Org> {
  const people: Person[] = [];
  for (let i = 0; i < n; i++) {
    const tag = randomBytes(6).toString('hex');
    const p: Person = {
      subjectId: uuidv7(),
      name: `Person ${orgId} ${tag}`,
      card: `${randomBytes(5).toString('hex').toUpperCase()}`,
      mac: randomBytes(6).toString('hex'),
      evidence: `consent-form-${tag}`,
      markers: [randomBytes(32), randomBytes(32)],
      templates: [],
    };
    // 512-byte templates with the 32-byte marker somewhere in the middle.
    p.templates = p.markers.map((m) => Buffer.concat([randomBytes(200), m, randomBytes(280)]));
    await vault.upsertSubject(orgId, { subjectId: p.subjectId, displayName: p.name, minor: false, consents: [{ kind: 'biometric', evidence: p.evidence }] });
    await vault.enrolTemplate(orgId, p.subjectId, 'fingerprint', 0, p.templates[0]!);
    await vault.enrolTemplate(orgId, p.subjectId, 'face', 0, p.templates[1]!);
    await vault.putCredential(orgId, 'card', p.card, p.subjectId);
    await vault.putCredential(orgId, 'wifi_mac', p.mac, p.subjectId);
    const slots = sensor.slots.get(orgId) ?? new Set<string>();
    slots.add(p.subjectId);
    sensor.slots.set(orgId, slots);
    people.push(p);
  }
  return { orgId, people };
}

/** What is in the raw database for these subjects: ciphertexts, HMACs (outputs) and wrapped keys. */
async function rawSecrets(orgId: string, subjectIds?: string[]): Promise<Buffer[]> {
  const db = await Sqlite.open(join(sb.dataDir, 'vault.db'), { readonly: true });
  try {
    const filter = subjectIds ? `AND subject_id IN (${subjectIds.map(() => '?').join(',')})` : '';
    const params = [orgId, ...(subjectIds ?? [])];
    const out: Buffer[] = [];
    for (const r of await db.all<{ b: Buffer }>(`SELECT ct AS b FROM templates WHERE org_id = ? ${filter}`, params)) out.push(r.b);
    for (const r of await db.all<{ b: Buffer }>(`SELECT name_ct AS b FROM subjects WHERE org_id = ? ${filter}`, params)) out.push(r.b);
    for (const r of await db.all<{ b: Buffer }>(`SELECT evidence_ct AS b FROM consents WHERE org_id = ? ${filter}`, params)) out.push(r.b);
    for (const r of await db.all<{ b: Buffer }>(`SELECT lookup AS b FROM credentials WHERE org_id = ? ${filter}`, params)) out.push(r.b);
    if (!subjectIds) for (const r of await db.all<{ b: Buffer }>('SELECT wrapped AS b FROM org_keys WHERE org_id = ?', [orgId])) out.push(r.b);
    // Whole blobs and a 16-byte slice of each, in case a blob straddles a page.
    return out.flatMap((b) => [b, b.subarray(20, 36)]);
  } finally {
    await db.close();
  }
}

/** Plaintext needles of people: markers, names, evidence, card numbers and MACs (HMAC inputs), subject ids. */
function plaintextNeedles(people: Person[]): (Buffer | string)[] {
  return people.flatMap((p) => [...p.markers, p.name, p.evidence, p.card, p.mac, Buffer.from(p.mac, 'hex'), p.subjectId]);
}

async function expectIntact(org: Org): Promise<void> {
  const { templates, quarantined } = await vault.decryptTemplates(org.orgId);
  expect(quarantined).toEqual([]);
  const want = org.people.flatMap((p) => p.templates.map((t) => `${p.subjectId}:${t.toString('hex')}`)).sort();
  expect(templates.map((t) => `${t.subjectId}:${t.bytes.toString('hex')}`).sort()).toEqual(want);
  for (const p of org.people) {
    expect((await vault.getSubject(org.orgId, p.subjectId)).displayName).toBe(p.name);
    expect(await vault.lookupCredential(org.orgId, 'card', p.card)).toBe(p.subjectId);
    expect(await vault.lookupCredential(org.orgId, 'wifi_mac', p.mac)).toBe(p.subjectId);
  }
}

describe('org withdrawal', () => {
  it('leaves no marker, name, HMAC input/output, ciphertext or key of the org in any database file; the other org is intact', async () => {
    const a = await enrolOrg('org-alpha', 6);
    const b = await enrolOrg('org-beta', 6);
    const secretsA = await rawSecrets('org-alpha');
    const secretsB = await rawSecrets('org-beta');
    // Positive control: the independent scanner does see the org's ciphertexts before the purge.
    expect((await findNeedles(dbFiles(sb), secretsA)).length).toBe(secretsA.length);
    expect(await findNeedles(dbFiles(sb), plaintextNeedles(a.people).slice(0, 2))).toEqual([]); // markers never in plaintext

    const { ok, receipt, signed } = await purger.withdrawOrg('org-alpha', { requestRef: 'cmd:42' });

    expect(ok).toBe(true);
    expect(receipt).toMatchObject({
      kind: 'org_withdrawal',
      orgId: 'org-alpha',
      requestRef: 'cmd:42',
      ok: true,
      resumed: false,
      keyVersionsDestroyed: [1],
      counts: { dataKeys: 1, subjects: 6, templates: 12, credentials: 12, consents: 6 },
      participants: [{ name: 'fingerprint-sensor', ok: true, counts: { sensorSlots: 6 } }],
      scan: { ok: true, hits: 0, passes: 1 },
    });
    expect(receipt.scan.samples).toBeGreaterThan(6 * 2 * 3);
    expect(sensor.slots.has('org-alpha')).toBe(false);

    // Independent scan of db, -wal, -shm, -journal while the vault is still open…
    const needles = [...plaintextNeedles(a.people), ...secretsA];
    expect(await findNeedles(dbFiles(sb), needles)).toEqual([]);
    // …and the other org's sealed data is still all there (the scan is not blind).
    expect((await findNeedles(dbFiles(sb), secretsB)).length).toBe(secretsB.length);
    await expectIntact(b);
    expect(await vault.orgs()).toEqual(['org-beta']);
    expect(await vault.decryptTemplates('org-alpha')).toEqual({ templates: [], quarantined: [] });
    expect(await vault.lookupCredential('org-alpha', 'card', a.people[0]!.card)).toBeUndefined();

    // The receipt verifies with the device public key and carries nothing personal.
    const verified = verifyErasureReceipt(signed, sb.keys.publicKeyPem);
    expect(verified).toEqual(receipt);
    for (const p of a.people) {
      for (const s of [p.subjectId, p.name, p.card, p.mac, p.evidence]) expect(signed.body).not.toContain(s);
    }

    // After closing, still nothing; and a re-joining org gets a new key version.
    await vault.close();
    expect(await findNeedles(dbFiles(sb), needles)).toEqual([]);
    vault = await openVault(sb, () => now);
    await expectIntact(b);
    await vault.upsertSubject('org-alpha', { subjectId: 'subject-new', displayName: 'New', minor: false });
    expect(await vault.keyVersion('org-alpha')).toBe(2);
  });

  it('a receipt does not verify when altered or with another key', async () => {
    await enrolOrg('org-alpha', 1);
    const { signed } = await purger.withdrawOrg('org-alpha');
    const altered = { ...signed, body: signed.body.replace('"ok":true', '"ok":false') };
    expect(altered.body).not.toBe(signed.body);
    expect(() => verifyErasureReceipt(altered, sb.keys.publicKeyPem)).toThrow(expect.objectContaining({ code: 'RECEIPT_INVALID' }));
    const other = generateKeyPairSync('ed25519').publicKey;
    expect(() => verifyErasureReceipt(signed, other)).toThrow(expect.objectContaining({ code: 'RECEIPT_INVALID' }));
  });

  it('a purge journalled without fingerprints (older agent, lost journal) whose key is already gone resumes as unverified, never ok', async () => {
    const a = await enrolOrg('org-alpha', 3);
    const b = await enrolOrg('org-beta', 2);
    const secretsA = await rawSecrets('org-alpha');
    // Simulate power loss right after crypto-shredding: journal written, key deleted, rows not yet.
    await vault.beginPurge({ jobId: 'job-1', scope: { kind: 'org', orgId: 'org-alpha' }, requestRef: null, state: 'erasing', startedAtMs: now, attempts: 0, counts: {}, keyVersionsDestroyed: [] });
    await vault.close();
    const db = await Sqlite.open(join(sb.dataDir, 'vault.db'));
    await db.run("DELETE FROM org_keys WHERE org_id = 'org-alpha'");
    await db.run(`UPDATE purge_jobs SET key_versions = '[1]', counts = '{"dataKeys":1}'`);
    await db.close();

    vault = await openVault(sb, () => now);
    await expect(vault.decryptTemplates('org-alpha')).rejects.toMatchObject({ code: 'ORG_PURGE_IN_PROGRESS' });
    await expect(vault.upsertSubject('org-alpha', { subjectId: 'x-subject', displayName: 'x', minor: false })).rejects.toMatchObject({ code: 'ORG_PURGE_IN_PROGRESS' });
    expect(await vault.orgs()).toEqual(['org-beta']);

    purger = makePurger();
    const outcomes = await purger.resumePending();
    expect(outcomes).toHaveLength(1);
    // The rows are erased and scanned for (they could be sampled again), but the key went before any
    // fingerprint of it was kept: nothing proves it is gone, so this is not a success.
    expect(outcomes[0]!.receipt).toMatchObject({ ok: false, verification: 'unverified', problem: 'FINGERPRINTS_MISSING', resumed: true, keyVersionsDestroyed: [1], counts: { dataKeys: 1, subjects: 3, templates: 6 }, scan: { hits: 0 } });
    expect(outcomes[0]!.queued).toBe(false);
    expect(await vault.pendingPurges()).toHaveLength(1);
    expect(await journal.pendingReceipts()).toEqual([]);
    expect(await findNeedles(dbFiles(sb), [...plaintextNeedles(a.people), ...secretsA])).toEqual([]);
    await expectIntact(b);
  });

  it('a failing participant makes the purge fail and stay journalled; the retry at restart completes it', async () => {
    const a = await enrolOrg('org-alpha', 2);
    sensor.failNext = 3; // all three attempts of the first run
    const first = await purger.withdrawOrg('org-alpha');
    expect(first.ok).toBe(false);
    expect(first.receipt.participants).toMatchObject([{ name: 'fingerprint-sensor', ok: false }]);
    expect(first.receipt.scan.hits).toBe(0); // the vault's own part is done and verified
    expect(await vault.pendingPurges()).toHaveLength(1);
    expect(sensor.slots.has('org-alpha')).toBe(true);

    const [second] = await purger.resumePending();
    expect(second!.ok).toBe(true);
    expect(second!.receipt).toMatchObject({ resumed: true, verification: 'verified', keyVersionsDestroyed: [1], counts: { subjects: 2 } });
    expect(second!.receipt.scan.samples).toBe(first.receipt.scan.samples); // the first run's evidence, from the journal
    expect(sensor.slots.has('org-alpha')).toBe(false);
    expect(await findNeedles(dbFiles(sb), plaintextNeedles(a.people))).toEqual([]);
  });
});

describe('organisation list kept in memory (card taps and phone joins read it)', () => {
  it('a withdrawn org is gone from lookups at once, and an org whose key is created afterwards is found', async () => {
    const a = await enrolOrg('org-alpha', 2);
    const b = await enrolOrg('org-beta', 1);
    // Read once: from here on the list is the keyring's.
    expect(await vault.orgs()).toEqual(['org-alpha', 'org-beta']);
    expect(await vault.identifyCredential('card', a.people[0]!.card)).toEqual([{ orgId: 'org-alpha', subjectId: a.people[0]!.subjectId }]);
    const { ok } = await purger.withdrawOrg('org-alpha');
    expect(ok).toBe(true);
    expect(await vault.orgs()).toEqual(['org-beta']);
    expect(await vault.identifyCredential('card', a.people[0]!.card)).toEqual([]);
    expect(await vault.identifyCredentials('wifi_mac', [a.people[1]!.mac, b.people[0]!.mac])).toEqual([{ orgId: 'org-beta', subjectId: b.people[0]!.subjectId, value: b.people[0]!.mac }]);
    // A new org (its data key is created by its first subject) sorts into the list.
    const c = await enrolOrg('org-aardvark', 1);
    expect(await vault.orgs()).toEqual(['org-aardvark', 'org-beta']);
    expect(await vault.identifyCredential('card', c.people[0]!.card)).toEqual([{ orgId: 'org-aardvark', subjectId: c.people[0]!.subjectId }]);
    // And the same after a restart, read from the file.
    await vault.close();
    vault = await openVault(sb, () => now);
    expect(await vault.orgs()).toEqual(['org-aardvark', 'org-beta']);
  });
});

describe('verification', () => {
  it("fragments left in a participant's database file fail the purge after retries; it stays journalled and completes once they are gone", async () => {
    await enrolOrg('org-alpha', 2);
    const leaky = join(sb.root, 'leaky-outbox.db');
    const legit = join(sb.root, 'outbox.db');
    // A stale copy of the vault's pages (main file and WAL) holding the org's ciphertexts.
    await writeFile(leaky, Buffer.concat(await readAll(dbFiles(sb))));
    const subjectIds = await vault.subjectIds('org-alpha');
    await writeFile(legit, Buffer.from(`punch for ${subjectIds[0]!}`)); // subject ids may rightly stay in the outbox
    const outbox: ErasureParticipant = {
      name: 'outbox',
      eraseOrg: async () => ({ ok: true, counts: { punches: 0 } }),
      eraseSubject: async () => ({ ok: true, counts: { punches: 0 } }),
      scanFiles: () => [legit, leaky],
    };
    purger.register(outbox);
    expect(() => purger.register(outbox)).toThrow(expect.objectContaining({ code: 'DUPLICATE_PARTICIPANT' }));

    const first = await purger.withdrawOrg('org-alpha');
    expect(first.ok).toBe(false);
    expect(first.receipt.scan).toMatchObject({ ok: false, passes: 3 });
    expect(first.receipt.scan.hits).toBeGreaterThan(0);
    expect(first.receipt.scan.hitsByLabel.subject_id).toBeUndefined();
    expect(verifyErasureReceipt(first.signed, sb.keys.publicKeyPem).ok).toBe(false);
    expect(await vault.pendingPurges()).toHaveLength(1);

    await rm(leaky);
    const [second] = await purger.resumePending();
    expect(second!.receipt).toMatchObject({ ok: true, resumed: true, keyVersionsDestroyed: [1], counts: { subjects: 2 } });
    expect(await vault.pendingPurges()).toEqual([]);
  });

  it('withdrawing an org the device never held succeeds with zero counts', async () => {
    const { ok, receipt } = await purger.withdrawOrg('org-unknown');
    expect(ok).toBe(true);
    expect(receipt).toMatchObject({ keyVersionsDestroyed: [], scan: { hits: 0, samples: 0 } });
    expect(receipt.counts.subjects).toBe(0);
  });
});

describe('logs', () => {
  it('the purge logs counts and ids of jobs, never names, credentials or subject ids', async () => {
    const lines: string[] = [];
    const capture = (level: string) => (a: unknown, b?: string) => lines.push(`${level} ${JSON.stringify(a)} ${b ?? ''}`);
    const logger = {
      level: 'trace' as const,
      trace: capture('trace'),
      debug: capture('debug'),
      info: capture('info'),
      warn: capture('warn'),
      error: capture('error'),
      fatal: capture('fatal'),
      child: () => logger,
    };
    const a = await enrolOrg('org-alpha', 2);
    sensor.failNext = 1;
    const p = new Purger({ store: vault, signer: vault.identity, deviceId: 'dev-0001', participants: [sensor], logger });
    await p.eraseSubject('org-alpha', a.people[0]!.subjectId);
    await p.withdrawOrg('org-alpha');
    expect(lines.length).toBeGreaterThanOrEqual(3);
    const text = lines.join('\n');
    for (const person of a.people) {
      for (const needle of [person.subjectId, person.name, person.card, person.mac, person.evidence, person.markers[0]!.toString('hex')]) expect(text).not.toContain(needle);
    }
  });
});

describe('roster sync', () => {
  it('erases everyone of the org not on the roster, in one purge; converges on a second sync', async () => {
    const a = await enrolOrg('org-alpha', 5);
    const b = await enrolOrg('org-beta', 1);
    const keep = a.people.slice(0, 3);
    const drop = a.people.slice(3);
    const secrets = await rawSecrets(
      'org-alpha',
      drop.map((p) => p.subjectId),
    );
    const r = await syncRoster({ source: vault, purger, orgId: 'org-alpha', validSubjectIds: keep.map((p) => p.subjectId), requestRef: 'cmd:9' });
    expect(r.erased).toBe(2);
    expect(r.outcome!.receipt).toMatchObject({ kind: 'subject_erasure', ok: true, requestRef: 'cmd:9', counts: { subjects: 2, templates: 4 }, scan: { hits: 0 } });
    expect(await findNeedles(dbFiles(sb), [...plaintextNeedles(drop), ...secrets])).toEqual([]);
    await expectIntact({ orgId: 'org-alpha', people: keep });
    await expectIntact(b);
    expect(await syncRoster({ source: vault, purger, orgId: 'org-alpha', validSubjectIds: keep.map((p) => p.subjectId) })).toEqual({ erased: 0, outcome: undefined });
  });
});

describe('account closure', () => {
  it('erases one subject completely; the rest of the org and the other org are intact', async () => {
    const a = await enrolOrg('org-alpha', 4);
    const b = await enrolOrg('org-beta', 2);
    const [gone, ...stay] = a.people as [Person, ...Person[]];
    const secrets = await rawSecrets('org-alpha', [gone.subjectId]);
    expect((await findNeedles(dbFiles(sb), secrets)).length).toBe(secrets.length);

    const { ok, receipt, signed } = await purger.eraseSubject('org-alpha', gone.subjectId, { requestRef: 'cmd:7' });

    expect(ok).toBe(true);
    expect(receipt).toMatchObject({
      kind: 'subject_erasure',
      orgId: 'org-alpha',
      keyVersionsDestroyed: [],
      counts: { subjects: 1, templates: 2, credentials: 2, consents: 1 },
      participants: [{ name: 'fingerprint-sensor', ok: true, counts: { sensorSlots: 1 } }],
      scan: { ok: true, hits: 0 },
    });
    expect(receipt.scan.hitsByLabel).toEqual({});
    expect(await findNeedles(dbFiles(sb), [...plaintextNeedles([gone]), ...secrets])).toEqual([]);
    expect(signed.body).not.toContain(gone.subjectId);
    expect(signed.body).not.toContain(gone.name);
    expect(verifyErasureReceipt(signed, vault.identity.publicKey).orgId).toBe('org-alpha');

    await expectIntact({ orgId: 'org-alpha', people: stay });
    await expectIntact(b);
    await expect(vault.getSubject('org-alpha', gone.subjectId)).rejects.toMatchObject({ code: 'SUBJECT_NOT_FOUND' });
    expect(await vault.lookupCredential('org-alpha', 'card', gone.card)).toBeUndefined();
  });

  it('the same subject id in another org is not mistaken for a leftover', async () => {
    const shared = uuidv7();
    for (const org of ['org-alpha', 'org-beta']) {
      await vault.upsertSubject(org, { subjectId: shared, displayName: `Shared ${org}`, minor: false, consents: [{ kind: 'biometric' }] });
      await vault.enrolTemplate(org, shared, 'face', 0, randomBytes(128));
    }
    const { ok, receipt } = await purger.eraseSubject('org-alpha', shared);
    expect(ok).toBe(true);
    expect(receipt.scan.hits).toBe(0);
    expect((await vault.getSubject('org-beta', shared)).displayName).toBe('Shared org-beta');
  });
});

describe('retention', () => {
  it('erases the templates of subjects not seen for the period, keeps everyone else', async () => {
    const a = await enrolOrg('org-alpha', 3);
    const [stale, seen, fresh] = a.people as [Person, Person, Person];
    now += 200 * 86_400_000;
    await vault.touchSubject('org-alpha', seen.subjectId);
    now += 100 * 86_400_000;
    await vault.upsertSubject('org-alpha', { subjectId: fresh.subjectId, displayName: fresh.name, minor: false });
    now += 66 * 86_400_000; // 366 days after enrolment, 166 after `seen` was seen

    // Four of six templates go: allowed in one run only with a fraction of 1 (test/privacy/retention-clock covers the guard).
    const guard = new RetentionGuard({ maxFraction: 1 });
    const { outcomes } = await runRetention({ source: vault, purger, nowMs: now, clockSynced: true, guard });
    // `fresh` was updated but never seen since enrolment: an upsert is not a sighting.
    expect(outcomes).toHaveLength(1);
    expect(outcomes[0]!.receipt).toMatchObject({ kind: 'retention', ok: true, counts: { templates: 4 }, scan: { hits: 0 } });
    expect(outcomes[0]!.receipt.counts.subjects).toBeUndefined();
    const left = await vault.listTemplates('org-alpha');
    expect(left.map((t) => t.subjectId)).toEqual([seen.subjectId, seen.subjectId]);
    expect(await findNeedles(dbFiles(sb), [...stale.markers, ...fresh.markers])).toEqual([]);
    // Identity stays: the person is still on the roster and may enrol again.
    expect((await vault.getSubject('org-alpha', stale.subjectId)).displayName).toBe(stale.name);
    expect((await runRetention({ source: vault, purger, nowMs: now, clockSynced: true, guard })).outcomes).toEqual([]);
  });

  it('period defaults to 365 days and may not exceed three years', () => {
    expect(resolveRetentionDays()).toBe(DEFAULT_RETENTION_DAYS);
    expect(DEFAULT_RETENTION_DAYS).toBe(365);
    expect(resolveRetentionDays(MAX_RETENTION_DAYS)).toBe(1095);
    expect(() => resolveRetentionDays(1096)).toThrow(expect.objectContaining({ code: 'RETENTION_OUT_OF_RANGE', message: expect.stringContaining('retention.templateDays') }));
    expect(() => resolveRetentionDays(0)).toThrow(expect.objectContaining({ code: 'RETENTION_OUT_OF_RANGE' }));
  });
});
