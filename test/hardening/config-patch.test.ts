/**
 * Issue 8 §1: a ConfigPatch is applied at once and persisted, or refused with
 * a reason and nothing changed. Through the real handler
 * (src/agent/command-handlers.ts) inside a real agent, with signed commands
 * over a broker: the drain's backlog rate really changes (measured), the log
 * level reaches every component, and both survive a restart.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { commandHandlers, type RuntimeSettings } from '../../src/agent/command-handlers.js';
import { validateConfig } from '../../src/config/load.js';
import { pb, PunchMethod, ResultCode } from '../../src/proto/index.js';
import { createLogger, silentLogger } from '../../src/util/log.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { BlackholeProxy } from '../../simulators/lib/tcp-proxy.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';
import { waitUntil } from '../helpers/ports.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-patch-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

describe('ConfigPatch through a running agent', () => {
  it('applies every field at once, persists them (0600), refuses bad ones whole, and survives a restart', async () => {
    const dir = tmp();
    const broker = await startEmbeddedBroker();
    cleanups.push(() => broker.close());
    const uplink = await BlackholeProxy.start(broker.port);
    cleanups.push(() => uplink.close());
    const sink = await CloudSink.connect({ url: broker.url });
    cleanups.push(() => sink.close());
    const signer = new CommandSigner({ keyId: 'cloud-p' });
    const dataDir = join(dir, 'data');
    const input = {
      version: 1,
      device: { id: 'dev-p', kind: 'sim', orgId: 'org-a' },
      region: 'sg',
      dataDir,
      broker: { url: uplink.url, allowLoopback: true, reconnectMinMs: 50, reconnectMaxMs: 300 },
      cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
      clock: { source: 'assume-synced' },
      outbox: { backlogRatePerSec: 0 }, // unlimited until the cloud says otherwise
      log: { level: 'warn' },
    };
    const logFile = join(dir, 'agent.log');
    const fd = openSync(logFile, 'w');
    cleanups.push(() => closeSync(fd));
    let agent = await Agent.start({ config: validateConfig(input), logger: createLogger({ level: 'warn', fd }) });
    cleanups.push(() => agent.stop());
    await waitUntil(() => agent.session !== undefined, 10_000, 'online');
    const patch = async (configPatch: Record<string, unknown>) => {
      await sink.sendCommand(signer, 'org-a', 'dev-p', { configPatch });
      return (await sink.waitForResult(signer.lastCounter)).result;
    };

    expect(await patch({ backlogRatePerSec: 20, logLevel: 'debug', retentionDays: 30, repeatWindowSec: 5 })).toMatchObject({ code: ResultCode.RESULT_CODE_OK });
    expect(agent.settings).toMatchObject({ backlogRatePerSec: 20, logLevel: 'debug', retentionDays: 30, repeatWindowSec: 5 });
    expect(agent.drain.backlogRatePerSec).toBe(20);
    expect(agent.logger.level).toBe('debug');
    expect(agent.link.state).toBe('online');
    const settingsFile = join(dataDir, 'settings.json');
    expect((statSync(settingsFile).mode & 0o777).toString(8)).toBe('600');
    expect(JSON.parse(readFileSync(settingsFile, 'utf8')).settings).toEqual({ backlogRatePerSec: 20, logLevel: 'debug', retentionDays: 30, repeatWindowSec: 5 });
    // The level reaches components' loggers (children share it): a debug line is now written.
    agent.logger.child({ component: 'probe' }).debug('probe line');
    expect(readFileSync(logFile, 'utf8')).toMatch(/"level":"debug".*"msg":"probe line"/);

    // The drain replays a backlog at the patched rate: 30 punches at 20/s take over a second (unlimited: a few ms).
    uplink.cut(true);
    await waitUntil(() => agent.session === undefined, 15_000, 'offline');
    const queued = await Promise.all(Array.from({ length: 30 }, (_, i) => agent.punch({ orgId: 'org-a', subjectId: `s-${i}`, method: PunchMethod.PUNCH_METHOD_CARD })));
    uplink.cut(false);
    await waitUntil(() => agent.session !== undefined, 15_000, 'back online');
    const t0 = performance.now();
    await waitUntil(() => queued.every((q) => sink.has(q.eventId)), 20_000, 'backlog delivered');
    const replayMs = performance.now() - t0;
    expect(replayMs).toBeGreaterThan(1000);

    // Refused whole: one field out of range, and the valid field beside it is not applied either.
    expect(await patch({ backlogRatePerSec: 1_000_000, retentionDays: 7 })).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'backlog_rate_per_sec_out_of_range' });
    expect(await patch({ logLevel: 'loud' })).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'log_level_unknown' });
    expect(await patch({ backlogRatePerSec: 0 })).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'backlog_rate_per_sec_out_of_range' });
    expect(await patch({})).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'empty_patch' });
    expect(agent.settings).toMatchObject({ backlogRatePerSec: 20, retentionDays: 30, logLevel: 'debug' });

    // Not persisted, not applied: the write fails (a directory where the temporary file goes).
    mkdirSync(join(dataDir, `.settings.json.${process.pid}.tmp`));
    expect(await patch({ retentionDays: 90 })).toMatchObject({ code: ResultCode.RESULT_CODE_FAILED, reason: 'settings_not_persisted' });
    expect(agent.settings.retentionDays).toBe(30);
    rmSync(join(dataDir, `.settings.json.${process.pid}.tmp`), { recursive: true });

    // After a restart: the same values, from the file.
    await agent.stop();
    agent = await Agent.start({ config: validateConfig(input), logger: createLogger({ level: 'warn', fd }) });
    expect(agent.settings).toMatchObject({ backlogRatePerSec: 20, logLevel: 'debug', retentionDays: 30, repeatWindowSec: 5 });
    expect(agent.drain.backlogRatePerSec).toBe(20);
    expect(agent.logger.level).toBe('debug');
    console.log(`backlog of 30 replayed at a patched 20/s in ${replayMs.toFixed(0)} ms`);
  }, 60_000);

  it('a corrupt settings file: start refused (SETTINGS_CORRUPT, exit 78), the file left as it is', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    writeFileSync(join(dataDir, 'settings.json'), '{"version":1,"settings":{"retentionDays":', { mode: 0o600 });
    const file = writeConfig(dir, { version: 1, device: { id: 'dev-p', kind: 'sim', orgId: 'org-a' }, region: 'sg', dataDir, broker: { url: 'mqtt://127.0.0.1:1', allowLoopback: true }, clock: { source: 'assume-synced' } });
    const r = spawnSync(process.execPath, [CLI, 'run', '--config', file], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status, r.stderr).toBe(78);
    expect(r.stderr).toMatch(/^tallybox: SETTINGS_CORRUPT: .*settings\.json: not JSON/m);
    expect(readFileSync(join(dataDir, 'settings.json'), 'utf8')).toBe('{"version":1,"settings":{"retentionDays":');
  });
});

describe('the ConfigPatch handler', () => {
  const settings = (): RuntimeSettings => ({ retentionDays: 365, repeatWindowSec: 60, backlogRatePerSec: 500, logLevel: 'info' });
  const ctx = { counter: 1 } as never;

  it('hands the whole validated patch to applySettings once, and answers OK only after it returned', async () => {
    const s = settings();
    const applied: unknown[] = [];
    const h = commandHandlers({ privacy: () => undefined, settings: s, logger: silentLogger(), applySettings: (p) => void applied.push(p) });
    const r = await h.configPatch('org-a', pb.ConfigPatch.create({ backlogRatePerSec: 50, logLevel: 'error' }), ctx);
    expect(r.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(applied).toEqual([{ backlogRatePerSec: 50, logLevel: 'error' }]);
  });

  it('refuses without a way to apply, and FAILED when applying throws', async () => {
    const none = commandHandlers({ privacy: () => undefined, settings: settings(), logger: silentLogger() });
    expect(await none.configPatch('org-a', pb.ConfigPatch.create({ retentionDays: 10 }), ctx)).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason: 'settings_unsupported' });
    const failing = commandHandlers({
      privacy: () => undefined,
      settings: settings(),
      logger: silentLogger(),
      applySettings: () => {
        throw new Error('EIO');
      },
    });
    expect(await failing.configPatch('org-a', pb.ConfigPatch.create({ retentionDays: 10 }), ctx)).toMatchObject({ code: ResultCode.RESULT_CODE_FAILED, reason: 'settings_not_persisted' });
  });

  it('bounds every field', async () => {
    const applied: unknown[] = [];
    const h = commandHandlers({ privacy: () => undefined, settings: settings(), logger: silentLogger(), applySettings: (p) => void applied.push(p) });
    for (const [patch, reason] of [
      [{ retentionDays: 0 }, 'retention_days_out_of_range'],
      [{ retentionDays: 2000 }, 'retention_days_out_of_range'],
      [{ repeatWindowSec: 3601 }, 'repeat_window_sec_out_of_range'],
      [{ backlogRatePerSec: 10_001 }, 'backlog_rate_per_sec_out_of_range'],
      [{ logLevel: 'verbose' }, 'log_level_unknown'],
    ] as const) {
      expect(await h.configPatch('org-a', pb.ConfigPatch.create(patch), ctx), JSON.stringify(patch)).toMatchObject({ code: ResultCode.RESULT_CODE_REFUSED, reason });
    }
    expect(applied).toEqual([]);
  });
});
