/**
 * Bad configuration and bad storage: a clear error naming the problem, a
 * non-zero exit, and nothing written.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { dump as stringify } from 'js-yaml';
import { validateConfig } from '../../src/config/load.js';
import { assertBrokerAllowed } from '../../src/link/regions.js';
import { testConfig } from '../helpers/agent-config.js';
import { CLI } from '../helpers/agent-process.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-cfg-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function runCli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
}

describe('config validation', () => {
  const good = () => testConfig({ dataDir: '/tmp/x', brokerUrl: 'mqtt://127.0.0.1:1883' });

  it('accepts a minimal config and fills defaults', () => {
    const c = validateConfig({ version: 1, device: { id: 'd1', kind: 'sim', orgId: 'o1' }, region: 'cn', dataDir: '/var/lib/tallybox', broker: { url: 'mqtts://mqtt.cn.tallybox.cloud:8883' } });
    expect(c.outbox.capacity).toBe(500_000);
    expect(c.broker.allowLoopback).toBe(false);
    expect(c.clock.source).toBe('systemd');
  });

  it('requires a vault on devices that keep templates', () => {
    const base = { version: 1, region: 'cn', dataDir: '/d', broker: { url: 'mqtts://mqtt.cn.tallybox.cloud' } };
    expect(() => validateConfig({ ...base, device: { id: 'd1', kind: 'm1', orgId: 'o1' } })).toThrow(/"vault": m1 and m2 devices keep templates/);
    expect(() => validateConfig({ ...base, device: { id: 'd1', kind: 'm2', orgId: 'o1' }, vault: { keyProvider: 'file' } })).toThrow(/"vault\.kekFile": kekFile is required/);
    expect(validateConfig({ ...base, device: { id: 'd1', kind: 'm1', orgId: 'o1' }, vault: { kekFile: '/etc/tallybox/keys/tallybox.kek' } }).vault?.keyProvider).toBe('file');
  });

  it('names an unknown (misspelt) key', () => {
    const c = good() as Record<string, unknown>;
    (c.broker as Record<string, unknown>).keepalive = 10;
    expect(() => validateConfig(c)).toThrow(/unknown key "broker\.keepalive"/);
  });

  it('names a bad value with its path', () => {
    const c = good();
    c.outbox = { capacity: -5 };
    expect(() => validateConfig(c)).toThrow(/"outbox\.capacity"/);
    const d = good();
    d.device.id = 'bad/id';
    expect(() => validateConfig(d)).toThrow(/"device\.id": must be 1-64 characters/);
  });

  it('pins brokers to the region', () => {
    expect(() => assertBrokerAllowed('mqtts://mqtt.cn.tallybox.cloud:8883', 'cn', false)).not.toThrow();
    expect(() => assertBrokerAllowed('mqtts://a.sg.tallybox.cloud', 'sg', false)).not.toThrow();
    expect(() => assertBrokerAllowed('mqtts://mqtt.cn.tallybox.cloud', 'sg', false)).toThrow(/not a "sg" region broker/);
    expect(() => assertBrokerAllowed('mqtts://evil-cn.tallybox.cloud.attacker.net', 'cn', false)).toThrow(/REGION|region/);
    expect(() => assertBrokerAllowed('mqtt://127.0.0.1:1883', 'cn', false)).toThrow(/allowLoopback/);
    expect(() => assertBrokerAllowed('mqtt://[::1]:1883', 'cn', true)).not.toThrow();
  });
});

describe('tallybox run refuses bad input and writes nothing', () => {
  function setup(mutate: (c: ReturnType<typeof testConfig>) => void) {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const config = testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1' });
    mutate(config);
    const file = join(dir, 'tallybox.yaml');
    writeFileSync(file, typeof config === 'string' ? config : stringify(config));
    return { dir, dataDir, file };
  }

  it('bad config key: exit 78, the key named, no data directory', () => {
    const { dataDir, file } = setup((c) => ((c as Record<string, unknown>).regoin = 'sg'));
    const r = runCli(['run', '--config', file]);
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/CONFIG_INVALID: .*unknown key "regoin"/);
    expect(existsSync(dataDir)).toBe(false);
  });

  it('a broker outside the region: exit 78, REGION_MISMATCH, nothing written', () => {
    const { dataDir, file } = setup((c) => {
      c.region = 'cn';
      c.broker.url = 'mqtts://mqtt.sg.tallybox.cloud:8883';
    });
    const r = runCli(['run', '--config', file]);
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/REGION_MISMATCH: broker mqtt\.sg\.tallybox\.cloud is not a "cn" region broker/);
    expect(existsSync(dataDir)).toBe(false);
  });

  it('a missing config file: exit 78 naming the file', () => {
    const r = runCli(['run', '--config', '/nonexistent/tallybox.yaml']);
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/CONFIG_UNREADABLE: cannot read config file \/nonexistent\/tallybox\.yaml/);
  });

  it('an unreadable (corrupt) database file: exit 1, STORAGE_CORRUPT, the file untouched', () => {
    const { dataDir, file } = setup(() => undefined);
    mkdirSync(dataDir);
    const junk = Buffer.alloc(8192, 0x5a);
    writeFileSync(join(dataDir, 'outbox.db'), junk);
    const r = runCli(['run', '--config', file]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/STORAGE_CORRUPT: .*outbox\.db/);
    expect(readFileSync(join(dataDir, 'outbox.db')).equals(junk)).toBe(true);
    expect(readdirSync(dataDir)).toEqual(['outbox.db']);
  });

  it('a database path that cannot be opened: exit 1 with STORAGE_UNAVAILABLE', () => {
    const { dataDir, file } = setup(() => undefined);
    mkdirSync(join(dataDir, 'outbox.db'), { recursive: true }); // a directory where the file should be
    const r = runCli(['run', '--config', file]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/STORAGE_UNAVAILABLE/);
  });

  it('usage errors exit 2', () => {
    expect(runCli(['run']).status).toBe(2);
    expect(runCli(['frobnicate']).status).toBe(2);
  });
});
