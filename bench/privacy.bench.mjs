// Privacy benchmarks (issue 3), each against a baseline measured in the same run.
//   purge:   withdraw an org holding 10,000 templates (2 KB) and 100,000 queued punches,
//            including VACUUM and the verification scan; split by step.
//            Baseline: the bare minimum without the pipeline — DELETE the rows + VACUUM both files.
//   decrypt: decrypt 10,000 sealed templates at start-up (vault.decryptTemplates).
//            Baseline: AES-256-GCM decryption of the same number of 2 KB blobs in a loop (no SQLite).
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { outboxErasureParticipant } from '../dist/src/outbox/erasure.js';
import { Outbox } from '../dist/src/outbox/outbox.js';
import { PurgeJournal } from '../dist/src/privacy/journal.js';
import { Purger } from '../dist/src/privacy/purge.js';
import { Sqlite } from '../dist/src/store/sqlite.js';
import { silentLogger } from '../dist/src/util/log.js';
import { FileKeyProvider, provisionKeyFiles, Vault } from '../dist/src/vault/index.js';
import { median } from './stats.mjs';

const TEMPLATES = Number(process.env.BENCH_TEMPLATES ?? 10_000);
const PUNCHES = Number(process.env.BENCH_PUNCHES ?? 100_000);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const ORG = 'org-withdrawn';
const OTHER = 'org-kept';

async function prepare(dir) {
  const dataDir = join(dir, 'data');
  const kekPath = join(dir, 'keys', 'tallybox.kek');
  await provisionKeyFiles({ kekPath, dataDir });
  const vault = await Vault.open({ dataDir, keyProvider: new FileKeyProvider({ kekPath }), logger: silentLogger() });
  for (const org of [ORG, OTHER]) {
    const n = org === ORG ? TEMPLATES : 100;
    const subjects = Array.from({ length: n }, (_, i) => ({ subjectId: `${org}-s${i}`, displayName: `Person ${i}`, minor: false, consents: [{ kind: 'biometric' }] }));
    for (let i = 0; i < n; i += 1000) await vault.upsertSubjects(org, subjects.slice(i, i + 1000));
    for (let i = 0; i < n; i += 1000) {
      await vault.enrolTemplates(
        org,
        subjects.slice(i, i + 1000).map((s) => ({ subjectId: s.subjectId, modality: 'fingerprint', slot: 0, bytes: randomBytes(2048) })),
      );
    }
  }
  const outbox = await Outbox.open({ path: join(dataDir, 'outbox.db'), capacity: 10_000_000 });
  for (let i = 0; i < PUNCHES; i += 5000) {
    await Promise.all(Array.from({ length: 5000 }, (_, k) => outbox.accept({ orgId: (i + k) % 10 === 0 ? OTHER : ORG, subjectId: `${ORG}-s${(i + k) % TEMPLATES}`, method: 1 })));
  }
  return { vault, outbox, dataDir };
}

async function purgeOnce() {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-purge-'));
  try {
    const { vault, outbox, dataDir } = await prepare(dir);
    // As on a device: the fingerprints are written to the purge journal before anything is erased.
    const journal = await PurgeJournal.open({ path: join(dataDir, 'purge-journal.db'), root: randomBytes(32) });
    const purger = new Purger({ store: vault, signer: vault.identity, deviceId: 'bench', participants: [outboxErasureParticipant(outbox)], journal, logger: silentLogger() });
    const t0 = performance.now();
    const o = await purger.withdrawOrg(ORG);
    const ms = performance.now() - t0;
    if (!o.ok) throw new Error(`purge not verified: ${JSON.stringify(o.receipt.scan)}`);
    await journal.close();
    await vault.close();
    await outbox.close();
    return { ms, timings: o.receipt.timingsMs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function bareDeleteOnce() {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-bare-'));
  try {
    const { vault, outbox, dataDir } = await prepare(dir);
    await vault.close();
    await outbox.close();
    const t0 = performance.now();
    for (const [file, sql] of [
      ['vault.db', `DELETE FROM templates WHERE org_id = '${ORG}'; DELETE FROM subjects WHERE org_id = '${ORG}';`],
      ['outbox.db', `DELETE FROM punches WHERE org_id = '${ORG}';`],
    ]) {
      const db = await Sqlite.open(join(dataDir, file));
      await db.exec(sql);
      await db.exec('PRAGMA wal_checkpoint(TRUNCATE); VACUUM;');
      await db.close();
    }
    return performance.now() - t0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function decryptOnce() {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-bench-dec-'));
  try {
    const { vault, outbox, dataDir } = await prepare(dir);
    await outbox.close();
    await vault.close();
    const kekPath = join(dir, 'keys', 'tallybox.kek');
    const fresh = await Vault.open({ dataDir, keyProvider: new FileKeyProvider({ kekPath }), logger: silentLogger() });
    const t0 = performance.now();
    const { templates } = await fresh.decryptTemplates(ORG);
    const ms = performance.now() - t0;
    if (templates.length !== TEMPLATES) throw new Error(`decrypted ${templates.length}`);
    await fresh.close();
    return ms;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function bareDecrypt() {
  const key = randomBytes(32);
  const blobs = Array.from({ length: TEMPLATES }, () => {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, iv);
    const ct = Buffer.concat([c.update(randomBytes(2048)), c.final()]);
    return { iv, ct, tag: c.getAuthTag() };
  });
  const t0 = performance.now();
  for (const b of blobs) {
    const d = createDecipheriv('aes-256-gcm', key, b.iv);
    d.setAuthTag(b.tag);
    Buffer.concat([d.update(b.ct), d.final()]);
  }
  return performance.now() - t0;
}

export async function run() {
  const purges = [];
  const bares = [];
  const decrypts = [];
  const bareDecs = [];
  for (let r = 0; r < REPS; r++) {
    purges.push(await purgeOnce());
    bares.push(await bareDeleteOnce());
    decrypts.push(await decryptOnce());
    bareDecs.push(bareDecrypt());
  }
  const purgeMs = median(purges.map((p) => p.ms));
  const split = ['erase', 'participants', 'compact', 'scan'].map((k) => `${k} ${median(purges.map((p) => p.timings[k])).toFixed(0)}`).join(', ');
  const bareMs = median(bares);
  const decMs = median(decrypts);
  const bareDecMs = median(bareDecs);
  return [
    {
      bench: 'privacy',
      metric: `withdraw org: ${TEMPLATES.toLocaleString('en-US')} templates + ${PUNCHES.toLocaleString('en-US')} punches (${split} ms)`,
      value: purgeMs,
      unit: 'ms',
      baseline: bareMs,
      ratio: purgeMs / bareMs,
      target: '≤ 3000 ms',
      ok: purgeMs <= 3000,
    },
    { bench: 'privacy', metric: `decrypt ${TEMPLATES.toLocaleString('en-US')} templates at start-up`, value: decMs, unit: 'ms', baseline: bareDecMs, ratio: decMs / bareDecMs, target: '≤ 300 ms', ok: decMs <= 300 },
  ];
}
