/**
 * The byte transport every device protocol driver gets injected: a real serial
 * port, a mock binding or an in-memory pipe differ only in which implementation
 * is passed. Kept deliberately tiny (open, write, close, bytes in, status) so
 * any protocol folder can reuse it.
 */
import type { EventEmitter } from 'node:events';

/**
 * Connection status with explicit transitions (no loose booleans):
 *   closed → opening → open → closing → closed
 *   opening → closed   (open failed; the reason comes with the event)
 *   open    → closed   (device vanished: unplugged, pty torn down)
 */
export type TransportStatus = 'closed' | 'opening' | 'open' | 'closing';

export const TRANSPORT_TRANSITIONS: Readonly<Record<TransportStatus, readonly TransportStatus[]>> = {
  closed: ['opening'],
  opening: ['open', 'closed'],
  open: ['closing', 'closed'],
  closing: ['closed'],
};

export interface TransportEvents {
  /** Bytes as they arrived; chunk boundaries mean nothing. */
  data: [chunk: Buffer];
  /** Every status change; `reason` is set when the change was not asked for. */
  status: [status: TransportStatus, reason?: Error];
}

/**
 * No `'error'` event on purpose: an unhandled `'error'` would crash the
 * process, and a vanished device is a status change, not a crash.
 */
export interface ByteTransport extends Pick<EventEmitter<TransportEvents>, 'on' | 'off' | 'once'> {
  /** For logs and errors, e.g. "serial:/dev/ttyS1". */
  readonly description: string;
  readonly status: TransportStatus;
  /** Resolves once bytes can flow; rejects with TallyboxError TRANSPORT_OPEN_FAILED. */
  open(): Promise<void>;
  /** Rejects with TallyboxError TRANSPORT_NOT_OPEN / TRANSPORT_WRITE_FAILED. */
  write(bytes: Uint8Array): Promise<void>;
  /** Idempotent; resolves when closed. */
  close(): Promise<void>;
}
