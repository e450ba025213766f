/**
 * Issue 8 §1 and §5, with the real binary in a child process: a failure
 * during start stops what was started, removes the pid file, prints
 * `tallybox: CODE: …` (the code once) and exits non-zero — 78 for
 * configuration and key errors; purge without --yes and without a terminal
 * is a usage error.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { testConfig } from '../helpers/agent-config.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-start-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Run the CLI; resolves with its exit status, or 'hung' if it is still running after `ms` (then killed). */
function runCli(args: string[], ms = 15_000): Promise<{ status: number | 'hung'; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }); // stdin a pipe: not a TTY
    let stderr = '';
    let stdout = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      resolve({ status: 'hung', stderr, stdout });
    }, ms);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ status: code ?? -1, stderr, stdout });
    });
  });
}

async function takePort(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => server.close(r)));
  return { server, port: (server.address() as { port: number }).port };
}

describe('tallybox run: a failed start leaves nothing behind', () => {
  it('punch-API port taken: PUNCH_API_PORT_IN_USE, exit 1, no pid file, no reconnect loop', async () => {
    const broker: EmbeddedBroker = await startEmbeddedBroker();
    cleanups.push(() => broker.close());
    const { port } = await takePort();
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const file = writeConfig(dir, { ...testConfig({ dataDir, brokerUrl: broker.url, apiPort: port }), log: { level: 'info' } });
    const t0 = performance.now();
    const r = await runCli(['run', '--config', file]);
    expect(r.status, r.stderr).toBe(1);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(r.stderr).toMatch(/^tallybox: PUNCH_API_PORT_IN_USE: punch API: 127\.0\.0\.1:\d+ is already in use/m);
    expect(r.stderr).not.toMatch(/unexpected error/);
    expect(existsSync(join(dataDir, 'agent.pid'))).toBe(false);
    // The agent had started (storage open, link connecting) and was stopped again.
    expect(r.stderr).toMatch(/"event":"start_failed"/);
    expect(r.stderr).toMatch(/"event":"agent_stopped"/);
  });
});

describe('error messages and exit codes', () => {
  it('a key file others can read: exit 78, the code printed once', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    chmodSync(keys.kekPath, 0o644);
    const file = writeConfig(dir, { ...testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1' }), vault: { kekFile: keys.kekPath } });
    const r = await runCli(['run', '--config', file]);
    expect(r.status, r.stderr).toBe(78);
    const line = r.stderr.split('\n').find((l) => l.startsWith('tallybox: '))!;
    expect(line).toMatch(/^tallybox: KEY_FILE_INSECURE: key file .*tallybox\.kek has mode 0644/);
    expect(line.match(/KEY_FILE_INSECURE/g)).toHaveLength(1);
    expect(existsSync(join(dataDir, 'agent.pid'))).toBe(false);
  });

  it('a missing key file: exit 78 (systemd RestartPreventExitStatus=78 stops instead of looping)', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const file = writeConfig(dir, { ...testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1' }), vault: { kekFile: join(dir, 'keys', 'none.kek') } });
    const r = await runCli(['run', '--config', file]);
    expect(r.status, r.stderr).toBe(78);
    expect(r.stderr).toMatch(/^tallybox: KEY_FILE_MISSING: key file .*none\.kek does not exist/m);
  });

  it('purge without --yes and without a terminal is a usage error (exit 2), nothing erased', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const file = writeConfig(dir, { ...testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1' }), vault: { kekFile: join(dir, 'keys', 'tallybox.kek') } });
    const r = await runCli(['purge', '--org', 'org-a', '--config', file]);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/--yes/);
    expect(existsSync(dataDir)).toBe(false);
  });
});
