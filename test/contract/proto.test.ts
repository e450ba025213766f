/**
 * The contract: generated code is current, every .proto compiles with stock
 * protoc, and the punch message cannot carry what must not leave the device.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pb } from '../../src/proto/index.js';

const root = resolve(import.meta.dirname, '../..');
const protoDir = join(root, 'proto/tallybox/v1');
const protos = readdirSync(protoDir).filter((f) => f.endsWith('.proto'));
const hasProtoc = spawnSync('protoc', ['--version']).status === 0;

describe('proto contract', () => {
  it('src/gen is what `npm run proto` produces from proto/ (run it after editing a .proto)', () => {
    const out = mkdtempSync(join(tmpdir(), 'tbx-gen-'));
    try {
      execFileSync(process.execPath, [join(root, 'scripts/gen-proto.mjs'), '--out', out], { stdio: 'pipe' });
      for (const f of ['tallybox.js', 'tallybox.d.ts']) {
        expect(readFileSync(join(root, 'src/gen', f), 'utf8'), `src/gen/${f} is stale: run npm run proto`).toBe(readFileSync(join(out, f), 'utf8'));
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);

  it.runIf(hasProtoc)('every .proto compiles with stock protoc', () => {
    for (const f of protos) {
      const r = spawnSync('protoc', [`-I${join(root, 'proto')}`, '--descriptor_set_out=/dev/null', `tallybox/v1/${f}`], { encoding: 'utf8' });
      expect(r.status, `${f}: ${r.stderr}`).toBe(0);
    }
  });

  it('PunchEvent has no field that could carry a template, an image, a card number or a MAC', () => {
    const fields = pb.PunchEvent.encode({}).finish(); // sanity: encodes
    expect(fields.length).toBe(0);
    // The schema text is the contract: no bytes fields, no repeated fields, and
    // only these names. Adding a field means revisiting the privacy rules.
    const text = readFileSync(join(protoDir, 'punch.proto'), 'utf8');
    const body = /message PunchEvent \{([\s\S]*?)\n\}/.exec(text)![1]!;
    const decls = [...body.matchAll(/^\s*(\w+)\s+(\w+)\s*=\s*\d+;/gm)].map((m) => ({ type: m[1]!, name: m[2]! }));
    expect(decls.map((d) => d.name)).toEqual(['event_id', 'org_id', 'device_id', 'subject_id', 'method', 'occurred_at_ms', 'clock_synced', 'seq', 'bd_seq', 'historical', 'match_score', 'liveness']);
    expect(decls.some((d) => d.type === 'bytes')).toBe(false);
    expect(body).not.toMatch(/repeated|map</);
  });

  it('DeviceState and its parts carry no bytes and no field about a person', () => {
    const text = readFileSync(join(protoDir, 'state.proto'), 'utf8').replace(/\/\/.*$/gm, '');
    const decls = [...text.matchAll(/^\s*(?:repeated\s+)?(\w+)\s+(\w+)\s*=\s*\d+;/gm)].map((m) => ({ type: m[1]!, name: m[2]! }));
    expect(decls.length).toBeGreaterThan(10);
    expect(decls.filter((d) => d.type === 'bytes')).toEqual([]);
    expect(decls.map((d) => d.name).filter((n) => /subject|person|user|mac|card|template|image/.test(n))).toEqual([]);
  });
});
