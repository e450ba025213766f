/**
 * What every `tallybox demo` variant shares: a broker (embedded, or an
 * external one given with `--broker URL`) and the cloud sink, a device (the
 * real Agent, with a vault and provisioned keys when the device keeps
 * personal data) started exactly as `tallybox run` starts it (Agent.start,
 * then the role of its kind through src/roles/start.ts), the JSON line printed
 * per punch the cloud receives, and the final delivery check.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Agent } from '../agent/agent.js';
import { validateConfig } from '../config/load.js';
import type { TrustedKey } from '../link/commands/index.js';
import { pb, type PunchEvent } from '../proto/index.js';
import { silentLogger, type Logger } from '../util/log.js';
import { provisionKeyFiles } from '../vault/keys.js';
import type { Vault } from '../vault/vault.js';
import { startRole, type RunningRole, type StartRoleOptions } from '../roles/start.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { BlackholeProxy } from '../../simulators/lib/tcp-proxy.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface DemoDeviceOptions {
  kind: 'sim' | 'm1' | 'm2' | 'c1' | 'p1';
  deviceId: string;
  orgId: string;
  /** Organisations the device serves (default: just orgId). */
  servedOrgs?: string[];
  /** Root directory (created if missing); default a fresh temp dir, removed by close(). */
  dir?: string;
  /** Give the device a vault (keys provisioned under dir/keys, outside dir/data). */
  vault: boolean;
  commandKeys?: TrustedKey[];
  logger?: Logger;
  logLevel?: 'silent' | 'error' | 'warn' | 'info';
  onPunch?: (p: PunchEvent, info: { duplicate: boolean }) => void;
  /** Extra top-level config sections (m1:, m2:, outbox:, ...); a function gets the device's root directory. */
  config?: Record<string, unknown> | ((dir: string) => Record<string, unknown>);
  /** Put a proxy between the device and the broker, so the demo can cut the device's uplink (loopback brokers only). */
  uplinkProxy?: boolean;
  /** An external broker (mqtt://, mqtts://) instead of the embedded one; the device and the cloud sink both use it. */
  brokerUrl?: string;
  /** Start the device's role (m1, m2) through the `tallybox run` start path, with these options. */
  roles?: StartRoleOptions;
  /** Runs before the role starts (simulators the role opens by path); what it registers closes after the role stops. */
  beforeRole?: (dir: string, onClose: (fn: () => Promise<unknown> | unknown) => void) => Promise<void>;
}

/** The broker the demo uses: the embedded one, or an external one it does not own. */
export interface DemoBroker {
  url: string;
  /** True when the demo started it (and closes it). */
  embedded: boolean;
  close(): Promise<void>;
}

export interface DemoDevice {
  dir: string;
  dataDir: string;
  kekPath: string;
  /** The device identity's public key (PEM) when the device has a vault. */
  publicKeyPem: string | undefined;
  broker: DemoBroker;
  /** The device's role, when `roles` was given (m1, m2). */
  running: RunningRole | undefined;
  /** The device's uplink, when `uplinkProxy` was asked for (and the broker is on loopback). */
  uplink: BlackholeProxy | undefined;
  sink: CloudSink;
  agent: Agent;
  vault: Vault | undefined;
  /** Run at close(), last registered first. */
  onClose(fn: () => Promise<unknown> | unknown): void;
  close(opts?: { keepDir?: boolean }): Promise<void>;
}

/** Broker + cloud sink + a started agent, waiting until the agent is online. */
export async function startDemoDevice(opts: DemoDeviceOptions): Promise<DemoDevice> {
  const dir = opts.dir ? resolve(opts.dir) : mkdtempSync(join(tmpdir(), `tallybox-${opts.kind}-`));
  mkdirSync(dir, { recursive: true });
  const dataDir = join(dir, 'data');
  const kekPath = join(dir, 'keys', 'tallybox.kek');
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const close = async (c: { keepDir?: boolean } = {}) => {
    for (const f of cleanups.splice(0).reverse()) await Promise.resolve(f()).catch(() => undefined);
    if (!c.keepDir && !opts.dir) rmSync(dir, { recursive: true, force: true });
  };
  try {
    const broker: DemoBroker = opts.brokerUrl ? { url: opts.brokerUrl, embedded: false, close: async () => undefined } : { ...(await startEmbeddedBroker()), embedded: true };
    cleanups.push(() => broker.close());
    const sink = await CloudSink.connect({ url: broker.url, ...(opts.onPunch ? { onPunch: opts.onPunch } : {}) });
    cleanups.push(() => sink.close());
    const loopbackPort = plainLoopbackPort(broker.url);
    const uplink = opts.uplinkProxy && loopbackPort !== undefined ? await BlackholeProxy.start(loopbackPort) : undefined;
    if (uplink) cleanups.push(() => uplink.close());
    let publicKeyPem: string | undefined;
    if (opts.vault && !existsSync(kekPath)) publicKeyPem = (await provisionKeyFiles({ kekPath, dataDir })).publicKeyPem;
    const config = validateConfig({
      version: 1,
      device: { id: opts.deviceId, kind: opts.kind, orgId: opts.orgId, ...(opts.servedOrgs ? { servedOrgs: opts.servedOrgs } : {}) },
      region: 'sg',
      dataDir,
      broker: { url: uplink?.url ?? broker.url, allowLoopback: true, keepaliveSec: 5, reconnectMinMs: 100, reconnectMaxMs: 1000 },
      clock: { source: 'assume-synced' },
      outbox: { backlogRatePerSec: 0 },
      ...(opts.vault ? { vault: { kekFile: kekPath } } : {}),
      ...(opts.commandKeys ? { cloud: { commandKeys: opts.commandKeys } } : {}),
      log: { level: opts.logLevel ?? 'silent' },
      ...(typeof opts.config === 'function' ? opts.config(dir) : opts.config),
    });
    const agent = await Agent.start({ config, logger: opts.logger ?? silentLogger() });
    cleanups.push(() => agent.stop());
    await opts.beforeRole?.(dir, (fn) => cleanups.push(fn));
    // The same start path as `tallybox run`: the role of the device's kind, on the running agent.
    const running = opts.roles ? await startRole(agent, opts.roles) : undefined;
    if (running) cleanups.push(() => running.stop());
    publicKeyPem ??= agent.privacy?.identity.publicKeyPem;
    // Start producing once the device is online, so live punches are not flagged as backlog.
    for (let waited = 0; !agent.session && waited < 10_000; waited += 20) await sleep(20);
    return { dir, dataDir, kekPath, publicKeyPem, broker, running, uplink, sink, agent, vault: agent.privacy?.vault, onClose: (fn) => cleanups.push(fn), close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** The port of a plain mqtt:// URL on loopback (a proxy can sit in front of it), else undefined. */
function plainLoopbackPort(url: string): number | undefined {
  try {
    const u = new URL(url);
    if (u.protocol !== 'mqtt:' || !['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) return undefined;
    return Number(u.port || 1883);
  } catch {
    return undefined; // not a URL: the config validation names it
  }
}

/** The line `demo --json` prints for each punch the cloud receives (enums by name). */
export function punchJsonLine(p: PunchEvent): string {
  const name = (e: Record<number, string>, v: number, prefix: string) => (e[v] ?? 'UNSPECIFIED').replace(prefix, '');
  return JSON.stringify({
    eventId: p.eventId,
    orgId: p.orgId,
    deviceId: p.deviceId,
    subjectId: p.subjectId,
    method: name(pb.PunchMethod as unknown as Record<number, string>, p.method, 'PUNCH_METHOD_'),
    matchScore: name(pb.ScoreBucket as unknown as Record<number, string>, p.matchScore, 'SCORE_BUCKET_'),
    liveness: name(pb.ScoreBucket as unknown as Record<number, string>, p.liveness, 'SCORE_BUCKET_'),
    seq: p.seq,
    bdSeq: p.bdSeq,
    historical: p.historical,
    occurredAtMs: p.occurredAtMs,
  });
}

/**
 * Wait (generously: a reconnect fits) until the cloud has every accepted
 * punch; `expected` counts punches the demo meant to produce, so one that was
 * never accepted also counts as lost.
 */
export async function awaitDelivery(sink: CloudSink, accepted: ReadonlySet<string>, expected = accepted.size): Promise<{ received: number; duplicates: number; lost: number }> {
  const deadline = performance.now() + 30_000 + accepted.size * 2;
  while (performance.now() < deadline && [...accepted].some((id) => !sink.has(id))) await sleep(50);
  const stats = sink.stats();
  const lost = [...accepted].filter((id) => !sink.has(id)).length + Math.max(0, expected - accepted.size);
  return { received: stats.received, duplicates: stats.duplicates, lost };
}
