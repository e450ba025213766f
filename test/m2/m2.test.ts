// M2 role end to end over a REAL pseudo-terminal (socat): the face-module
// simulator on one end, the production SerialTransport + BridgeDriver + M2Role
// on the other; the card reader through the HID transport interface
// (SimHidTransport fed by CardReaderSim); the agent's vault, outbox and MQTT
// link behind them; the cloud emulator (CloudSink on embedded aedes) receiving.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { enrolFace, presentFace, startM2Stack, swipeCard, type M2Stack, type M2StackOptions } from '../../src/cli/demo-m2.js';
import { startFaceSimulator } from '../../simulators/face/main.js';
import { PunchMethod, ScoreBucket, type PunchEvent } from '../../src/proto/index.js';
import { attachM2Role } from '../../src/roles/m2/attach.js';
import type { Logger } from '../../src/util/log.js';
import { waitUntil } from '../helpers/ports.js';

const stacks = new Set<M2Stack>();
const dirs: string[] = [];
const extra: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of extra.splice(0)) await f().catch(() => undefined);
  // Every socat, broker and agent of the test goes, even when it failed.
  await Promise.all([...stacks].map((s) => s.close()));
  stacks.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A logger that keeps every line (all levels) so the test can look for personal data in it. */
function memoryLogger(lines: string[], bindings: Record<string, unknown> = {}): Logger {
  const fn =
    (level: string) =>
    (a: string | Record<string, unknown>, msg?: string): void => {
      lines.push(JSON.stringify({ level, ...bindings, ...(typeof a === 'string' ? { msg: a } : { ...a, msg }) }));
    };
  return {
    level: 'trace',
    trace: fn('trace'),
    debug: fn('debug'),
    info: fn('info'),
    warn: fn('warn'),
    error: fn('error'),
    fatal: fn('fatal'),
    child: (b) => memoryLogger(lines, { ...bindings, ...b }),
  } as Logger;
}

type TestStack = M2Stack & { received: PunchEvent[]; logs: string[] };

async function stack(opts: M2StackOptions = {}): Promise<TestStack> {
  const received: PunchEvent[] = [];
  const logs: string[] = [];
  // The device serves every organisation these tests enrol people of.
  const s = await startM2Stack({ servedOrgs: ['acme', 'beta', 'org-a', 'org-b'], logger: memoryLogger(logs), ...opts, onPunch: (p, { duplicate }) => void (duplicate ? undefined : received.push(p)) });
  stacks.add(s);
  for (let i = 0; i < 200 && !s.agent.session; i++) await new Promise((r) => setTimeout(r, 20));
  return Object.assign(s, { received, logs });
}

async function person(s: M2Stack, orgId: string, subjectId: string, opts: { consent?: boolean; name?: string } = {}): Promise<void> {
  await s.vault.upsertSubject(orgId, { subjectId, displayName: opts.name ?? `Name of ${subjectId}`, minor: false, consents: opts.consent === false ? [] : [{ kind: 'biometric' }] });
}

function peripheral(s: M2Stack, name: string): { online: boolean; detail: string } | undefined {
  const p = s.agent.state().peripherals?.find((x) => x.name === name);
  return p ? { online: p.online === true, detail: p.detail ?? '' } : undefined;
}

/** Every file in the data directory: vault.db, outbox.db and their -wal/-shm. */
function dataFiles(s: M2Stack): Array<{ name: string; bytes: Buffer }> {
  return readdirSync(s.dataDir)
    .map((n) => join(s.dataDir, n))
    .filter((f) => existsSync(f))
    .map((f) => ({ name: f, bytes: readFileSync(f) }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('M2 face over a real pseudo-terminal', () => {
  it('enrol → identify → FACE punch delivered to the cloud; template sealed (rotated) in the vault', async () => {
    const s = await stack();
    await s.role.start();
    expect(s.role.status).toBe('ready');
    expect(peripheral(s, 'face')).toMatchObject({ online: true });
    await person(s, 'acme', 'sub-1', { name: 'Alice Example' });
    const r = await enrolFace(s, 'acme', 'sub-1', 3);
    expect(r).toMatchObject({ orgId: 'acme', subjectId: 'sub-1' });
    expect(s.role.inIndex('acme', 'sub-1')).toBe(true);
    const [meta] = await s.vault.listTemplates('acme', 'sub-1');
    expect(meta).toMatchObject({ modality: 'face', slot: 0, recordId: r.recordId });

    // The stored template is in the org's rotated space (not the raw identity direction), and sealed on disk.
    const stored = await s.vault.getTemplate('acme', r.recordId);
    expect(stored.bytes.length).toBe(512 * 4);
    const t = new Float32Array(stored.bytes.buffer.slice(stored.bytes.byteOffset, stored.bytes.byteOffset + stored.bytes.length));
    const id = s.face.population.identity(3);
    let cos = 0;
    for (let i = 0; i < 512; i++) cos += t[i]! * id[i]!;
    expect(Math.abs(cos)).toBeLessThan(0.25);
    for (const f of dataFiles(s)) expect(f.bytes.indexOf(stored.bytes.subarray(0, 32)), f.name).toBe(-1);

    expect(await presentFace(s, 3)).toBe('punch');
    await waitUntil(() => s.received.length === 1, 10_000, 'the punch at the cloud');
    const p = s.received[0]!;
    expect(p).toMatchObject({ orgId: 'acme', subjectId: 'sub-1', method: PunchMethod.PUNCH_METHOD_FACE });
    expect([ScoreBucket.SCORE_BUCKET_LOW, ScoreBucket.SCORE_BUCKET_MEDIUM, ScoreBucket.SCORE_BUCKET_HIGH]).toContain(p.matchScore);
    expect([ScoreBucket.SCORE_BUCKET_MEDIUM, ScoreBucket.SCORE_BUCKET_HIGH, ScoreBucket.SCORE_BUCKET_LOW]).toContain(p.liveness);

    // Feedback went to the module's display (no name unless configured).
    await waitUntil(() => (s.face.sim.state() as { display?: { line1?: string } }).display?.line1 === 'Welcome', 5000, 'welcome on the display');

    // The same person again inside the repeat window: one punch. A stranger: none.
    expect(await presentFace(s, 3)).toBe('repeat');
    expect(await presentFace(s, 77)).toBe('no-match');
    await sleep(200);
    expect(s.received).toHaveLength(1);
    expect(s.role.stats).toMatchObject({ facePunches: 1, repeats: 1, noMatch: 1, enrolments: 1 });

    // Nothing personal in any log line: no subject id, no name.
    const logText = s.logs.join('\n');
    expect(logText).not.toContain('sub-1');
    expect(logText).not.toContain('Alice');
  });

  it('a spoof of an enrolled person is refused on liveness: no punch', async () => {
    const s = await stack({ role: { repeatWindowSec: 0 } });
    await s.role.start();
    await person(s, 'acme', 'sub-1');
    await enrolFace(s, 'acme', 'sub-1', 5);
    for (let i = 0; i < 5; i++) expect(await presentFace(s, 5, { spoof: true })).toBe('spoof');
    await sleep(300);
    expect(s.received).toHaveLength(0);
    expect(s.role.stats).toMatchObject({ spoofs: 5, facePunches: 0 });
    expect((s.face.sim.state() as { led?: string }).led).toBe('red');
    // The genuine face still works.
    expect(await presentFace(s, 5)).toBe('punch');
  });

  it('refuses enrolment without consent (before the camera is used) and a face already enrolled for another subject', async () => {
    const s = await stack();
    await s.role.start();
    await person(s, 'acme', 'sub-nc', { consent: false });
    await expect(s.role.enrol('acme', 'sub-nc')).rejects.toMatchObject({ code: 'CONSENT_REFUSED' });
    expect(s.face.sim.state().enrolling).toBeNull();
    await person(s, 'acme', 'sub-a');
    await person(s, 'acme', 'sub-b');
    await enrolFace(s, 'acme', 'sub-a', 9);
    await expect(enrolFace(s, 'acme', 'sub-b', 9)).rejects.toMatchObject({ code: 'FACE_DUPLICATE' });
    expect(await s.vault.listTemplates('acme', 'sub-b')).toEqual([]);
    expect(s.role.inIndex('acme', 'sub-b')).toBe(false);
  });

  it('erasure: eraseSubject and withdrawOrg take people out of the in-memory index and the vault', async () => {
    const s = await stack({ role: { repeatWindowSec: 0 } });
    await s.role.start();
    for (const [id, p] of [
      ['sub-1', 11],
      ['sub-2', 12],
      ['sub-3', 13],
    ] as const) {
      await person(s, 'acme', id);
      await enrolFace(s, 'acme', id, p);
    }
    expect(s.role.indexSizes().get('acme')).toBe(3);
    const purger = s.agent.privacy!.purger;

    const one = await purger.eraseSubject('acme', 'sub-1');
    expect(one.ok).toBe(true);
    const part = one.receipt.participants.find((x: { name: string }) => x.name === 'm2-face-index');
    expect(part).toMatchObject({ ok: true, counts: { faceIndexTemplates: 1 } });
    expect(s.role.inIndex('acme', 'sub-1')).toBe(false);
    expect(s.role.indexSizes().get('acme')).toBe(2);
    expect(await s.vault.listTemplates('acme', 'sub-1')).toEqual([]);
    expect(await presentFace(s, 11)).toBe('no-match');
    expect(await presentFace(s, 12)).toBe('punch');

    // The agent's onSubjectsErased hook (roster sync) drops people too.
    s.role.subjectsErased('acme', ['sub-3']);
    expect(s.role.inIndex('acme', 'sub-3')).toBe(false);

    const all = await purger.withdrawOrg('acme');
    expect(all.ok).toBe(true);
    expect(s.role.indexSizes().has('acme')).toBe(false);
    expect(await s.vault.orgs()).toEqual([]);
    await expect(s.vault.faceTransformKey('acme')).rejects.toMatchObject({ code: 'NO_ORG_KEY' });
    expect(await presentFace(s, 12)).toBe('no-match');
    await sleep(200);
    expect(s.received.map((p) => p.subjectId)).toEqual(['sub-2']);
  });

  it('start-up loads every org from the vault through its transform (streamed), and identifies after a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tallybox-m2-restart-'));
    dirs.push(dir);
    const a = await stack({ dir });
    await a.role.start();
    await person(a, 'acme', 'sub-1');
    await person(a, 'beta', 'sub-9');
    await enrolFace(a, 'acme', 'sub-1', 20);
    await enrolFace(a, 'beta', 'sub-9', 21);
    await a.close();
    stacks.delete(a);

    const b = await stack({ dir, role: { loadBatchSize: 1 } });
    const report = await b.role.start();
    expect(report).toMatchObject({ orgs: 2, templates: 2, quarantined: 0, skipped: 0 });
    expect(Object.fromEntries(b.role.indexSizes())).toEqual({ acme: 1, beta: 1 });
    expect(await presentFace(b, 21)).toBe('punch');
    expect(await presentFace(b, 20)).toBe('punch');
    await waitUntil(() => b.received.length === 2, 10_000, 'two punches');
    expect(b.received.map((p) => [p.orgId, p.subjectId]).sort()).toEqual([
      ['acme', 'sub-1'],
      ['beta', 'sub-9'],
    ]);
  });

  it('the same person enrolled in two orgs: unlinkable stored templates, one punch per org', async () => {
    const s = await stack();
    await s.role.start();
    await person(s, 'org-a', 'x-1');
    await person(s, 'org-b', 'y-1');
    const ra = await enrolFace(s, 'org-a', 'x-1', 40);
    const rb = await enrolFace(s, 'org-b', 'y-1', 40);
    const ta = (await s.vault.getTemplate('org-a', ra.recordId)).bytes;
    const tb = (await s.vault.getTemplate('org-b', rb.recordId)).bytes;
    const fa = new Float32Array(ta.buffer.slice(ta.byteOffset, ta.byteOffset + ta.length));
    const fb = new Float32Array(tb.buffer.slice(tb.byteOffset, tb.byteOffset + tb.length));
    let cos = 0;
    for (let i = 0; i < 512; i++) cos += fa[i]! * fb[i]!;
    expect(Math.abs(cos)).toBeLessThan(0.25);
    expect(await presentFace(s, 40)).toBe('punch');
    await waitUntil(() => s.received.length === 2, 10_000, 'a punch for each org');
    expect(s.received.map((p) => p.orgId).sort()).toEqual(['org-a', 'org-b']);
  });

  it('the face-transform key differs per org, is stable, and is gone after withdrawal', async () => {
    const s = await stack();
    await person(s, 'org-a', 's-1');
    await person(s, 'org-b', 's-1');
    const ka = await s.vault.faceTransformKey('org-a');
    const kb = await s.vault.faceTransformKey('org-b');
    expect(ka.length).toBe(32);
    expect(ka.equals(kb)).toBe(false);
    expect((await s.vault.faceTransformKey('org-a')).equals(ka)).toBe(true);
    await expect(s.vault.faceTransformKey('org-none')).rejects.toMatchObject({ code: 'NO_ORG_KEY' });
    const out = await s.agent.privacy!.purger.withdrawOrg('org-a');
    expect(out.ok).toBe(true);
    await expect(s.vault.faceTransformKey('org-a')).rejects.toMatchObject({ code: 'NO_ORG_KEY' });
    expect((await s.vault.faceTransformKey('org-b')).equals(kb)).toBe(true);
    // A re-created org gets a new data key, hence a new transform: old templates would not match.
    await person(s, 'org-a', 's-1');
    expect((await s.vault.faceTransformKey('org-a')).equals(ka)).toBe(false);
  });

  it('SubjectUpsert with consent starts a face enrolment (attach hook); without consent nobody is asked', async () => {
    const s = await stack();
    await s.role.start();
    let changed: ((org: string, id: string, invited: readonly string[]) => void) | undefined;
    const hooks = { onSubjectChanged: (fn: (org: string, id: string, invited: readonly string[]) => void) => void (changed = fn) };
    const { enrolments } = attachM2Role({ agent: hooks, role: s.role, vault: s.vault });
    await person(s, 'acme', 'sub-nc', { consent: false });
    changed!('acme', 'sub-nc', ['face']);
    await enrolments();
    expect(s.face.sim.state().enrolling).toBeNull();
    await person(s, 'acme', 'sub-ok');
    changed!('acme', 'sub-ok', ['face']);
    await waitUntil(() => s.face.sim.state().enrolling !== null, 15_000, 'the module in enrolment mode');
    for (let i = 0; i < 3; i++) await s.face.sim.present(50);
    await enrolments();
    expect(s.role.inIndex('acme', 'sub-ok')).toBe(true);
    expect(await s.vault.listTemplates('acme', 'sub-ok')).toHaveLength(1);
  });
});

describe('M2 module link and display', () => {
  it('module unplugged → face peripheral offline; back on the same link → ready again, punches resume', async () => {
    const s = await stack({ role: { repeatWindowSec: 0, backoff: { minMs: 50, maxMs: 200 } } });
    await s.role.start();
    await person(s, 'acme', 'sub-1');
    await enrolFace(s, 'acme', 'sub-1', 14);
    await s.face.close();
    await waitUntil(() => s.role.status === 'offline', 10_000, 'the role offline');
    await waitUntil(() => peripheral(s, 'face')?.online === false, 5000, 'face peripheral offline');
    // The same module comes back on the same device path (same seeded population).
    const again = await startFaceSimulator({ link: s.link, control: false, people: 200, dim: 512, seed: 11 });
    extra.push(() => again.close()); // its socat goes with the test, pass or fail
    s.face = again; // and the stack's close() stops this one too (close is idempotent)
    await waitUntil(() => s.role.status === 'ready', 15_000, 'the role ready again');
    expect(peripheral(s, 'face')).toMatchObject({ online: true });
    expect(s.role.inIndex('acme', 'sub-1')).toBe(true);
    expect(await presentFace(s, 14)).toBe('punch');
  });

  it('showFirstName: the first name goes to the local display only, never to logs or the cloud', async () => {
    const s = await stack({ role: { display: { showFirstName: true } } });
    await s.role.start();
    await person(s, 'acme', 'sub-1', { name: 'Zelda Quartermain' });
    await enrolFace(s, 'acme', 'sub-1', 16);
    expect(await presentFace(s, 16)).toBe('punch');
    await waitUntil(() => (s.face.sim.state() as { display?: { line1?: string } }).display?.line1 === 'Welcome Zelda', 5000, 'the name on the display');
    await waitUntil(() => s.received.length === 1, 10_000, 'the punch');
    expect(JSON.stringify(s.received[0])).not.toContain('Zelda');
    expect(s.logs.join('\n')).not.toMatch(/Zelda|Quartermain/);
  });
});

describe('M2 tamper switch', () => {
  it("'alarm': the tamper peripheral goes offline in the device state and punches go on", async () => {
    const s = await stack({ role: { tamperResponse: 'alarm', repeatWindowSec: 0 } });
    await s.role.start();
    await person(s, 'acme', 'sub-1');
    await enrolFace(s, 'acme', 'sub-1', 4);
    await s.face.sim.tamper(true);
    await waitUntil(() => peripheral(s, 'tamper')?.online === false, 5000, 'tamper alarm in the state');
    expect(peripheral(s, 'tamper')!.detail).toMatch(/case opened/);
    expect(await presentFace(s, 4)).toBe('punch');
    await s.face.sim.tamper(false);
    await waitUntil(() => peripheral(s, 'tamper')?.online === true, 5000, 'tamper cleared');
  });

  it("'zeroise': the in-memory index is wiped and every punch refused until restart", async () => {
    const s = await stack({ role: { tamperResponse: 'zeroise', repeatWindowSec: 0 } });
    await s.role.start();
    await person(s, 'acme', 'sub-1');
    await enrolFace(s, 'acme', 'sub-1', 6);
    await s.vault.putCredential('acme', 'card', '12345678', 'sub-1');
    await s.face.sim.tamper(true);
    await waitUntil(() => s.role.status === 'locked', 5000, 'the role locked');
    expect(s.role.indexSizes().size).toBe(0);
    expect(peripheral(s, 'tamper')).toMatchObject({ online: false });
    expect(await presentFace(s, 6)).toBe('locked');
    expect(await swipeCard(s, '12345678')).toBe('locked');
    await expect(s.role.enrol('acme', 'sub-1')).rejects.toMatchObject({ code: 'ROLE_LOCKED' });
    // Closing the case does not unlock it.
    await s.face.sim.tamper(false);
    await sleep(100);
    expect(s.role.status).toBe('locked');
    await sleep(200);
    expect(s.received).toHaveLength(0);
    // The vault is untouched: a restart reloads the template.
    expect(await s.vault.listTemplates('acme', 'sub-1')).toHaveLength(1);
  });
});

describe('M2 card reader through the HID transport interface', () => {
  it('card → CARD punch at the cloud; no card number in clear in any database file or log', async () => {
    const s = await stack({ role: { repeatWindowSec: 0 } });
    await s.role.start();
    expect(peripheral(s, 'card-reader')).toMatchObject({ online: true });
    const CARD = '0004211234987';
    const OTHER = '7700991122';
    await person(s, 'acme', 'sub-card');
    await s.vault.putCredential('acme', 'card', CARD, 'sub-card');
    expect(await swipeCard(s, CARD)).toBe('punch');
    expect(await swipeCard(s, OTHER)).toBe('unknown-card');
    expect(await swipeCard(s, CARD)).toBe('punch');
    await waitUntil(() => s.received.length === 2, 10_000, 'two card punches at the cloud');
    for (const p of s.received) {
      expect(p).toMatchObject({ orgId: 'acme', subjectId: 'sub-card', method: PunchMethod.PUNCH_METHOD_CARD, matchScore: ScoreBucket.SCORE_BUCKET_UNSPECIFIED });
    }
    expect(s.role.stats).toMatchObject({ cardPunches: 2, cardUnknown: 1 });
    expect(s.role.cardReader!.stats.reads).toBe(3);

    // Byte scan of every database file (vault.db, outbox.db, -wal, -shm): the numbers are nowhere in clear.
    const files = dataFiles(s);
    expect(files.map((f) => f.name.split('/').pop()).sort()).toEqual(expect.arrayContaining(['vault.db', 'outbox.db', 'vault.db-wal', 'outbox.db-wal']));
    for (const f of files) {
      for (const n of [CARD, OTHER]) {
        expect(f.bytes.indexOf(Buffer.from(n, 'ascii')), `${n} in ${f.name}`).toBe(-1);
        expect(f.bytes.indexOf(Buffer.from(n, 'utf16le')), `${n} (UTF-16) in ${f.name}`).toBe(-1);
        expect(f.bytes.indexOf(Buffer.from(n.length % 2 ? '0' + n : n, 'hex')), `${n} (BCD) in ${f.name}`).toBe(-1);
      }
    }
    const logText = s.logs.join('\n');
    expect(logText).not.toContain(CARD);
    expect(logText).not.toContain(OTHER);
    expect(logText).not.toContain('sub-card');
  });
});
