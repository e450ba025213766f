/**
 * `tallybox doctor --config FILE [--json]`: what IT runs after installing a
 * device, to see at a glance what is wrong. Each check is independent and
 * reports ok / warn / fail with one line saying what it saw and, when not ok,
 * what to do. Nothing is written (the broker check connects without a will
 * and with its own client id, so the device's presence is not disturbed).
 */
import { accessSync, closeSync, constants, existsSync, openSync, readSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { clockSynced } from '../agent/clock.js';
import { runningAgentPid } from '../agent/pidfile.js';
import { keyProviderFor } from '../agent/privacy.js';
import { loadPersistedSettings } from '../agent/runtime-settings.js';
import { describeZeroised, zeroisedInfo } from '../agent/zeroise.js';
import { loadConfigFile } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { brokerReachabilityCheck } from '../link/probe.js';
import { brokerSecurityCheck } from '../link/security.js';
import { Sqlite } from '../store/sqlite.js';
import { describeError } from '../util/errors.js';
import { checkPrivateDir, checkPrivateFiles, expectedOwner, type Finding } from '../util/private-fs.js';

export type Verdict = 'ok' | 'warn' | 'fail';
export interface Check {
  name: string;
  verdict: Verdict;
  detail: string;
}

const MB = 1024 * 1024;

async function checkStorage(config: Config): Promise<Check[]> {
  const out: Check[] = [];
  try {
    if (!existsSync(config.dataDir)) {
      out.push({ name: 'data-dir', verdict: 'warn', detail: `${config.dataDir} does not exist yet (the agent creates it on first start)` });
    } else {
      accessSync(config.dataDir, constants.W_OK);
      const fs = statfsSync(config.dataDir);
      const free = fs.bavail * fs.bsize;
      const verdict: Verdict = free < 10 * MB ? 'fail' : free < 100 * MB ? 'warn' : 'ok';
      out.push({ name: 'disk', verdict, detail: `${(free / MB).toFixed(0)} MB free on ${config.dataDir}${verdict === 'ok' ? '' : ' (punches are refused with DISK_FULL when it runs out)'}` });
    }
  } catch (err) {
    out.push({ name: 'data-dir', verdict: 'fail', detail: `${config.dataDir}: ${describeError(err)}` });
  }
  for (const file of ['outbox.db', 'vault.db', 'commands.db']) {
    const path = join(config.dataDir, file);
    if (!existsSync(path)) continue;
    try {
      const fd = openSync(path, 'r');
      const head = Buffer.alloc(16);
      readSync(fd, head, 0, 16, 0);
      closeSync(fd);
      if (!Sqlite.looksLikeSqlite(head)) throw new Error('not a SQLite database');
      const db = await Sqlite.open(path, { readonly: true });
      // PRAGMA quick_check answers in a column named quick_check: one row "ok", or one row per problem.
      const rows = await db.all<{ quick_check: string }>('PRAGMA quick_check');
      await db.close();
      const problems = rows.map((r) => r.quick_check).filter((v) => v !== 'ok');
      const healthy = rows.length > 0 && problems.length === 0;
      out.push({
        name: file,
        verdict: healthy ? 'ok' : 'fail',
        detail: healthy ? 'readable, quick_check ok' : `quick_check: ${problems.slice(0, 3).join('; ') || 'no answer'}${problems.length > 3 ? ` (+${problems.length - 3} more)` : ''}`,
      });
    } catch (err) {
      out.push({ name: file, verdict: 'fail', detail: `${path}: ${describeError(err)}` });
    }
  }
  try {
    const pid = runningAgentPid(config.dataDir);
    out.push({ name: 'agent', verdict: 'ok', detail: pid ? `running (pid ${pid})` : 'not running' });
  } catch (err) {
    out.push({ name: 'agent', verdict: 'fail', detail: describeError(err) });
  }
  return out;
}

/** Data directory owner and mode, and every file in it: what the agent fixes at start (warn) or refuses (fail). */
function checkFileSafety(config: Config): Check[] {
  const verdictOf = (f: Finding): Verdict => (f.verdict === 'refused' ? 'fail' : f.verdict === 'fixed' ? 'warn' : 'ok');
  try {
    const uid = expectedOwner(config.dataDir);
    const dir = checkPrivateDir(config.dataDir, { fix: false, uid });
    const files = checkPrivateFiles(config.dataDir, { fix: false, uid }).filter((f) => f.verdict !== 'ok');
    const out: Check[] = [{ name: 'data-dir-perms', verdict: verdictOf(dir), detail: dir.verdict === 'refused' ? `${dir.detail} (the agent refuses to start)` : dir.detail }];
    for (const f of files) out.push({ name: 'file-perms', verdict: verdictOf(f), detail: f.verdict === 'refused' ? `${f.detail} (the agent refuses to start)` : f.detail });
    if (files.length === 0 && existsSync(config.dataDir)) out.push({ name: 'file-perms', verdict: 'ok', detail: 'every file in the data directory is 0600, owned by the agent, and not a symlink' });
    return out;
  } catch (err) {
    return [{ name: 'data-dir-perms', verdict: 'fail', detail: describeError(err) }];
  }
}

/** Tamper marker and the settings the cloud patched: the agent's own files, read as it reads them. */
function checkAgentState(config: Config): Check[] {
  const out: Check[] = [];
  const uid = expectedOwner(config.dataDir);
  const z = zeroisedInfo(config.dataDir, { uid });
  if (z) out.push({ name: 'tamper', verdict: 'fail', detail: `device ${describeZeroised(z)}: it identifies nobody; inspect the device, then re-provision (tallybox provision)` });
  try {
    const s = loadPersistedSettings(config.dataDir, { uid });
    const keys = Object.entries(s);
    if (keys.length > 0) out.push({ name: 'settings', verdict: 'ok', detail: `set by the cloud (override the config file): ${keys.map(([k, v]) => `${k}=${String(v)}`).join(', ')}` });
  } catch (err) {
    out.push({ name: 'settings', verdict: 'fail', detail: `${describeError(err)} (the agent refuses to start)` });
  }
  return out;
}

async function checkKeys(config: Config): Promise<Check[]> {
  if (!config.vault) return [{ name: 'keys', verdict: 'ok', detail: 'no vault configured: this device keeps no personal data' }];
  if (config.vault.keyProvider === 'systemd-credentials' && !process.env.CREDENTIALS_DIRECTORY) {
    // Run by IT outside the unit: the credentials exist only inside tallybox.service. Not seeing them is not a fault.
    return [
      {
        name: 'keys',
        verdict: 'warn',
        detail: 'systemd credentials are visible only inside the service (no CREDENTIALS_DIRECTORY here): not checked; see `systemctl status tallybox` (a missing LoadCredential= source fails the unit with status 243/CREDENTIALS)',
      },
    ];
  }
  try {
    const provider = keyProviderFor(config.vault);
    const kek = await provider.loadKek({ dataDir: config.dataDir });
    kek.fill(0);
    const id = await provider.loadDeviceIdentity();
    return [{ name: 'keys', verdict: 'ok', detail: `KEK and identity readable, permissions ok; identity ${id.keyId}` }];
  } catch (err) {
    return [{ name: 'keys', verdict: 'fail', detail: describeError(err) }];
  }
}

async function checkBroker(config: Config): Promise<Check[]> {
  // How the broker is reached (TLS policy, region pinning) and whether it answers: src/link owns both.
  return [brokerSecurityCheck(config), await brokerReachabilityCheck(config)];
}

function checkClockAndCommands(config: Config): Check[] {
  const synced = clockSynced(config.clock);
  return [
    {
      name: 'clock',
      verdict: synced ? 'ok' : 'warn',
      detail: synced
        ? `synchronised (${config.clock.source}); now ${new Date().toISOString()}`
        : `not synchronised (${config.clock.source}): punches are flagged clock_synced=false and commands may be refused as expired; enable NTP (systemd-timesyncd)`,
    },
    config.cloud.commandKeys.length > 0
      ? { name: 'commands', verdict: 'ok', detail: `${config.cloud.commandKeys.length} cloud command key(s) pinned` }
      : { name: 'commands', verdict: 'warn', detail: 'no cloud.commandKeys: erasure and enrolment commands from the cloud will be ignored' },
  ];
}

/** C1 routers: hostapd control sockets, the lease file, the hook socket (src/roles/c1/doctor.ts; loaded only for c1). */
async function checkC1(config: Config): Promise<Check[]> {
  if (!config.c1) return [];
  let agentRunning = false;
  try {
    agentRunning = runningAgentPid(config.dataDir) !== undefined;
  } catch {
    // an unreadable pid file is the 'agent' check's failure; here it only changes a hint
  }
  const { c1DoctorChecks } = await import('../roles/c1/doctor.js');
  return c1DoctorChecks(config.c1, { agentRunning });
}

export async function doctor(configFile: string, opts: { json: boolean; out: (s: string) => void }): Promise<number> {
  let checks: Check[];
  try {
    const config = loadConfigFile(configFile);
    checks = [{ name: 'config', verdict: 'ok', detail: `${configFile}: valid (device ${config.device.id}, ${config.device.kind}, region ${config.region})` }];
    checks.push(...(await checkStorage(config)), ...checkFileSafety(config), ...checkAgentState(config), ...(await checkKeys(config)), ...checkClockAndCommands(config), ...(await checkBroker(config)));
    // Open incident records and a decommission (src/incident/doctor.ts).
    checks.push(...(await (await import('../incident/doctor.js')).incidentChecks(config)));
    checks.push(...(await checkC1(config)));
  } catch (err) {
    checks = [{ name: 'config', verdict: 'fail', detail: describeError(err) }];
  }
  if (opts.json) opts.out(JSON.stringify({ ok: !checks.some((c) => c.verdict === 'fail'), checks }));
  else for (const c of checks) opts.out(`${c.verdict.toUpperCase().padEnd(4)}  ${c.name.padEnd(12)} ${c.detail}`);
  return checks.some((c) => c.verdict === 'fail') ? 1 : 0;
}
