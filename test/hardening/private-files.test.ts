/**
 * Issue 9 §5, files that cannot be redirected: the outbox and its -wal/-shm
 * are 0600; a 0777 data directory is tightened and one owned by someone else
 * refused; the pid file and the tamper marker are never written through a
 * symlink; key files owned by another user, in a world-writable directory, or
 * inside the data directory by way of a symlink are refused. Runs as root
 * (chown to another uid), as CI does.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { Sqlite } from '../../src/store/sqlite.js';
import { PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { FileKeyProvider, provisionKeyFiles } from '../../src/vault/keys.js';
import { testConfig } from '../helpers/agent-config.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';

const OTHER_UID = 54321;
const isRoot = process.getuid?.() === 0;
const dirs: string[] = [];
const agents: Agent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-priv-'));
  dirs.push(d);
  return d;
}
const mode = (p: string) => statSync(p).mode & 0o777;
// An unreachable broker: these tests are about files, not the link.
const cfg = (dataDir: string, extra: Record<string, unknown> = {}) => validateConfig({ ...testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1' }), log: { level: 'silent' }, ...extra });
async function start(dataDir: string, extra: Record<string, unknown> = {}): Promise<Agent> {
  const a = await Agent.start({ config: cfg(dataDir, extra), logger: silentLogger() });
  agents.push(a);
  return a;
}

describe('database files', () => {
  it('outbox.db and its -wal and -shm are 0600 even with umask 022', async () => {
    const old = process.umask(0o022);
    try {
      const dataDir = join(tmp(), 'data');
      const agent = await start(dataDir);
      await agent.punch({ orgId: 'org-a', subjectId: 's-1', method: PunchMethod.PUNCH_METHOD_CARD });
      for (const f of ['outbox.db', 'outbox.db-wal', 'outbox.db-shm']) {
        expect(existsSync(join(dataDir, f)), f).toBe(true);
        expect(mode(join(dataDir, f)).toString(8), f).toBe('600');
      }
      expect(mode(dataDir).toString(8)).toBe('700');
    } finally {
      process.umask(old);
    }
  });

  it("SQLite gives the -wal and -shm it creates the main file's mode (why pre-creating the file 0600 is enough)", async () => {
    const old = process.umask(0o022);
    try {
      const path = join(tmp(), 'x.db');
      const db = await Sqlite.open(path);
      await db.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1);');
      expect([mode(path), mode(`${path}-wal`), mode(`${path}-shm`)].map((m) => m.toString(8))).toEqual(['600', '600', '600']);
      await db.close();
    } finally {
      process.umask(old);
    }
  });

  it('an existing 0644 outbox from an older version is tightened to 0600', async () => {
    const dataDir = join(tmp(), 'data');
    await (await start(dataDir)).stop();
    agents.splice(0);
    chmodSync(join(dataDir, 'outbox.db'), 0o644);
    await start(dataDir);
    expect(mode(join(dataDir, 'outbox.db')).toString(8)).toBe('600');
  });

  it('a symlink at outbox.db-wal is refused and its target untouched', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const target = join(dir, 'precious');
    writeFileSync(target, 'precious');
    symlinkSync(target, join(dataDir, 'outbox.db-wal'));
    await expect(start(dataDir)).rejects.toMatchObject({ code: 'FILE_INSECURE' });
    await expect(Sqlite.open(join(dataDir, 'outbox.db'))).rejects.toMatchObject({ code: 'FILE_INSECURE' });
    expect(readFileSync(target, 'utf8')).toBe('precious');
  });
});

describe.runIf(isRoot)('the data directory (as root)', () => {
  it('a pre-existing 0777 data directory is changed to 0700 at start', async () => {
    const dataDir = join(tmp(), 'data');
    mkdirSync(dataDir);
    chmodSync(dataDir, 0o777);
    await start(dataDir);
    expect(mode(dataDir).toString(8)).toBe('700');
  });

  it('a data directory in a world-writable parent without the sticky bit is refused (it could be swapped)', async () => {
    const parent = join(tmp(), 'open');
    mkdirSync(parent);
    chmodSync(parent, 0o777);
    await expect(start(join(parent, 'data'))).rejects.toMatchObject({ code: 'DATA_DIR_INSECURE', message: expect.stringMatching(/holding the data directory has mode 0777/) });
    expect(existsSync(join(parent, 'data'))).toBe(false); // refused before anything was created
    chmodSync(parent, 0o1777); // sticky, like /tmp: others cannot rename our entry
    await start(join(parent, 'data2'));
  });

  it('a data directory owned by another user is refused: exit 78, DATA_DIR_INSECURE, nothing written', () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    chownSync(dataDir, OTHER_UID, OTHER_UID);
    const file = writeConfig(dir, testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1' }));
    const r = spawnSync(process.execPath, [CLI, 'run', '--config', file], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/^tallybox: DATA_DIR_INSECURE: data directory .* is owned by uid 54321/m);
    expect(spawnSync('ls', ['-A', dataDir], { encoding: 'utf8' }).stdout).toBe('');
  });
});

describe('the pid file and the tamper marker', () => {
  it('a symlink planted at agent.pid is replaced, never written through', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const target = join(dir, 'victim');
    writeFileSync(target, 'do not overwrite\n');
    symlinkSync(target, join(dataDir, 'agent.pid'));
    // At start a symlink in the data directory is refused outright…
    await expect(start(dataDir)).rejects.toMatchObject({ code: 'FILE_INSECURE' });
    expect(readFileSync(target, 'utf8')).toBe('do not overwrite\n');
    // …and one planted while the agent runs is replaced by the next write, the target untouched.
    rmSync(join(dataDir, 'agent.pid'));
    const agent = await start(dataDir);
    rmSync(join(dataDir, 'agent.pid'));
    symlinkSync(target, join(dataDir, 'agent.pid'));
    const { writePidFile } = await import('../../src/agent/pidfile.js');
    writePidFile(dataDir);
    expect(readFileSync(target, 'utf8')).toBe('do not overwrite\n');
    expect(lstatSync(join(dataDir, 'agent.pid')).isSymbolicLink()).toBe(false);
    expect(mode(join(dataDir, 'agent.pid')).toString(8)).toBe('600');
    expect(readFileSync(join(dataDir, 'agent.pid'), 'utf8').trim()).toBe(String(process.pid));
    await agent.stop();
  });

  it('the tamper marker is written without following a symlink planted at its path', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const agent = await start(dataDir);
    const target = join(dir, 'victim');
    writeFileSync(target, 'do not overwrite\n');
    symlinkSync(target, join(dataDir, 'zeroised.json'));
    await agent.zeroise('test');
    expect(readFileSync(target, 'utf8')).toBe('do not overwrite\n');
    const marker = join(dataDir, 'zeroised.json');
    expect(lstatSync(marker).isSymbolicLink()).toBe(false);
    expect(mode(marker).toString(8)).toBe('600');
    expect(JSON.parse(readFileSync(marker, 'utf8'))).toMatchObject({ reason: 'test' });
  });
});

describe('key files', () => {
  async function keys() {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const p = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    return { dir, dataDir, p };
  }

  it.runIf(isRoot)('a key file owned by another user is refused', async () => {
    const { dataDir, p } = await keys();
    chownSync(p.kekPath, OTHER_UID, OTHER_UID);
    await expect(new FileKeyProvider({ kekPath: p.kekPath }).loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_INSECURE', message: expect.stringMatching(/owned by uid 54321/) });
  });

  it('a key file in a world-writable directory is refused', async () => {
    const { dir, dataDir, p } = await keys();
    chmodSync(join(dir, 'keys'), 0o777);
    await expect(new FileKeyProvider({ kekPath: p.kekPath }).loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_INSECURE', message: expect.stringMatching(/directory .*keys.* has mode 0777/) });
  });

  it.runIf(isRoot)('a key directory owned by another user is refused', async () => {
    const { dir, dataDir, p } = await keys();
    chownSync(join(dir, 'keys'), OTHER_UID, OTHER_UID);
    await expect(new FileKeyProvider({ kekPath: p.kekPath }).loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_INSECURE', message: expect.stringMatching(/owned by uid 54321/) });
  });

  it('a key file inside the data directory reached through a symlinked directory is refused', async () => {
    const { dir, dataDir, p } = await keys();
    // The key really lives in dataDir/keys; the config names it through /…/etc-keys → dataDir/keys.
    mkdirSync(join(dataDir, 'keys'), { mode: 0o700 });
    const inside = join(dataDir, 'keys', 'tallybox.kek');
    writeFileSync(inside, readFileSync(p.kekPath), { mode: 0o600 });
    symlinkSync(join(dataDir, 'keys'), join(dir, 'etc-keys'));
    await expect(new FileKeyProvider({ kekPath: join(dir, 'etc-keys', 'tallybox.kek') }).loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_IN_DATA_DIR' });
    // The same when it is the data directory that is reached through a symlink.
    symlinkSync(dataDir, join(dir, 'data-link'));
    await expect(new FileKeyProvider({ kekPath: inside }).loadKek({ dataDir: join(dir, 'data-link') })).rejects.toMatchObject({ code: 'KEY_FILE_IN_DATA_DIR' });
  });

  it('a healthy key file is still accepted', async () => {
    const { dataDir, p } = await keys();
    const kek = await new FileKeyProvider({ kekPath: p.kekPath }).loadKek({ dataDir });
    expect(kek.length).toBe(32);
  });
});
