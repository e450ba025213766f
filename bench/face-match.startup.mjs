// Child process of face-match.bench.mjs (a fresh process, so RSS means something).
//   prepare DIR N : provision keys, seal N face templates (dim 512) into a vault in DIR/data
//   start DIR     : open the vault, derive the org transform, decrypt all face templates,
//                   fill the matcher; print {readyMs, rssMb, ...} as JSON
import { join } from 'node:path';
import { FileKeyProvider, provisionKeyFiles, Vault } from '../dist/src/vault/index.js';
import { FaceMatcher } from '../dist/src/identify/face/matcher.js';
import { CancelableTransform } from '../dist/src/identify/face/transform.js';
import { Population } from '../dist/simulators/face/population.js';
import { silentLogger } from '../dist/src/util/log.js';

const [mode, dir, nArg] = process.argv.slice(2);
const ORG = 'org-bench';
const DIM = 512;
// The transform key would be derived from the org's data key by the vault; a fixed one here.
const ORG_TRANSFORM_KEY = new Uint8Array(32).fill(9);
const paths = { data: join(dir, 'data'), kek: join(dir, 'keys', 'tallybox.kek') };

if (mode === 'prepare') {
  const n = Number(nArg);
  await provisionKeyFiles({ kekPath: paths.kek, dataDir: paths.data });
  const vault = await Vault.open({ dataDir: paths.data, keyProvider: new FileKeyProvider({ kekPath: paths.kek }), logger: silentLogger() });
  const pop = new Population({ size: n, dim: DIM, seed: 5 });
  const transform = new CancelableTransform({ orgKey: ORG_TRANSFORM_KEY, dim: DIM });
  const m = new FaceMatcher({ dim: DIM, transform, initialCapacity: 16 });
  const subjects = Array.from({ length: n }, (_, i) => ({ subjectId: `subject-${String(i).padStart(6, '0')}`, displayName: `Person ${i}`, minor: false, consents: [{ kind: 'biometric' }] }));
  for (let i = 0; i < n; i += 1000) await vault.upsertSubjects(ORG, subjects.slice(i, i + 1000));
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
} else if (mode === 'start') {
  const t0 = performance.now();
  const vault = await Vault.open({ dataDir: paths.data, keyProvider: new FileKeyProvider({ kekPath: paths.kek }), logger: silentLogger() });
  const t1 = performance.now();
  const transform = new CancelableTransform({ orgKey: ORG_TRANSFORM_KEY, dim: DIM });
  const t2 = performance.now();
  const { templates } = await vault.decryptTemplates(ORG);
  const t3 = performance.now();
  const matcher = new FaceMatcher({ dim: DIM, transform, initialCapacity: templates.length });
  for (const t of templates) {
    if (t.modality !== 'face') continue;
    const v = new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
    matcher.add(t.subjectId, v);
    t.bytes.fill(0); // the plaintext copy is not needed once it is in the index
  }
  const t4 = performance.now();
  // Ready = able to answer a match.
  matcher.search(new Population({ size: 1, dim: DIM, seed: 5 }).present(0).vector);
  const ready = performance.now() - t0;
  const rssMb = process.memoryUsage().rss / 2 ** 20;
  process.stdout.write(JSON.stringify({ readyMs: ready, rssMb, openMs: t1 - t0, transformMs: t2 - t1, decryptMs: t3 - t2, indexMs: t4 - t3, templates: matcher.size }) + '\n');
  await vault.close();
}
