/**
 * The int8 prefilter (ScoreMatrix.best) must be exact: the same row and the
 * same float32 score as an argmax over the full float32 scan, for random,
 * structured and adversarial (near-tie, worst-quantisation) probes.
 */
import { describe, expect, it } from 'vitest';
import { Population } from '../../../simulators/face/population.js';
import { ScoreMatrix } from './kernel.js';
import { CancelableTransform } from './transform.js';
import { FaceMatcher } from './matcher.js';

/** Deterministic PRNG (mulberry32) so a failure reproduces. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gauss(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(rand() + 1e-300)) * Math.cos(2 * Math.PI * rand());
}

function unit(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  const k = 1 / Math.sqrt(s);
  for (let i = 0; i < v.length; i++) v[i] = v[i]! * k;
  return v;
}

function randomUnit(rand: () => number, dim: number): Float32Array {
  return unit(Float32Array.from({ length: dim }, () => gauss(rand)));
}

/** Reference: first maximum of the full float32 scan (the pre-prefilter search). */
function reference(m: ScoreMatrix, q: Float32Array, skip?: (r: number) => boolean): { row: number; score: number } | null {
  const s = m.scores(q);
  let best = -Infinity;
  let row = -1;
  for (let i = 0; i < s.length; i++) {
    if (s[i]! > best && !(skip && skip(i))) {
      best = s[i]!;
      row = i;
    }
  }
  return row < 0 ? null : { row, score: best };
}

/** Checks `best` against the reference and the bound against every row's float32 score. */
function checkExact(m: ScoreMatrix, q: Float32Array, skip?: (r: number) => boolean): void {
  const ref = reference(m, q, skip);
  const got = m.best(q, skip);
  expect(got).toEqual(ref);
  const scores = m.scores(q).slice();
  const { approx, err } = m.bounds(q);
  for (let r = 0; r < scores.length; r++) {
    if (!(Math.abs(scores[r]! - approx[r]!) <= err[r]!)) throw new Error(`bound violated at row ${r}: score ${scores[r]} approx ${approx[r]} err ${err[r]}`);
  }
}

describe('ScoreMatrix int8 prefilter', () => {
  it('is exact for thousands of random probes and near-copies of rows, several dims', () => {
    const rand = rng(1);
    for (const [dim, n, probes] of [
      [512, 2001, 1500],
      [128, 502, 500],
      [100, 301, 300],
      [1000, 299, 200],
    ] as const) {
      const m = new ScoreMatrix({ dim, initialCapacity: 16, quantise: true });
      expect(m.prefilter).toBe(true);
      const rows: Float32Array[] = [];
      for (let i = 0; i < n; i++) {
        const v = randomUnit(rand, dim);
        rows.push(v);
        m.push(v);
      }
      for (let p = 0; p < probes; p++) {
        let q: Float32Array;
        const kind = p % 3;
        if (kind === 0) q = randomUnit(rand, dim);
        else {
          // a noisy copy of a row (genuine match), noise 0.02..0.5
          const base = rows[Math.floor(rand() * n)]!;
          const sigma = kind === 1 ? 0.02 : 0.5 / Math.sqrt(dim);
          q = unit(Float32Array.from(base, (x) => x + sigma * gauss(rand)));
        }
        checkExact(m, q);
      }
    }
  });

  it('is exact on adversarial near-ties: duplicates, 1-ulp perturbations, midpoints', () => {
    const rand = rng(2);
    const dim = 512;
    const m = new ScoreMatrix({ dim, initialCapacity: 64, quantise: true });
    const rows: Float32Array[] = [];
    const push = (v: Float32Array) => {
      rows.push(v);
      m.push(v);
    };
    for (let i = 0; i < 300; i++) {
      const v = randomUnit(rand, dim);
      push(v);
      // exact duplicate (float32 tie: the first row must win, as in the full scan)
      if (i % 5 === 0) push(Float32Array.from(v));
      // a 1-ulp-ish perturbation of a few components (scores differ in the last bits)
      if (i % 5 === 1) {
        const w = Float32Array.from(v);
        for (let k = 0; k < 4; k++) {
          const j = Math.floor(rand() * dim);
          w[j] = Math.fround(w[j]! * (1 + (rand() < 0.5 ? -1 : 1) * 2 ** -23));
        }
        push(w);
      }
      // a tiny rotation within quantisation noise (0.001 radians)
      if (i % 5 === 2) push(unit(Float32Array.from(v, (x) => x + (0.001 * gauss(rand)) / Math.sqrt(dim))));
    }
    const n = rows.length;
    for (let p = 0; p < 3000; p++) {
      const kind = p % 4;
      let q: Float32Array;
      if (kind === 0)
        q = Float32Array.from(rows[Math.floor(rand() * n)]!); // exactly a stored row
      else if (kind === 1) {
        // the midpoint of two rows: two scores within rounding of each other
        const a = rows[Math.floor(rand() * n)]!;
        const b = rows[Math.floor(rand() * n)]!;
        q = unit(Float32Array.from(a, (x, i) => x + b[i]!));
      } else if (kind === 2) {
        // close to a duplicated/perturbed pair
        const a = rows[Math.floor(rand() * n)]!;
        q = unit(Float32Array.from(a, (x) => x + 1e-4 * gauss(rand)));
      } else q = randomUnit(rand, dim);
      checkExact(m, q);
    }
  });

  it('is exact on worst-case quantisation (spikes, sparse, constant, half-step values)', () => {
    const rand = rng(3);
    const dim = 512;
    const m = new ScoreMatrix({ dim, initialCapacity: 16, quantise: true });
    const rows: Float32Array[] = [];
    const push = (v: Float32Array) => {
      rows.push(unit(v));
      m.push(rows[rows.length - 1]!);
    };
    for (let i = 0; i < 400; i++) {
      const v = new Float32Array(dim);
      const kind = i % 5;
      if (kind === 0) {
        // one spike, everything else below half a quantisation step: all rounded to 0
        v[i % dim] = 1;
        for (let j = 0; j < dim; j++) if (j !== i % dim) v[j] = (rand() < 0.5 ? -1 : 1) * (1 / 127 / 2) * 0.999 * rand();
      } else if (kind === 1) {
        // sparse
        for (let k = 0; k < 8; k++) v[Math.floor(rand() * dim)] = gauss(rand);
        if (v.every((x) => x === 0)) v[0] = 1;
      } else if (kind === 2) v.fill(rand() < 0.5 ? 1 : -1);
      else if (kind === 3) {
        // values on the .5 rounding boundaries of the int8 grid
        for (let j = 0; j < dim; j++) v[j] = (Math.floor(rand() * 254) - 127 + 0.5) / 127;
        v[0] = 1;
      } else for (let j = 0; j < dim; j++) v[j] = gauss(rand);
      push(v);
    }
    for (let p = 0; p < 2000; p++) {
      let q: Float32Array;
      const kind = p % 4;
      if (kind === 0) {
        // aligned with the part of a spike row the int8 copy lost
        const a = rows[5 * Math.floor(rand() * 80)]!;
        q = unit(Float32Array.from(a, (x, j) => (Math.abs(x) < 0.5 ? x : 0) + (j === 1 ? 1e-3 : 0)));
      } else if (kind === 1) q = unit(Float32Array.from({ length: dim }, (_, j) => (j < 3 ? gauss(rand) : 0) + 1e-9));
      else if (kind === 2) q = Float32Array.from(rows[Math.floor(rand() * rows.length)]!);
      else q = randomUnit(rand, dim);
      checkExact(m, q);
    }
  });

  it('stays exact through growth, remove-swap and with a skip predicate; clear zeroes both copies', () => {
    const rand = rng(4);
    const dim = 512;
    const m = new ScoreMatrix({ dim, initialCapacity: 16, quantise: true });
    for (let i = 0; i < 700; i++) m.push(randomUnit(rand, dim));
    for (let k = 0; k < 201; k++) m.removeSwap(Math.floor(rand() * m.size));
    expect(m.size).toBe(499);
    for (let i = 0; i < 100; i++) m.push(randomUnit(rand, dim));
    const skip = (r: number) => r % 3 === 0;
    for (let p = 0; p < 300; p++) {
      const q = p % 2 === 0 ? randomUnit(rand, dim) : Float32Array.from(m.row(Math.floor(rand() * m.size)).subarray(0, dim));
      checkExact(m, q);
      checkExact(m, q, skip);
    }
    expect(m.best(randomUnit(rand, dim), () => true)).toBeNull();
    m.clear();
    expect(m.size).toBe(0);
    expect(m.best(randomUnit(rand, dim))).toBeNull();
    // Every byte the kernel owns (float32 matrix, int8 copy, query, scores) is zero again.
    const mem = (m as unknown as { wasm: { memory: WebAssembly.Memory } }).wasm.memory;
    m.clear();
    expect(new Uint8Array(mem.buffer).every((b) => b === 0)).toBe(true);
    // ...and the per-row scales and residuals.
    const inner = m as unknown as { scale: Float32Array; resid: Float32Array };
    expect(inner.scale.every((x) => x === 0) && inner.resid.every((x) => x === 0)).toBe(true);
  });
});

describe('ScoreMatrix int8 prefilter, small and partial blocks', () => {
  it('is exact for every size 1..13 (the last block of four partly empty), best row anywhere', () => {
    const rand = rng(5);
    for (let n = 1; n <= 13; n++) {
      const m = new ScoreMatrix({ dim: 512, initialCapacity: 4, quantise: true });
      const rows: Float32Array[] = [];
      for (let i = 0; i < n; i++) {
        rows.push(randomUnit(rand, 512));
        m.push(rows[i]!);
      }
      for (const r of rows) checkExact(m, r);
      for (let p = 0; p < 50; p++) checkExact(m, randomUnit(rand, 512));
      // removing down to every smaller size, the (zeroed) vacated slots never answer
      while (m.size > 1) {
        m.removeSwap(m.size - 1);
        for (let i = 0; i < m.size; i++) checkExact(m, rows[i]!);
        checkExact(m, rows[m.size]!); // a probe equal to the row just removed
      }
    }
  });

  it('uses the prefilter (few re-scores) on a large matrix with the match in the last, partial block', () => {
    const rand = rng(6);
    const m = new ScoreMatrix({ dim: 512, initialCapacity: 16, quantise: true });
    const rows: Float32Array[] = [];
    for (let i = 0; i < 4003; i++) {
      rows.push(randomUnit(rand, 512));
      m.push(rows[i]!);
    }
    for (const i of [4002, 4001, 4000, 3999, 0, 1234]) {
      expect(m.best(rows[i]!)).toMatchObject({ row: i });
      expect(m.rescored).toBeGreaterThanOrEqual(1);
      expect(m.rescored).toBeLessThan(10);
      checkExact(m, rows[i]!);
    }
  });

  it('never answers with an empty slot of the last block, even when every score is negative', () => {
    const rand = rng(7);
    for (const n of [5, 6, 7, 37, 38, 39, 401, 402, 403]) {
      const m = new ScoreMatrix({ dim: 512, initialCapacity: 4, quantise: true });
      for (let i = 0; i < n; i++) {
        const v = Float32Array.from({ length: 512 }, () => 0.01 * gauss(rand));
        v[0] = 0.5 + rand(); // every row points along +e0
        m.push(unit(v));
      }
      const q = new Float32Array(512);
      q[0] = -1; // every score is negative; an empty (zero) slot would score 0
      const got = m.best(q)!;
      expect(got.score).toBeLessThan(0);
      checkExact(m, q);
    }
  });
});

describe('FaceMatcher with the prefilter', () => {
  it('search() equals the argmax of scoreAll() (with and without transform); identify decisions unchanged', () => {
    const pop = new Population({ size: 900, dim: 512, seed: 9 });
    const transform = new CancelableTransform({ orgKey: new Uint8Array(32).fill(5), dim: 512 });
    for (const t of [undefined, transform]) {
      const m = new FaceMatcher({ dim: 512, ...(t ? { transform: t } : {}) });
      const plain = new FaceMatcher({ dim: 512, useSimd: false, ...(t ? { transform: t } : {}) });
      for (let p = 0; p < 800; p++) {
        const id = pop.identity(p);
        m.add(`s${p}`, t ? t.apply(id) : id);
        plain.add(`s${p}`, t ? t.apply(id) : id);
      }
      for (let i = 0; i < 600; i++) {
        const v = pop.present((i * 37) % 900).vector; // 1 in 9 is not enrolled
        const all = m.scoreAll(v);
        let row = -1;
        let best = -Infinity;
        for (let r = 0; r < all.length; r++) if (all[r]! > best) [best, row] = [all[r]!, r];
        const got = m.search(v)!;
        expect(got.row).toBe(row);
        expect(got.score).toBe(best);
        // The plain-JS fallback (float64 sums) agrees on the decision and, to float32 precision, the score.
        const a = m.identify({ vector: v });
        const b = plain.identify({ vector: v });
        expect(a.decision).toBe(b.decision);
        if (a.decision === 'match' && b.decision === 'match') expect(a.subjectId).toBe(b.subjectId);
      }
    }
  });
});
