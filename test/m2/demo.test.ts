// `tallybox demo --device m2`: the whole face + card path on one machine.
import { describe, expect, it } from 'vitest';
import { runM2Demo } from '../../src/cli/demo-m2.js';

describe('M2 demo', () => {
  it('--json --punches N: one line per punch received by the cloud, then the summary; exit 0 with nothing lost', async () => {
    const lines: string[] = [];
    const code = await runM2Demo({ json: true, punches: 9, out: (l) => lines.push(l) });
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(code, lines.join('\n')).toBe(0);
    const summary = parsed.at(-1)!;
    expect(summary).toEqual({ received: 9, duplicates: 0, lost: 0 });
    const punches = parsed.slice(0, -1);
    expect(punches).toHaveLength(9);
    expect(punches.filter((p) => p.method === 'FACE')).toHaveLength(6);
    expect(punches.filter((p) => p.method === 'CARD')).toHaveLength(3);
    for (const p of punches.filter((x) => x.method === 'FACE')) {
      expect(['LOW', 'MEDIUM', 'HIGH']).toContain(p.matchScore);
      expect(['LOW', 'MEDIUM', 'HIGH']).toContain(p.liveness);
    }
    // Nothing personal in the output: ids only, no names.
    expect(lines.join('\n')).not.toMatch(/Simulated|Ana|Chen/);
  });

  it('human output tells the story: enrolment, punches, refusals, summary', async () => {
    const lines: string[] = [];
    const code = await runM2Demo({ json: false, punches: 6, out: (l) => lines.push(l) });
    const text = lines.join('\n');
    expect(code, text).toBe(0);
    expect(text).toMatch(/enrolled sub-0001/);
    expect(text).toMatch(/liveness check failed, no punch/);
    expect(text).toMatch(/not recognised, no punch/);
    expect(text).toMatch(/unknown card, no punch/);
    expect(text).toMatch(/same punch, not sent twice/);
    expect(text).toMatch(/Done: 6 punches received by the cloud \(4 face, 2 card\), 0 duplicates, 0 lost/);
  });
});
