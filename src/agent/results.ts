/**
 * Command results and erasure receipts travel like punches: queued durably in
 * the outbox database, published through the egress gate when the link is up,
 * deleted on PUBACK. A receipt for a purge run while the cloud was unreachable
 * (`tallybox purge`) is delivered on the next connection.
 *
 * Stored as the JSON form of the CommandResult fields (bytes as base64); the
 * gate re-encodes them, and protobufjs encodes the same fields to the same
 * bytes, so the device signature made over the encoding still verifies.
 */
import type { JournalEntry } from '../link/commands/index.js';
import type { EgressGate } from '../link/egress.js';
import type { Session } from '../link/connection.js';
import type { Outbox } from '../outbox/outbox.js';
import { pb, type CommandResultProps } from '../proto/index.js';
import type { PurgeOutcome } from '../privacy/purge.js';
import { TallyboxError, errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';

export function resultToJson(r: CommandResultProps): string {
  return JSON.stringify(pb.CommandResult.toObject(pb.CommandResult.fromObject(r), { bytes: String, longs: Number, enums: Number }));
}

export function resultFromJson(body: string): CommandResultProps {
  return pb.CommandResult.fromObject(JSON.parse(body) as Record<string, unknown>);
}

export class ResultQueue {
  private sending = false;
  private again = false;

  constructor(private readonly opts: { outbox: Outbox; egress: EgressGate; session: () => Session | undefined; logger: Logger }) {}

  /** Durably queue, then try to send now. */
  async enqueue(orgId: string, result: CommandResultProps): Promise<void> {
    await this.opts.outbox.enqueueResult(orgId, resultToJson(result));
    this.kick();
  }

  /**
   * Publish now, without queueing anything (results of rejected commands):
   * rejects with NOT_ONLINE when there is no connection, so the caller keeps
   * it in its own bounded memory queue.
   */
  async sendNow(orgId: string, result: CommandResultProps): Promise<void> {
    const session = this.opts.session();
    if (!session) throw new TallyboxError('NOT_ONLINE', 'no broker connection');
    await this.opts.egress.publishResult(session.client, orgId, result);
  }

  /** Send whatever is pending (called on every connect and after enqueue). */
  kick(): void {
    if (this.sending) {
      this.again = true;
      return;
    }
    this.sending = true;
    void this.sendAll()
      .catch((err: unknown) => this.opts.logger.warn({ event: 'result_send_failed', err: errorMessage(err) }, 'command result not delivered yet; will retry on reconnect'))
      .finally(() => {
        this.sending = false;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async sendAll(): Promise<void> {
    for (;;) {
      const session = this.opts.session();
      if (!session) return;
      const pending = await this.opts.outbox.pendingResults(50);
      if (pending.length === 0) return;
      for (const r of pending) {
        await this.opts.egress.publishResult(session.client, r.orgId, resultFromJson(r.body));
        await this.opts.outbox.deleteResult(r.id);
      }
    }
  }
}

const ERASURE_KINDS = new Set(['orgWithdraw', 'subjectErase', 'rosterSync']);

/**
 * What is known about a command the agent was killed during, for its
 * INTERRUPTED result (no personal data: kinds, counters, receipt ids).
 * `resumed`: the purges finished at this start; `orgKeyLeft`: for an
 * OrgWithdraw, whether the organisation still has a data key.
 */
export function describeInterrupted(e: JournalEntry, resumed: readonly PurgeOutcome[], orgKeyLeft?: boolean): string {
  const head = `the agent stopped while the ${e.kind} command was running`;
  if (ERASURE_KINDS.has(e.kind)) {
    const job = resumed.find((o) => o.receipt.requestRef === `cmd:${e.counter}`);
    if (job) {
      return `${head}; its erasure was resumed at start and ${job.ok ? 'completed and verified' : 'did NOT verify'}; receipt ${job.receipt.receiptId} is delivered in its own result (reason purge_resumed)`;
    }
    if (e.kind === 'orgWithdraw' && orgKeyLeft === false) return `${head}; the organisation's data key is destroyed (no unfinished erasure job is left); send the command again for a receipt`;
    if (e.kind === 'orgWithdraw' && orgKeyLeft === true) return `${head}; no erasure job was recorded and the organisation's data key is still there: nothing was erased; send the command again`;
    return `${head}; no unfinished erasure job is left for it; send the command again for a receipt`;
  }
  if (e.kind === 'servedOrgsSet') return `${head}; the served-organisations list is either the old or the new one (it is replaced in one atomic write); send the command again`;
  if (e.kind === 'configPatch') return `${head}; the settings may or may not have changed; send the command again`;
  if (e.kind === 'subjectUpsert') return `${head}; the subject may be partly recorded; send the command again (it is idempotent)`;
  return `${head}; what it did is not known`;
}
