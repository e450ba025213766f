/**
 * Issue 8 §1, swallowed errors: a pid file that exists but cannot be read
 * is not "no agent running" (purge and provision would then race a live
 * agent), and a live agent of another user (kill → EPERM) is running.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runningAgentPid } from '../../src/agent/pidfile.js';
import { testConfig } from '../helpers/agent-config.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-pid-'));
  dirs.push(d);
  return d;
}
const PIDFILE_JS = resolve(import.meta.dirname, '../../dist/src/agent/pidfile.js');

describe('runningAgentPid', () => {
  it('a pid file that cannot be read is an error, not "not running"', () => {
    const dataDir = join(tmp(), 'data');
    mkdirSync(join(dataDir, 'agent.pid'), { recursive: true }); // EISDIR on read
    expect(() => runningAgentPid(dataDir)).toThrow(expect.objectContaining({ code: 'PID_FILE_UNREADABLE' }));
  });

  it('no pid file, or a stale one: not running', () => {
    const dataDir = join(tmp(), 'data');
    mkdirSync(dataDir);
    expect(runningAgentPid(dataDir)).toBeUndefined();
    writeFileSync(join(dataDir, 'agent.pid'), '999999999\n', { mode: 0o600 });
    expect(runningAgentPid(dataDir)).toBeUndefined();
  });

  it.runIf(isRoot)('read by another user: EACCES on the file is an error; EPERM from kill means running', () => {
    const dir = tmp();
    chmodSync(dir, 0o755);
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o755 });
    // pid 1 belongs to root: an unprivileged kill(1, 0) fails with EPERM although it is alive.
    writeFileSync(join(dataDir, 'agent.pid'), '1\n', { mode: 0o644 });
    const script = `import(${JSON.stringify(PIDFILE_JS)}).then((m) => { try { console.log(JSON.stringify({ pid: m.runningAgentPid(${JSON.stringify(dataDir)}) ?? null })); } catch (e) { console.log(JSON.stringify({ code: e.code })); } })`;
    const asNobody = () => spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', cwd: '/' });
    // Readable (another user's agent): the process is alive though kill(1, 0) answers EPERM.
    let r = asNobody();
    expect(JSON.parse(r.stdout || '{}'), r.stderr).toEqual({ pid: 1 });
    chmodSync(join(dataDir, 'agent.pid'), 0o600); // now EACCES for nobody
    r = asNobody();
    expect(JSON.parse(r.stdout || '{}'), r.stderr).toEqual({ code: 'PID_FILE_UNREADABLE' });
  });

  it('tallybox purge refuses when it cannot tell whether the agent runs', () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(join(dataDir, 'agent.pid'), { recursive: true });
    const file = writeConfig(dir, { ...testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1' }), vault: { kekFile: join(dir, 'keys', 'tallybox.kek') } });
    const r = spawnSync(process.execPath, [CLI, 'purge', '--org', 'org-a', '--yes', '--config', file], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^tallybox: PID_FILE_UNREADABLE: /m);
  });
});
