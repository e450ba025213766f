/**
 * Issue 8 §1: zeroisation says what happened to the key. With systemd
 * credentials (read-only) or an error during the overwrite, the status, the
 * log and DeviceState say "NOT destroyed" and why — never "key destroyed".
 * And an unreadable tamper marker is not read as "not zeroised".
 */
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { AlarmCode } from '../../src/proto/index.js';
import { TallyboxError } from '../../src/util/errors.js';
import { createLogger, silentLogger } from '../../src/util/log.js';
import { provisionKeyFiles, SYSTEMD_IDENTITY_CREDENTIAL, SYSTEMD_KEK_CREDENTIAL } from '../../src/vault/keys.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-zh-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}
const base = (dataDir: string, vault: Record<string, unknown>) =>
  validateConfig({ version: 1, device: { id: 'dev-zh', kind: 'sim', orgId: 'org-a' }, region: 'sg', dataDir, broker: { url: 'mqtt://127.0.0.1:1', allowLoopback: true }, vault, clock: { source: 'assume-synced' }, log: { level: 'info' } });

function fileLogger(dir: string) {
  const file = join(dir, 'agent.log');
  const fd = openSync(file, 'w');
  cleanups.push(() => closeSync(fd));
  return { logger: createLogger({ level: 'info', fd }), text: () => readFileSync(file, 'utf8') };
}

const tamperDetail = (a: Agent) => a.state().alarms?.find((x) => x.code === AlarmCode.ALARM_CODE_TAMPER)?.detail ?? '';

describe('zeroise reports what happened to the key', () => {
  it('systemd credentials (read-only): NOT destroyed, in the result, the log, DeviceState and after a restart', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const creds = join(dir, 'credentials');
    mkdirSync(creds, { mode: 0o700 });
    const p = await provisionKeyFiles({ kekPath: join(creds, 'k'), identityPath: join(creds, 'i'), dataDir });
    renameSync(p.kekPath, join(creds, SYSTEMD_KEK_CREDENTIAL));
    renameSync(p.identityPath, join(creds, SYSTEMD_IDENTITY_CREDENTIAL));
    const prev = process.env.CREDENTIALS_DIRECTORY;
    process.env.CREDENTIALS_DIRECTORY = creds;
    cleanups.push(() => (prev === undefined ? delete process.env.CREDENTIALS_DIRECTORY : (process.env.CREDENTIALS_DIRECTORY = prev)));
    const config = base(dataDir, { keyProvider: 'systemd-credentials' });
    const { logger, text } = fileLogger(dir);
    const agent = await Agent.start({ config, logger });
    cleanups.push(() => agent.stop());
    expect(agent.privacy).toBeDefined();

    const info = await agent.zeroise('test: case opened');
    expect(info).toMatchObject({ key: 'not_destroyed', keyError: expect.stringMatching(/^KEY_ZEROISE_UNSUPPORTED: /) });
    expect(agent.privacy).toBeUndefined(); // the vault is closed either way
    expect(tamperDetail(agent)).toMatch(/device key NOT destroyed \(KEY_ZEROISE_UNSUPPORTED/);
    expect(tamperDetail(agent)).not.toMatch(/key destroyed/);
    const zeroLine = text()
      .split('\n')
      .find((l) => l.includes('"event":"zeroised"'))!;
    expect(zeroLine).toMatch(/NOT destroyed/);
    expect(zeroLine).not.toMatch(/: key destroyed/);
    expect(existsSync(join(creds, SYSTEMD_KEK_CREDENTIAL))).toBe(true);

    await agent.stop();
    const again = await Agent.start({ config, logger: silentLogger() });
    cleanups.push(() => again.stop());
    expect(again.zeroised).toMatchObject({ key: 'not_destroyed' });
    expect(tamperDetail(again)).toMatch(/NOT destroyed/);
  });

  it('an error during the overwrite: NOT destroyed, with the error', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const p = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    const agent = await Agent.start({ config: base(dataDir, { kekFile: p.kekPath }), logger: silentLogger() });
    cleanups.push(() => agent.stop());
    // The storage fails under the overwrite (EIO): the provider's error is what zeroise must report.
    agent.privacy!.keyProvider.zeroiseKek = () => Promise.reject(new TallyboxError('KEY_ZEROISE_FAILED', 'key file: overwrite failed (EIO: i/o error), unlinked; its bytes may remain on the storage medium'));
    const info = await agent.zeroise('test');
    expect(info).toMatchObject({ key: 'not_destroyed', keyError: expect.stringContaining('KEY_ZEROISE_FAILED: key file: overwrite failed (EIO') });
    expect(tamperDetail(agent)).toMatch(/NOT destroyed \(KEY_ZEROISE_FAILED/);
    expect(JSON.parse(readFileSync(join(dataDir, 'zeroised.json'), 'utf8'))).toMatchObject({ key: 'not_destroyed' });
  });

  it('the key file cannot be opened for the overwrite (a symlink swapped in): NOT destroyed, KEY_ZEROISE_FAILED', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const p = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    const agent = await Agent.start({ config: base(dataDir, { kekFile: p.kekPath }), logger: silentLogger() });
    cleanups.push(() => agent.stop());
    // After the key was loaded, the file is replaced by a link: the overwrite (O_NOFOLLOW) must not follow it.
    const real = join(dir, 'keys', 'moved.kek');
    renameSync(p.kekPath, real);
    symlinkSync(real, p.kekPath);
    const info = await agent.zeroise('test');
    expect(info).toMatchObject({ key: 'not_destroyed', keyError: expect.stringMatching(/^KEY_ZEROISE_FAILED: cannot open key file .* to overwrite it: .*ELOOP/) });
    expect(tamperDetail(agent)).toMatch(/NOT destroyed \(KEY_ZEROISE_FAILED/);
  });

  it('a real file key: destroyed, and it says so', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const p = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    const agent = await Agent.start({ config: base(dataDir, { kekFile: p.kekPath }), logger: silentLogger() });
    cleanups.push(() => agent.stop());
    expect(await agent.zeroise('test')).toMatchObject({ key: 'destroyed' });
    expect(existsSync(p.kekPath)).toBe(false);
    expect(tamperDetail(agent)).toMatch(/device key destroyed/);
  });

  it('interrupted after the marker, before the key: the next start destroys the key and records it', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const p = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dataDir, 'zeroised.json'), JSON.stringify({ atMs: 1, reason: 'case opened', key: 'pending' }), { mode: 0o600 });
    const agent = await Agent.start({ config: base(dataDir, { kekFile: p.kekPath }), logger: silentLogger() });
    cleanups.push(() => agent.stop());
    expect(agent.privacy).toBeUndefined();
    expect(existsSync(p.kekPath)).toBe(false);
    expect(agent.zeroised).toMatchObject({ key: 'destroyed' });
  });
});

describe('the tamper marker is never read as "not zeroised" by mistake', () => {
  for (const [what, plant] of [
    ['corrupt (not JSON)', (path: string) => writeFileSync(path, '{"atMs": 17', { mode: 0o600 })],
    ['unreadable (a directory in its place)', (path: string) => mkdirSync(path)],
  ] as const) {
    it(`${what}: the device comes up locked and says why`, async () => {
      const dir = tmp();
      const dataDir = join(dir, 'data');
      const p = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      plant(join(dataDir, 'zeroised.json'));
      const agent = await Agent.start({ config: base(dataDir, { kekFile: p.kekPath }), logger: silentLogger() }).catch((e: unknown) => e);
      if (!(agent instanceof Agent)) throw agent;
      cleanups.push(() => agent.stop());
      expect(agent.privacy).toBeUndefined();
      expect(agent.zeroised?.markerError).toBeTruthy();
      expect(tamperDetail(agent)).toMatch(/tamper marker (corrupt|unreadable)/);
    });
  }
});
