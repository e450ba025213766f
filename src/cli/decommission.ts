/**
 * `tallybox decommission --config FILE [--yes]`: retire the device (see
 * src/decommission/engine.ts), `tallybox verify-receipt FILE --pubkey PEM`,
 * and the gate `tallybox run` passes first: a finished decommission refuses
 * to run (DECOMMISSIONED, exit 78, until `tallybox provision`), an unfinished
 * one is finished instead of running normally.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { runningAgentPid } from '../agent/pidfile.js';
import type { Config } from '../config/schema.js';
import { receiptFilePath } from '../decommission/engine.js';
import { verifyDecommissionReceipt, DECOMMISSION_RECEIPT_TYPE } from '../decommission/receipt.js';
import { runDecommission } from '../decommission/runner.js';
import { readDecommission, type DecommissionState } from '../decommission/state.js';
import { verifyErasureReceipt, type SignedErasureReceipt } from '../privacy/receipt.js';
import { TallyboxError } from '../util/errors.js';
import { createLogger } from '../util/log.js';

const EXIT_USAGE = 2;
const EXIT_CONFIG = 78;

function summary(config: Config, s: DecommissionState): string {
  const r = s.signed ? (JSON.parse((JSON.parse(s.signed) as SignedErasureReceipt).body) as { verification: string; problem?: string; scan: { hits: number } }) : undefined;
  return JSON.stringify({
    decommissioned: s.phase === 'done',
    decommissionId: s.id,
    receiptId: s.receiptId,
    verification: r?.verification,
    ...(r?.problem ? { problem: r.problem } : {}),
    scanHits: r?.scan.hits,
    orgs: s.orgs.map((o) => o.orgId),
    delivered: s.delivered ?? false,
    receiptFile: receiptFilePath(config.dataDir),
    kek: s.kek,
    identity: s.identity,
    ...(s.keyErrors ? { keyErrors: s.keyErrors } : {}),
  });
}

function exitFor(s: DecommissionState): number {
  const r = s.signed ? (JSON.parse((JSON.parse(s.signed) as SignedErasureReceipt).body) as { ok: boolean }) : undefined;
  return r?.ok && !s.keyErrors ? 0 : 1;
}

export async function decommissionCli(opts: { configFile: string; yes: boolean; out: (s: string) => void; err?: (s: string) => void }): Promise<number> {
  const err = opts.err ?? ((s: string) => process.stderr.write(`${s}\n`));
  // Loaded here, not at the top: `tallybox run` imports this module for its gate and never loads the validator (config/load-isolated.ts).
  const config = (await import('../config/load.js')).loadConfigFile(opts.configFile);
  const pid = runningAgentPid(config.dataDir);
  if (pid) throw new TallyboxError('AGENT_RUNNING', `the agent (pid ${pid}) is running on ${config.dataDir}; stop it first (systemctl stop tallybox), or send a DeviceDecommission command`);
  const existing = readDecommission(config.dataDir);
  if (existing?.phase === 'done') {
    opts.out(summary(config, existing));
    return exitFor(existing);
  }
  // A decommission under way is finished without asking again: it was confirmed when it began.
  if (!existing && !opts.yes) {
    if (!process.stdin.isTTY) {
      err('tallybox: CONFIRMATION_REQUIRED: not a terminal: pass --yes to confirm the decommission');
      return EXIT_USAGE;
    }
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question(`Erase EVERY organisation's data on device ${config.device.id} and destroy its keys? It will not run again until provisioned. Type the device id to confirm: `);
    rl.close();
    if (answer.trim() !== config.device.id) {
      opts.out(JSON.stringify({ decommissioned: false, reason: 'not confirmed' }));
      return 1;
    }
  }
  const logger = createLogger({ level: config.log.level, base: { deviceId: config.device.id } });
  const deliverTimeoutMs = config.decommission?.deliverTimeoutSec !== undefined ? config.decommission.deliverTimeoutSec * 1000 : undefined;
  const s = await runDecommission({ config, logger, requestRef: 'local', ...(deliverTimeoutMs !== undefined ? { deliverTimeoutMs } : {}) });
  opts.out(summary(config, s));
  return exitFor(s);
}

/** Before `tallybox run`: undefined to run normally, else the exit code (refused, or a decommission finished now). */
export async function runGate(config: Config, out: (s: string) => void, err: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): Promise<number | undefined> {
  let s: DecommissionState | undefined;
  try {
    s = readDecommission(config.dataDir);
  } catch (e) {
    err(`tallybox: DECOMMISSIONED: ${(e as Error).message}`);
    return EXIT_CONFIG;
  }
  if (!s) return undefined;
  if (s.phase !== 'done') {
    const logger = createLogger({ level: config.log.level, base: { deviceId: config.device.id } });
    logger.warn({ event: 'decommission_unfinished', phase: s.phase }, 'a decommission was interrupted: finishing it instead of running');
    s = await runDecommission({ config, logger, requestRef: s.requestRef });
    out(summary(config, s));
  }
  err(`tallybox: DECOMMISSIONED: device ${config.device.id} was decommissioned (${s.id}, receipt ${s.receiptId ?? 'none'} in ${receiptFilePath(config.dataDir)}); it does not run until provisioned again (tallybox provision)`);
  return EXIT_CONFIG;
}

/** `tallybox verify-receipt FILE --pubkey PEM`: a decommission receipt file, or any signed erasure receipt. */
export function verifyReceiptCli(opts: { file: string; pubkeyFile: string; out: (s: string) => void }): number {
  const raw = JSON.parse(readFileSync(opts.file, 'utf8')) as { signed?: SignedErasureReceipt } & Partial<SignedErasureReceipt>;
  const signed = (raw.signed ?? raw) as SignedErasureReceipt;
  const pem = readFileSync(opts.pubkeyFile, 'utf8');
  let type: unknown;
  try {
    type = (JSON.parse(signed.body) as { type?: unknown }).type;
  } catch {
    throw new TallyboxError('RECEIPT_INVALID', `${opts.file}: the signed body is not JSON`);
  }
  const r = type === DECOMMISSION_RECEIPT_TYPE ? verifyDecommissionReceipt(signed, pem) : verifyErasureReceipt(signed, pem);
  opts.out(JSON.stringify({ valid: true, type: r.type, receiptId: r.receiptId, deviceId: r.deviceId, ok: r.ok, verification: r.verification }));
  return 0;
}
