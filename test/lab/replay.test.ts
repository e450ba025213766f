/**
 * Replay: the same lab file, seed and recorded actions give the same punches
 * — the same subjects and methods in the same order on every device. A
 * record made with another lab file or seed, or a damaged one, is refused.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Lab } from '../../simulators/lab/lab.js';
import { readRecord } from '../../simulators/lab/record.js';
import { isTallyboxError } from '../../src/util/errors.js';
import { startTestLab, type TestLab } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tallybox-lab-replay-'));
const recordFile = join(dir, 'run.jsonl');

/** Per device: [subject id, method] in seq order. */
function punchesByDevice(lab: Lab): Record<string, [string, string][]> {
  const out: Record<string, [string, string, number][]> = {};
  for (const p of lab.punches()) (out[p.deviceId] ??= []).push([p.subjectId, p.method, p.seq]);
  return Object.fromEntries(Object.entries(out).map(([d, l]) => [d, l.sort((a, b) => a[2] - b[2]).map(([s, m]) => [s, m] as [string, string])]));
}

describe('lab record and replay', () => {
  const labs: TestLab[] = [];
  afterAll(async () => {
    for (const t of labs) await t.close();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  let first: Record<string, [string, string][]> = {};

  it('records a run: actions with timestamps, the seed in the header', async () => {
    const t = await startTestLab({ record: recordFile });
    labs.push(t);
    const c = t.client;
    const outcomes = [await c.present('front-door', 'ana', 'finger'), await c.present('lobby', 'chen', 'face'), await c.present('front-door', 'bo', 'finger'), await c.present('lobby', 'ana', 'card')];
    await c.uplink('front-door', 'cut');
    outcomes.push(await c.present('front-door', 'bo', 'finger'), await c.present('front-door', 'ana', 'finger'));
    await c.uplink('front-door', 'ok');
    outcomes.push(await c.present('lobby', 'chen', 'card'), await c.present('office-wifi', 'bo', 'phone'), await c.present('lobby', 'ana', 'face'));
    expect(outcomes.filter((o) => o.outcome === 'punch').length).toBeGreaterThanOrEqual(8);
    expect(await t.lab.settle(60_000)).toBe(true);
    first = punchesByDevice(t.lab);
    expect(first['front-door']!.length).toBe(outcomes.slice(0, 6).filter((o, i) => [0, 2, 4, 5].includes(i) && o.outcome === 'punch').length);
    const rec = readRecord(recordFile);
    expect(rec.header.seed).toBe(11);
    expect(rec.actions.map((a) => a.action.type)).toEqual(['present', 'present', 'present', 'present', 'uplink', 'present', 'present', 'uplink', 'present', 'present', 'present']);
    expect(rec.actions.every((a, i) => a.seq === i + 1 && !Number.isNaN(Date.parse(a.at)) && (i === 0 || a.t >= rec.actions[i - 1]!.t))).toBe(true);
    await t.close();
    labs.pop();
  }, 300_000);

  it('replays it: the same subjects and methods in the same order on every device', async () => {
    const t = await startTestLab();
    labs.push(t);
    const r = await t.lab.replay(recordFile);
    expect(r).toEqual({ actions: 11, failed: 0 });
    expect(await t.lab.settle(60_000)).toBe(true);
    expect(punchesByDevice(t.lab)).toEqual(first);

    // Another seed or another lab file: refused before any action runs.
    const text = readFileSync(recordFile, 'utf8').split('\n');
    const header = JSON.parse(text[0]!) as Record<string, unknown>;
    const otherSeed = join(dir, 'other-seed.jsonl');
    writeFileSync(otherSeed, [JSON.stringify({ ...header, seed: 12 }), ...text.slice(1)].join('\n'));
    const otherLab = join(dir, 'other-lab.jsonl');
    writeFileSync(otherLab, [JSON.stringify({ ...header, configSha256: '0'.repeat(64) }), ...text.slice(1)].join('\n'));
    const before = t.lab.actions().length;
    for (const f of [otherSeed, otherLab]) {
      const err = await t.lab.replay(f).catch((e: unknown) => e);
      expect(isTallyboxError(err, 'LAB_REPLAY_MISMATCH')).toBe(true);
    }
    expect(t.lab.actions().length).toBe(before);
  }, 300_000);

  it('refuses a damaged record, naming the line', () => {
    const text = readFileSync(recordFile, 'utf8');
    const cut = join(dir, 'cut.jsonl');
    writeFileSync(cut, text.slice(0, text.length - 20));
    expect(() => readRecord(cut)).toThrow(/cut\.jsonl:12: not a JSON object/);
    const empty = join(dir, 'empty.jsonl');
    writeFileSync(empty, '');
    expect(() => readRecord(empty)).toThrow(/the record is empty/);
  });
});
