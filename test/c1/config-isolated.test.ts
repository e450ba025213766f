/**
 * `tallybox run` reads its config in a child process so the agent never
 * loads the validator (src/config/load-isolated.ts: ~4 MB of a C1 router's
 * idle RSS). The child's answer must be exactly what an in-process load
 * gives: the same config (every section of a C1 device, paths resolved), and
 * for a bad file the same code, message and details (CONFIG_INVALID exits 78).
 * Runs the built child (dist/): `npm run build` first.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../src/config/load.js';
import { isTallyboxError } from '../../src/util/errors.js';

const DIST = resolve(import.meta.dirname, '../../dist/src/config/load-isolated.js');
type Isolated = (file: string) => Promise<unknown>;
const isolated = async (file: string) => ((await import(DIST)) as { loadConfigFileIsolated: Isolated }).loadConfigFileIsolated(file);

const dir = mkdtempSync(join(tmpdir(), 'tbw-cfg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
};

async function failure(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

describe('the config read in a child process', () => {
  it('a complete C1 config: the same object as an in-process load (relative paths resolved against the file)', async () => {
    const f = file(
      'c1.yaml',
      [
        'version: 1',
        'device: { id: c1-0001, kind: c1, orgId: acme, servedOrgs: [acme, globex] }',
        'region: sg',
        'dataDir: ./data',
        'broker: { url: "mqtt://127.0.0.1:1883", allowLoopback: true }',
        'vault: { kekFile: keys/tallybox.kek }',
        'clock: { source: assume-synced }',
        'c1:',
        '  timeZone: Asia/Singapore',
        '  rules: { workingHours: { from: "07:00", to: "20:00" }, rejoinAfterMin: 90 }',
        '  ssids: { wlan0: Office, wlan1: Office }',
        '  hostapd: { ctrlDir: /run/hostapd, interfaces: [wlan0, wlan1] }',
        '  dnsmasq: { leaseFile: /var/lib/misc/dnsmasq.leases }',
      ].join('\n'),
    );
    const inProcess = loadConfigFile(f);
    expect(inProcess.dataDir).toBe(join(dir, 'data'));
    expect(await isolated(f)).toStrictEqual(inProcess);
  });

  it.each([
    ['an unknown key and a bad region', 'version: 1\ndevice: { id: x, kind: c1, orgId: o }\nregion: eu\nbogus: 1\n'],
    ['not YAML', 'version: [1\n'],
  ])('%s: the same TallyboxError as in-process (code, message, details)', async (_name, text) => {
    const f = file('bad.yaml', text);
    const want = await failure(() => loadConfigFile(f));
    const got = await failure(() => isolated(f));
    expect(isTallyboxError(want)).toBe(true);
    expect(got).toMatchObject({ name: 'TallyboxError' }); // dist's class, not this one: compared by its fields
    expect({ code: (got as { code: string }).code, message: (got as Error).message, details: (got as { details: unknown }).details }).toStrictEqual({
      code: (want as { code: string }).code,
      message: (want as Error).message,
      details: JSON.parse(JSON.stringify((want as { details: unknown }).details)),
    });
  });

  it('a missing file: CONFIG_UNREADABLE, as in-process', async () => {
    const got = await failure(() => isolated(join(dir, 'missing.yaml')));
    expect(got).toMatchObject({ code: 'CONFIG_UNREADABLE', message: expect.stringContaining('missing.yaml') });
  });

  it('a child that does not answer (it cannot even start): CONFIG_LOADER_FAILED, never a config taken from nowhere', async () => {
    const f = file('ok.yaml', 'version: 1\n');
    const before = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = `--require=${join(dir, 'no-such-preload.cjs')}`; // read by the child only (this process has started)
    try {
      expect(await failure(() => isolated(f))).toMatchObject({ code: 'CONFIG_LOADER_FAILED', message: expect.stringMatching(/did not answer: exit 1/) });
    } finally {
      if (before === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = before;
    }
  });
});
