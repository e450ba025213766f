import { EventEmitter } from 'node:events';
import { TallyboxError } from '../../src/util/errors.js';
import { TRANSPORT_TRANSITIONS, type ByteTransport, type TransportEvents, type TransportStatus } from './types.js';

/** Shared status bookkeeping so every transport enforces the same transitions. */
export abstract class BaseTransport extends EventEmitter<TransportEvents> implements ByteTransport {
  abstract readonly description: string;
  #status: TransportStatus = 'closed';

  get status(): TransportStatus {
    return this.#status;
  }

  protected setStatus(next: TransportStatus, reason?: Error): void {
    const from = this.#status;
    if (from === next) return;
    if (!TRANSPORT_TRANSITIONS[from].includes(next)) {
      // A programming error in a transport, not a device fault: fail loudly.
      throw new TallyboxError('TRANSPORT_BAD_TRANSITION', `transport ${this.description}: status ${from} → ${next} is not allowed`, { from, next });
    }
    this.#status = next;
    this.emit('status', next, reason);
  }

  protected assertOpen(): void {
    if (this.#status !== 'open') {
      throw new TallyboxError('TRANSPORT_NOT_OPEN', `transport ${this.description} is ${this.#status.toUpperCase()}, not OPEN`, { status: this.#status });
    }
  }

  abstract open(): Promise<void>;
  abstract write(bytes: Uint8Array): Promise<void>;
  abstract close(): Promise<void>;
}
