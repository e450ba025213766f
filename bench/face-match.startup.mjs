// Child process of face-match.bench.mjs (a fresh process, so RSS means something).
//   prepare DIR N   : provision keys, seal N face templates (dim 512) into a vault in DIR/data,
//                     in the org's transformed space (key: Vault.faceTransformKey)
//   start DIR       : what the M2 role does: open the vault, derive the org transform from
//                     Vault.faceTransformKey, stream the face templates with
//                     Vault.forEachTemplate (BATCH at a time, each batch zeroed after use)
//                     into the matcher; print {readyMs, rssMb, ...} as JSON
//   start-all DIR   : the same with Vault.decryptTemplates (every plaintext at once): the baseline
import { join } from 'node:path';
import { FileKeyProvider, provisionKeyFiles, Vault } from '../dist/src/vault/index.js';
import { FaceMatcher } from '../dist/src/identify/face/matcher.js';
import { CancelableTransform } from '../dist/src/identify/face/transform.js';
import { Population } from '../dist/simulators/face/population.js';
import { silentLogger } from '../dist/src/util/log.js';

const [mode, dir, nArg] = process.argv.slice(2);
const ORG = 'org-bench';
const DIM = 512;
const BATCH = Number(process.env.FACE_BATCH ?? 256);
const paths = { data: join(dir, 'data'), kek: join(dir, 'keys', 'tallybox.kek') };

if (mode === 'prepare') {
  const n = Number(nArg);
  await provisionKeyFiles({ kekPath: paths.kek, dataDir: paths.data });
  const vault = await Vault.open({ dataDir: paths.data, keyProvider: new FileKeyProvider({ kekPath: paths.kek }), logger: silentLogger() });
  const pop = new Population({ size: n, dim: DIM, seed: 5 });
  const subjects = Array.from({ length: n }, (_, i) => ({ subjectId: `subject-${String(i).padStart(6, '0')}`, displayName: `Person ${i}`, minor: false, consents: [{ kind: 'biometric' }] }));
  for (let i = 0; i < n; i += 1000) await vault.upsertSubjects(ORG, subjects.slice(i, i + 1000));
  // The org's key exists now: its face-transform key is derived from it.
  const key = await vault.faceTransformKey(ORG);
  const transform = new CancelableTransform({ orgKey: key, dim: DIM });
  key.fill(0);
  const m = new FaceMatcher({ dim: DIM, transform, initialCapacity: 16 });
  for (let i = 0; i < n; i += 1000) {
    const items = [];
    for (let p = i; p < Math.min(n, i + 1000); p++) {
      let template;
      // A poor capture fails the consistency check now and then (failure to enrol): capture again, as a terminal would.
      for (let attempt = 0; !template; attempt++) {
        try {
          ({ template } = m.prepareEnrolment(subjects[p].subjectId, [pop.present(p), pop.present(p), pop.present(p)]));
        } catch (err) {
          if (err?.code !== 'FACE_CAPTURES_INCONSISTENT' || attempt > 5) throw err;
        }
      }
      items.push({ subjectId: subjects[p].subjectId, modality: 'face', slot: 0, bytes: new Uint8Array(template.buffer) });
    }
    await vault.enrolTemplates(ORG, items);
  }
  await vault.close();
} else if (mode === 'start' || mode === 'start-all') {
  const t0 = performance.now();
  const vault = await Vault.open({ dataDir: paths.data, keyProvider: new FileKeyProvider({ kekPath: paths.kek }), logger: silentLogger() });
  const t1 = performance.now();
  const key = await vault.faceTransformKey(ORG);
  const transform = new CancelableTransform({ orgKey: key, dim: DIM });
  key.fill(0);
  const t2 = performance.now();
  let matcher;
  let t3;
  if (mode === 'start') {
    // Streaming: one batch of plaintext at a time, zeroed by the vault after the callback.
    matcher = new FaceMatcher({ dim: DIM, transform, initialCapacity: 1024 });
    const row = new Float32Array(DIM);
    const rowBytes = new Uint8Array(row.buffer);
    await vault.forEachTemplate(ORG, 'face', BATCH, (batch) => {
      for (const t of batch) {
        rowBytes.set(t.bytes);
        matcher.add(t.subjectId, row);
      }
    });
    row.fill(0);
    t3 = performance.now();
  } else {
    const { templates } = await vault.decryptTemplates(ORG);
    t3 = performance.now();
    matcher = new FaceMatcher({ dim: DIM, transform, initialCapacity: templates.length });
    for (const t of templates) {
      if (t.modality !== 'face') continue;
      const v = new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
      matcher.add(t.subjectId, v);
      t.bytes.fill(0); // the plaintext copy is not needed once it is in the index
    }
  }
  const t4 = performance.now();
  // Ready = able to answer a match.
  matcher.search(new Population({ size: 1, dim: DIM, seed: 5 }).present(0).vector);
  const ready = performance.now() - t0;
  const rssMb = process.memoryUsage().rss / 2 ** 20;
  // In streaming mode decrypt and index interleave: decryptMs covers both, indexMs is ~0.
  process.stdout.write(JSON.stringify({ mode, readyMs: ready, rssMb, openMs: t1 - t0, transformMs: t2 - t1, decryptMs: t3 - t2, indexMs: t4 - t3, templates: matcher.size }) + '\n');
  await vault.close();
}
