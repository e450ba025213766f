/**
 * An in-memory ByteTransport pair for tests: what one end writes the other
 * receives, in chunks of whatever size the test asks for. The pseudo-terminal
 * tests use the real SerialTransport instead; this one exercises the same
 * driver code without socat.
 */
import { BaseTransport } from '../transport/base.js';

export class MemoryTransport extends BaseTransport {
  readonly description: string;
  peer: MemoryTransport | null = null;
  /** Split every write into chunks of this many bytes (exercises split frames). */
  chunkSize: number;

  constructor(opts: { description?: string; chunkSize?: number } = {}) {
    super();
    this.description = opts.description ?? 'memory';
    this.chunkSize = opts.chunkSize ?? Infinity;
  }

  static pair(opts: { chunkSize?: number } = {}): [MemoryTransport, MemoryTransport] {
    const a = new MemoryTransport({ description: 'memory:host', ...opts });
    const b = new MemoryTransport({ description: 'memory:device', ...opts });
    a.peer = b;
    b.peer = a;
    return [a, b];
  }

  async open(): Promise<void> {
    if (this.status === 'open') return;
    this.setStatus('opening');
    this.setStatus('open');
  }

  async write(bytes: Uint8Array): Promise<void> {
    this.assertOpen();
    const peer = this.peer;
    const copy = Buffer.from(bytes);
    // Delivered asynchronously, like a real line.
    setImmediate(() => {
      if (!peer || peer.status !== 'open') return;
      for (let i = 0; i < copy.length; i += this.chunkSize) peer.emit('data', copy.subarray(i, Math.min(copy.length, i + this.chunkSize)));
    });
  }

  /** Inject raw bytes as if they arrived on the line (garbage, corrupt frames). */
  inject(bytes: Uint8Array): void {
    this.emit('data', Buffer.from(bytes));
  }

  async close(): Promise<void> {
    if (this.status !== 'open') return;
    this.setStatus('closing');
    this.setStatus('closed');
  }
}
