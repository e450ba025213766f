import { describe, expect, it } from 'vitest';
import { Population } from '../../../simulators/face/population.js';
import { FaceMatcher } from './matcher.js';
import { CancelableTransform } from './transform.js';

const DIM = 512;
const keyA = new Uint8Array(32).fill(0xa1);
const keyB = new Uint8Array(32).fill(0xb2);
const keyA2 = new Uint8Array(32).fill(0xa3);
const tA = new CancelableTransform({ orgKey: keyA, dim: DIM });
const tB = new CancelableTransform({ orgKey: keyB, dim: DIM });
const pop = new Population({ size: 200, dim: DIM, seed: 9 });
const cos = (a: Float32Array, b: Float32Array) => {
  let d = 0,
    x = 0,
    y = 0;
  for (let i = 0; i < a.length; i++) {
    d += a[i]! * b[i]!;
    x += a[i]! * a[i]!;
    y += b[i]! * b[i]!;
  }
  return d / Math.sqrt(x * y);
};

describe('CancelableTransform', () => {
  it('is deterministic in the key and differs between keys', () => {
    const again = new CancelableTransform({ orgKey: keyA, dim: DIM });
    const x = pop.present(1).vector;
    expect(Buffer.from(again.apply(x).buffer).equals(Buffer.from(tA.apply(x).buffer))).toBe(true);
    expect(cos(tA.apply(x), tB.apply(x))).toBeLessThan(0.25);
    expect(() => new CancelableTransform({ orgKey: new Uint8Array(8), dim: DIM })).toThrow(expect.objectContaining({ code: 'FACE_TRANSFORM_KEY_TOO_SHORT' }));
  });

  it('preserves cosine (it is orthogonal), so matching accuracy is unchanged', () => {
    for (let i = 0; i < 20; i++) {
      const a = pop.present(i).vector;
      const b = pop.present(i % 3 === 0 ? i : i + 1).vector;
      expect(cos(tA.apply(a), tA.apply(b))).toBeCloseTo(cos(a, b), 5);
      expect(cos(tA.invert(tA.apply(a)), a)).toBeCloseTo(1, 5);
    }
    // Same decisions and scores with and without the transform.
    const plain = new FaceMatcher({ dim: DIM });
    const secret = new FaceMatcher({ dim: DIM, transform: tA });
    const enrol = Array.from({ length: 60 }, (_, p) => [pop.present(p), pop.present(p), pop.present(p)]);
    enrol.forEach((c, p) => {
      plain.enrol(`s${p}`, c);
      secret.enrol(`s${p}`, c);
    });
    for (let k = 0; k < 100; k++) {
      const probe = pop.present(k % 120);
      const a = plain.identify(probe);
      const b = secret.identify(probe);
      expect(b.decision).toBe(a.decision);
      if (a.decision === 'match' && b.decision === 'match') expect(b.subjectId).toBe(a.subjectId);
      if (a.decision !== 'spoof' && b.decision !== 'spoof') expect(b.score).toBeCloseTo(a.score, 4);
    }
  });

  it('is unlinkable: one person enrolled in two orgs looks like two strangers', () => {
    const orgA = new FaceMatcher({ dim: DIM, transform: tA });
    const orgB = new FaceMatcher({ dim: DIM, transform: tB });
    const mated: number[] = [];
    const nonMated: number[] = [];
    const templatesB: Float32Array[] = [];
    for (let p = 0; p < 100; p++) templatesB.push(orgB.prepareEnrolment(`b${p}`, [pop.present(p), pop.present(p), pop.present(p)]).template);
    for (let p = 0; p < 100; p++) {
      // An attacker holding both orgs' stored templates cross-matches them.
      const tplA = orgA.prepareEnrolment(`a${p}`, [pop.present(p), pop.present(p), pop.present(p)]).template;
      mated.push(cos(tplA, templatesB[p]!));
      nonMated.push(cos(tplA, templatesB[(p + 1) % 100]!));
    }
    const mean = (a: number[]) => a.reduce((s, x) => s + x, 0) / a.length;
    const sd = (a: number[]) => Math.sqrt(mean(a.map((x) => (x - mean(a)) ** 2)));
    // Mated pairs score like non-mated ones: around 0 with sd ~1/sqrt(512), never near the threshold.
    expect(Math.abs(mean(mated))).toBeLessThan(0.02);
    expect(Math.abs(mean(mated) - mean(nonMated))).toBeLessThan(0.02);
    expect(sd(mated)).toBeLessThan(0.07);
    expect(Math.max(...mated.map(Math.abs))).toBeLessThan(orgA.threshold / 2);
    // Same org, same person, for contrast: far above the threshold.
    const again = orgB.prepareEnrolment('x', [pop.present(0), pop.present(0), pop.present(0)]).template;
    expect(cos(again, templatesB[0]!)).toBeGreaterThan(0.8);
  });

  it('is renewable: after key rotation re-issued templates match, old ones neither match nor link', () => {
    const tA2 = new CancelableTransform({ orgKey: keyA2, dim: DIM });
    const before = new FaceMatcher({ dim: DIM, transform: tA });
    const stored = Array.from({ length: 40 }, (_, p) => before.enrol(`s${p}`, [pop.present(p), pop.present(p), pop.present(p)]).template);
    const after = new FaceMatcher({ dim: DIM, transform: tA2 });
    stored.forEach((t, p) => after.add(`s${p}`, CancelableTransform.reissue(t, tA, tA2)));
    const leaked = new FaceMatcher({ dim: DIM, transform: tA2 });
    stored.forEach((t, p) => leaked.add(`s${p}`, t)); // old templates used with the new key
    let ok = 0;
    let leakedHits = 0;
    for (let p = 0; p < 40; p++) {
      const probe = pop.present(p);
      const r = after.identify(probe);
      if (r.decision === 'match' && r.subjectId === `s${p}`) ok++;
      if (leaked.identify(probe).decision === 'match') leakedHits++;
      expect(Math.abs(cos(stored[p]!, CancelableTransform.reissue(stored[p]!, tA, tA2)))).toBeLessThan(0.25);
    }
    expect(ok).toBeGreaterThanOrEqual(38);
    expect(leakedHits).toBe(0);
  });
});
