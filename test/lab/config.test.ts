/** A bad lab file gets LAB_CONFIG naming the key (and exit 78 from the CLI), before anything starts. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { load as parseYaml } from 'js-yaml';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { loadLabConfig, validateLabConfig } from '../../simulators/lab/config.js';
import { isTallyboxError } from '../../src/util/errors.js';
import { SMALL_LAB } from './helpers.js';

const base = () => parseYaml(readFileSync(SMALL_LAB, 'utf8')) as Record<string, any>;

function errorOf(mutate: (c: Record<string, any>) => void): string {
  const c = base();
  mutate(c);
  try {
    validateLabConfig(c);
  } catch (err) {
    expect(isTallyboxError(err, 'LAB_CONFIG')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('the lab file was accepted');
}

describe('lab file validation', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tallybox-labcfg-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('accepts the test lab and the documented example', () => {
    expect(loadLabConfig(SMALL_LAB).config.devices.map((d) => d.kind)).toEqual(['m1', 'm2', 'c1', 'p1']);
    const ex = loadLabConfig(resolve(import.meta.dirname, '../../examples/lab.yaml')).config;
    expect(ex.devices.map((d) => d.kind)).toEqual(['m1', 'm2', 'c1', 'p1']);
  });

  it.each([
    ['an unknown kind', (c: any) => (c.devices[1].kind = 'toaster'), /^devices\[1\]\.kind: unknown kind "toaster"/],
    ['a p1 printer with a misspelt key', (c: any) => (c.devices[3].peripherals = { printer: { nmae: 'x' } }), /^devices\[3\]\.peripherals\.printer\.nmae: unknown key "nmae"/],
    ['a p1 printer with a bad name', (c: any) => (c.devices[3].peripherals = { printer: { name: 'front desk' } }), /^devices\[3\]\.peripherals\.printer\.name: must be a printer name/],
    ['a person of an unknown org', (c: any) => (c.people[2].org = 'initech'), /^people\[2\]\.org: "initech" is not one of the lab's orgs/],
    ['a device of an unknown org', (c: any) => (c.devices[0].org = 'initech'), /^devices\[0\]\.org:/],
    ['an unknown served org', (c: any) => (c.devices[1].servedOrgs = ['acme', 'nope']), /^devices\[1\]\.servedOrgs\[1\]:/],
    ['a misspelt key', (c: any) => (c.devices[0].perpherals = {}), /^devices\[0\]\.perpherals: unknown key "perpherals"/],
    ['a misspelt peripheral key', (c: any) => (c.devices[0].peripherals = { fingerprint: { capacty: 3 } }), /^devices\[0\]\.peripherals\.fingerprint\.capacty: unknown key/],
    ['a peripheral of another kind', (c: any) => (c.devices[0].peripherals = { face: {} }), /^devices\[0\]\.peripherals\.face: unknown key "face"/],
    ['a bad capacity', (c: any) => (c.devices[0].peripherals = { fingerprint: { capacity: 5000 } }), /^devices\[0\]\.peripherals\.fingerprint\.capacity:/],
    ['a bad finger', (c: any) => (c.people[0].finger = 12), /^people\[0\]\.finger:/],
    ['a bad card', (c: any) => (c.people[0].card = 'no spaces'), /^people\[0\]\.card: must be 1-32 digits or letters/],
    ['a device id unfit for topics', (c: any) => (c.devices[0].name = 'front door'), /^devices\[0\]\.name: must be 1-64 characters/],
    ['a duplicate device', (c: any) => (c.devices[1].name = 'front-door'), /^devices\[1\]\.name: device "front-door" is listed twice/],
    ['a duplicate person', (c: any) => (c.people[1].id = 'ana'), /^people\[1\]\.id: person "ana" is listed twice/],
    ['an unknown device in a person', (c: any) => (c.people[0].devices = ['nowhere']), /^people\[0\]\.devices\[0\]:/],
    ['a missing version', (c: any) => delete c.version, /^version:/],
    ['no devices', (c: any) => (c.devices = []), /^devices:/],
    ['a bad region', (c: any) => (c.site.region = 'eu'), /^site\.region:/],
  ])('names the key: %s', (_what, mutate, expected) => {
    expect(errorOf(mutate)).toMatch(expected);
  });

  it.each([
    ['empty', '', /the lab file is empty/],
    ['not YAML', 'version: [1\n', /not valid YAML/],
    ['not a mapping', '- 1\n- 2\n', /must be a YAML mapping/],
  ])('refuses a file that is %s', (_what, text, expected) => {
    const f = join(dir, 'lab.yaml');
    writeFileSync(f, text);
    expect(() => loadLabConfig(f)).toThrow(expected);
  });

  it('the CLI prints tallybox-sim: LAB_CONFIG: <key>: … and exits 78, starting nothing', () => {
    const c = base();
    c.devices[1].kind = 'toaster';
    const f = join(dir, 'bad.yaml');
    writeFileSync(f, JSON.stringify(c));
    const r = spawnSync(process.execPath, [resolve(import.meta.dirname, '../../dist/simulators/cli.js'), 'lab', '--config', f, '--port', '0'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/^tallybox-sim: LAB_CONFIG: devices\[1\]\.kind: unknown kind "toaster"/m);
    expect(r.stdout).toBe('');
  });
});
