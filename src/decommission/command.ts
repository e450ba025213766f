/**
 * The signed DeviceDecommission command: the same decommission as
 * `tallybox decommission`, answered with the ONE receipt in the command's
 * own result (signed by the identity key, which is destroyed only after the
 * result has been queued and, within a bounded time, delivered). Then the
 * agent stops and the keys go; `tallybox run` refuses afterwards.
 */
import { join } from 'node:path';
import type { Agent } from '../agent/agent.js';
import type { CommandContext, HandlerOutcome } from '../link/commands/index.js';
import { ResultCode } from '../proto/index.js';
import type { SignedErasureReceipt } from '../privacy/receipt.js';
import { errorMessage } from '../util/errors.js';
import { Decommission, type DecommissionDeps } from './engine.js';
import type { DecommissionReceipt } from './receipt.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/**
 * Wait (bounded, monotonic) until the command's result, carrying the receipt,
 * has been handed to the result queue (the intake's journal says so) and has
 * left it again (deleted on PUBACK).
 */
async function delivered(deps: DecommissionDeps, receiptId: string, counter: number): Promise<boolean> {
  const { carriedReceiptId } = await import('../agent/privacy.js');
  const { resultFromJson } = await import('../agent/results.js');
  const { Sqlite } = await import('../store/sqlite.js');
  const inQueue = async () => (await deps.outbox.pendingResults(1_000_000)).some((r) => carriedReceiptId(resultFromJson(r.body)) === receiptId);
  const journal = await Sqlite.open(join(deps.config.dataDir, 'commands.db'), { readonly: true });
  try {
    const handed = async () => ((await journal.get<{ queued: number }>('SELECT queued FROM journal WHERE counter = ?', [counter]))?.queued ?? 0) === 1;
    const until = performance.now() + (deps.deliverTimeoutMs ?? 30_000);
    while (performance.now() < until) {
      if (deps.online() && (await handed()) && !(await inQueue())) return true;
      await sleep(50);
    }
    return false;
  } finally {
    await journal.close();
  }
}

export async function handleDeviceDecommission(agent: Agent, ctx: CommandContext, opts: { exit?: () => void } = {}): Promise<HandlerOutcome> {
  const { agentDeps } = await import('./runner.js');
  const deps = await agentDeps(agent);
  const d = Decommission.begin(deps, `cmd:${ctx.counter}`);
  const signed = await d.toReceipt();
  const receipt = JSON.parse((JSON.parse(signed) as SignedErasureReceipt).body) as DecommissionReceipt;
  // After this handler returns the intake signs and queues the result; only then may the keys go.
  setImmediate(() => {
    void (async () => {
      try {
        await d.toKeys({ handedOver: () => delivered(deps, receipt.receiptId, ctx.counter) });
        await agent.stop();
        await Decommission.begin({ ...deps, identity: undefined, privacy: undefined }, d.current.requestRef).destroyKeys();
      } catch (err) {
        deps.logger.fatal({ event: 'decommission_failed', err: errorMessage(err) }, `decommission did not finish (it resumes at the next start): ${errorMessage(err)}`);
      }
      (opts.exit ?? defaultExit)();
    })();
  });
  return {
    code: receipt.ok ? ResultCode.RESULT_CODE_OK : ResultCode.RESULT_CODE_FAILED,
    reason: receipt.ok ? 'decommissioned' : 'decommissioned_unverified',
    detail: `decommission ${receipt.decommissionId}: ${receipt.orgs.length} organisation(s), scan ${receipt.scan.hits} hits in ${receipt.scan.files} files; keys destroyed next`,
    receipt: Buffer.from(signed, 'utf8'),
  };
}

/** Under `tallybox run` (which handles SIGTERM by stopping role and agent) the process ends; elsewhere nothing more happens. */
function defaultExit(): void {
  if (process.listenerCount('SIGTERM') > 0) process.kill(process.pid, 'SIGTERM');
}
