// Accuracy of the matcher on the simulated population at the DEFAULT
// thresholds: FAR over ~10 million impostor comparisons and FRR over 10,000
// genuine ones (1:1, probe against template), plus rank-1 identification and
// spoof rejection. The numbers are printed; the bounds are the ones a good
// commercial model meets.
import { describe, expect, it } from 'vitest';
import { Population } from '../../simulators/face/population.js';
import { DEFAULT_THRESHOLD, FaceMatcher } from '../../src/identify/face/matcher.js';

describe('accuracy on the simulated population (dim 512, default thresholds)', () => {
  const pop = new Population({ size: 1500, dim: 512, seed: 2024 });
  const enrolled = 1000;
  const matcher = new FaceMatcher({ dim: 512, initialCapacity: enrolled });
  for (let p = 0; p < enrolled; p++) matcher.enrol(`s${p}`, [pop.present(p), pop.present(p), pop.present(p)]);
  const rowOf = new Map<string, number>();
  for (let i = 0; i < matcher.size; i++) rowOf.set(matcher.rowSubject(i)!, i);

  it('FAR and FRR at the default threshold', () => {
    let genuine = 0,
      falseReject = 0,
      impostor = 0,
      falseAccept = 0,
      rank1 = 0;
    const probesPerPerson = 10;
    for (let p = 0; p < enrolled; p++) {
      const own = rowOf.get(`s${p}`)!;
      for (let k = 0; k < probesPerPerson; k++) {
        const scores = matcher.scoreAll(pop.present(p).vector);
        let best = 0;
        for (let i = 0; i < scores.length; i++) {
          const s = scores[i]!;
          if (s > scores[best]!) best = i;
          if (i === own) {
            genuine++;
            if (s < matcher.threshold) falseReject++;
          } else {
            impostor++;
            if (s >= matcher.threshold) falseAccept++;
          }
        }
        if (best === own && scores[own]! >= matcher.threshold) rank1++;
      }
    }
    // People never enrolled: every comparison is an impostor one.
    let strangersAccepted = 0;
    for (let p = enrolled; p < pop.size; p++) {
      const scores = matcher.scoreAll(pop.present(p).vector);
      for (let i = 0; i < scores.length; i++) {
        impostor++;
        if (scores[i]! >= matcher.threshold) falseAccept++;
      }
      if (matcher.identify(pop.present(p)).decision === 'match') strangersAccepted++;
    }
    const far = falseAccept / impostor;
    const frr = falseReject / genuine;
    console.log(
      `face accuracy @ threshold ${DEFAULT_THRESHOLD}: FAR ${far.toExponential(2)} (${falseAccept}/${impostor} impostor), ` +
        `FRR ${(frr * 100).toFixed(2)}% (${falseReject}/${genuine} genuine), rank-1 ${((rank1 / genuine) * 100).toFixed(2)}% at N=${enrolled}, ` +
        `strangers accepted 1:N ${strangersAccepted}/${pop.size - enrolled}`,
    );
    expect(genuine).toBeGreaterThanOrEqual(10_000);
    expect(impostor).toBeGreaterThanOrEqual(100_000);
    expect(far).toBeLessThan(1e-4);
    expect(far).toBeGreaterThan(0); // the distributions do overlap a little, like real models
    expect(frr).toBeLessThan(0.02);
    expect(rank1 / genuine).toBeGreaterThan(0.97);
  });

  it('rejects every spoof, including look-alike hard spoofs, before matching', () => {
    let spoofRejected = 0;
    const n = 2000;
    for (let k = 0; k < n; k++) if (matcher.identify(pop.spoof(k % enrolled)).decision === 'spoof') spoofRejected++;
    let liveRejected = 0;
    for (let k = 0; k < n; k++) if (matcher.identify(pop.present(k % enrolled)).decision === 'spoof') liveRejected++;
    console.log(`face liveness @ ${matcher.livenessThreshold}: spoofs rejected ${spoofRejected}/${n}, live captures rejected as spoof ${liveRejected}/${n}`);
    expect(spoofRejected).toBe(n);
    expect(liveRejected).toBe(0);
  });
});
