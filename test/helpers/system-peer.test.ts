/**
 * The system-peer helper: where it looks, what hides a program, and the three
 * outcomes (run; skip with one line naming the Debian package; fail under
 * TALLYBOX_REQUIRE_PEERS=1), the last two seen from a real vitest run.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { peerVerdict, searchDirs, systemPeer } from './system-peer.js';

const dir = mkdtempSync(join(tmpdir(), 'tbx-peer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function fakeProgram(sub: string, name: string, mode = 0o755): string {
  mkdirSync(join(dir, sub), { recursive: true });
  const p = join(dir, sub, name);
  writeFileSync(p, '#!/bin/sh\nexit 0\n');
  chmodSync(p, mode);
  return p;
}

describe('systemPeer', () => {
  it('finds a program on PATH, and not once its directory leaves PATH (a real PATH test)', () => {
    const p = fakeProgram('a/bin', 'tbx-peer-a');
    expect(systemPeer('tbx-peer-a', { pkg: 'pkg-a', env: { PATH: `/nonexistent:${join(dir, 'a/bin')}` } })).toMatchObject({ available: true, path: p });
    const gone = systemPeer('tbx-peer-a', { pkg: 'pkg-a', env: { PATH: '/nonexistent' } });
    expect(gone).toMatchObject({ available: false, path: undefined, reason: 'not found on PATH' });
  });

  it('looks in the sbin beside each …/bin on PATH (Debian daemons live in /usr/sbin)', () => {
    const p = fakeProgram('b/sbin', 'tbx-peer-b');
    expect(searchDirs(`${join(dir, 'b/bin')}:/opt/tools`)).toEqual([join(dir, 'b/bin'), join(dir, 'b/sbin'), '/opt/tools']);
    expect(systemPeer('tbx-peer-b', { pkg: 'pkg-b', env: { PATH: join(dir, 'b/bin') } }).path).toBe(p);
  });

  it('ignores a file that is not executable', () => {
    fakeProgram('c/bin', 'tbx-peer-c', 0o644);
    expect(systemPeer('tbx-peer-c', { pkg: 'pkg-c', env: { PATH: join(dir, 'c/bin') } }).available).toBe(false);
  });

  it('TALLYBOX_HIDE_PEERS hides listed programs whatever PATH says', () => {
    fakeProgram('d/bin', 'tbx-peer-d');
    const env = { PATH: join(dir, 'd/bin'), TALLYBOX_HIDE_PEERS: 'socat, tbx-peer-d' };
    expect(systemPeer('tbx-peer-d', { pkg: 'pkg-d', env })).toMatchObject({ available: false, reason: 'hidden by TALLYBOX_HIDE_PEERS' });
  });
});

describe('peerVerdict', () => {
  const here = systemPeer('sh', { pkg: 'dash' });
  const ghost = systemPeer('tbx-ghost', { pkg: 'ghost-pkg', env: { PATH: '/nonexistent' } });
  it('runs when every peer is there, skips with one line naming the package otherwise', () => {
    expect(here.available).toBe(true);
    expect(peerVerdict('s', [here], {})).toEqual({ action: 'run' });
    const v = peerVerdict('s', [here, ghost], {});
    expect(v).toMatchObject({ action: 'skip' });
    expect(v.action !== 'run' && v.line).toMatch(/^tallybox-test: skipped "s": needs tbx-ghost \(not found on PATH; Debian package: ghost-pkg\); apt-get install ghost-pkg to run it$/);
  });
  it('fails instead under TALLYBOX_REQUIRE_PEERS=1', () => {
    expect(peerVerdict('s', [ghost], { TALLYBOX_REQUIRE_PEERS: '1' })).toMatchObject({ action: 'fail', line: expect.stringMatching(/TALLYBOX_REQUIRE_PEERS=1 forbids skipping it: apt-get install ghost-pkg/) });
  });
});

describe('describeWithPeer in a real vitest run', () => {
  const run = (env: NodeJS.ProcessEnv) => {
    const { TALLYBOX_REQUIRE_PEERS: _r, TALLYBOX_HIDE_PEERS: _h, ...rest } = process.env;
    return spawnSync(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--config', 'test/helpers/fixtures/vitest.fixture.config.ts', 'peer-suite'], {
      encoding: 'utf8',
      env: { ...rest, ...env, NO_COLOR: '1' },
      timeout: 60_000,
    });
  };
  it('skips with exactly one line naming the package, and passes', () => {
    const r = run({});
    expect(r.status).toBe(0);
    const lines = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes('tallybox-ghost-pkg'));
    expect(lines).toEqual(['tallybox-test: skipped "needs a ghost": needs tallybox-no-such-program (not found on PATH; Debian package: tallybox-ghost-pkg); apt-get install tallybox-ghost-pkg to run it']);
  });
  it('fails the run under TALLYBOX_REQUIRE_PEERS=1, naming the package', () => {
    const r = run({ TALLYBOX_REQUIRE_PEERS: '1' });
    expect(r.status).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/TALLYBOX_REQUIRE_PEERS=1 forbids skipping it: apt-get install tallybox-ghost-pkg/);
  });
});
