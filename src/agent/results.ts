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
import type { EgressGate } from '../link/egress.js';
import type { Session } from '../link/connection.js';
import type { Outbox } from '../outbox/outbox.js';
import { pb, type CommandResultProps } from '../proto/index.js';
import { errorMessage } from '../util/errors.js';
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

  constructor(
    private readonly opts: { outbox: Outbox; egress: EgressGate; session: () => Session | undefined; logger: Logger },
  ) {}

  /** Durably queue, then try to send now. */
  async enqueue(orgId: string, result: CommandResultProps): Promise<void> {
    await this.opts.outbox.enqueueResult(orgId, resultToJson(result));
    this.kick();
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
