import { describe, expect, it } from 'vitest';
import { Population } from '../../../simulators/face/population.js';
import { ScoreMatrix, scoreJs } from './kernel.js';
import { FaceMatcher } from './matcher.js';

const pop = new Population({ size: 300, dim: 512, seed: 42 });
const captures = (p: number, n = 3) => Array.from({ length: n }, () => pop.present(p));

describe('ScoreMatrix kernel', () => {
  it('SIMD scores equal the plain float32 loop, including odd dims and growth', () => {
    for (const dim of [128, 500, 512]) {
      const m = new ScoreMatrix({ dim, initialCapacity: 16 });
      expect(m.simd).toBe(true);
      const rows: Float32Array[] = [];
      for (let i = 0; i < 100; i++) {
        const v = Float32Array.from({ length: dim }, () => Math.random() - 0.5);
        rows.push(v);
        m.push(v);
      }
      const q = Float32Array.from({ length: dim }, () => Math.random() - 0.5);
      const got = m.scores(q).slice();
      const ref = new Float32Array(100);
      scoreJs(
        m.data,
        Float32Array.from({ length: m.stride }, (_, i) => q[i] ?? 0),
        100,
        m.stride,
        ref,
      );
      for (let i = 0; i < 100; i++) expect(got[i]).toBeCloseTo(ref[i]!, 4);
      // remove-swap keeps the others intact
      m.removeSwap(3);
      expect(m.size).toBe(99);
      expect(m.scores(q)[3]).toBeCloseTo(ref[99]!, 4);
    }
  });
});

describe('FaceMatcher', () => {
  it('enrols by averaging captures and identifies the right subject (SIMD and JS kernels)', () => {
    for (const useSimd of [true, false]) {
      const m = new FaceMatcher({ dim: 512, useSimd });
      for (let p = 0; p < 50; p++) m.enrol(`s${p}`, captures(p));
      expect(m.size).toBe(50);
      let right = 0;
      for (let p = 0; p < 50; p++) {
        const r = m.identify(pop.present(p));
        if (r.decision === 'match' && r.subjectId === `s${p}`) right++;
      }
      expect(right).toBeGreaterThanOrEqual(48);
      const stranger = m.identify(pop.present(250));
      expect(stranger.decision).toBe('no-match');
    }
  });

  it('rejects spoofs before matching', () => {
    const m = new FaceMatcher({ dim: 512 });
    m.enrol('a', captures(1));
    for (let i = 0; i < 50; i++) expect(m.identify(pop.spoof(1)).decision).toBe('spoof');
    expect(() => m.enrol('b', [pop.present(2), pop.spoof(2), pop.present(2)])).toThrow(expect.objectContaining({ code: 'FACE_SPOOF' }));
  });

  it('refuses a face already enrolled for another subject, allows a second template for the same one', () => {
    const m = new FaceMatcher({ dim: 512 });
    m.enrol('alice', captures(7));
    expect(() => m.enrol('bob', captures(7))).toThrow(expect.objectContaining({ code: 'FACE_DUPLICATE' }));
    expect(m.size).toBe(1);
    m.enrol('alice', captures(7));
    expect(m.size).toBe(2);
  });

  it('refuses too few, inconsistent and wrong-sized captures; changes nothing', () => {
    const m = new FaceMatcher({ dim: 512 });
    expect(() => m.enrol('a', captures(1, 2))).toThrow(expect.objectContaining({ code: 'FACE_TOO_FEW_CAPTURES' }));
    expect(() => m.enrol('a', [pop.present(1), pop.present(2), pop.present(3)])).toThrow(expect.objectContaining({ code: 'FACE_CAPTURES_INCONSISTENT' }));
    expect(() => m.identify({ vector: new Float32Array(128), liveness: 1 })).toThrow(expect.objectContaining({ code: 'FACE_DIM_MISMATCH' }));
    expect(() => m.add('a', new Float32Array(512))).toThrow(expect.objectContaining({ code: 'FACE_BAD_VECTOR' }));
    expect(() => new FaceMatcher({ dim: 512, threshold: 2 })).toThrow(/threshold 2/);
    expect(m.size).toBe(0);
  });

  it('remove(subject) and clear() take people out of the index', () => {
    const m = new FaceMatcher({ dim: 512, initialCapacity: 4 });
    for (let p = 0; p < 20; p++) m.enrol(`s${p}`, captures(p));
    m.enrol('s5', captures(5));
    expect(m.remove('s5')).toBe(2);
    expect(m.has('s5')).toBe(false);
    expect(m.identify(pop.present(5)).decision).toBe('no-match');
    // the rows that were swapped into the holes still answer for the right people
    for (const p of [0, 6, 19]) expect(m.identify(pop.present(p))).toMatchObject({ decision: 'match', subjectId: `s${p}` });
    m.clear();
    expect(m.size).toBe(0);
    expect(m.search(pop.present(1).vector)).toBeNull();
  });

  it('works at dim 128', () => {
    const p128 = new Population({ size: 100, dim: 128, seed: 3 });
    const m = new FaceMatcher({ dim: 128, threshold: 0.5 });
    for (let p = 0; p < 40; p++) m.enrol(`s${p}`, [p128.present(p), p128.present(p), p128.present(p)]);
    let right = 0;
    for (let p = 0; p < 40; p++) {
      const r = m.identify(p128.present(p));
      if (r.decision === 'match' && r.subjectId === `s${p}`) right++;
    }
    expect(right).toBeGreaterThanOrEqual(37);
  });
});
