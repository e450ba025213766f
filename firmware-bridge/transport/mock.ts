/**
 * Transports without hardware:
 * - `createMockSerialLink`: the host side is a real SerialTransport (serialport's
 *   stream code) over @serialport/binding-mock, the device side is a
 *   ByteTransport a simulator can drive. Only the binding differs from the pty
 *   and hardware cases, so the host code path is the production one.
 * - `createMemoryPair`: two cross-wired in-memory transports, for protocol
 *   unit tests that need no serialport at all.
 */
import { SerialPortMock } from 'serialport';
import { BaseTransport } from './base.js';
import { SerialTransport, type SerialBinding } from './serial.js';

type MockBinding = typeof SerialPortMock.binding;
type MockPort = Awaited<ReturnType<MockBinding['open']>>;

/** One end of an in-process wire. Bytes written here arrive at the peer as 'data'. */
export class MemoryTransport extends BaseTransport {
  readonly description: string;
  /** Set by the link: delivers bytes to the other side (or drops them when it is not listening). */
  deliver: (bytes: Buffer) => void = () => undefined;

  constructor(opts: { description: string }) {
    super();
    this.description = opts.description;
  }

  async open(): Promise<void> {
    if (this.status === 'open') return;
    this.setStatus('opening');
    this.setStatus('open');
  }

  async write(bytes: Uint8Array): Promise<void> {
    this.assertOpen();
    // Copy: the caller may reuse its buffer, the peer sees bytes asynchronously.
    const copy = Buffer.from(bytes);
    this.deliver(copy);
  }

  async close(): Promise<void> {
    if (this.status !== 'open') return;
    this.setStatus('closing');
    this.setStatus('closed');
  }

  /** Called by the link with bytes from the peer. */
  receive(bytes: Buffer): void {
    if (this.status === 'open') this.emit('data', bytes);
  }
}

export interface MemoryPair {
  host: MemoryTransport;
  device: MemoryTransport;
}

/** Two cross-wired transports; delivery is on a later tick, like a real wire. */
export function createMemoryPair(opts: { name?: string } = {}): MemoryPair {
  const name = opts.name ?? 'memory';
  const host = new MemoryTransport({ description: `${name}:host` });
  const device = new MemoryTransport({ description: `${name}:device` });
  host.deliver = (b) => setImmediate(() => device.receive(b));
  device.deliver = (b) => setImmediate(() => host.receive(b));
  return { host, device };
}

export interface MockSerialLink {
  path: string;
  /** Pass to `new SerialTransport({ path, binding })`. */
  binding: SerialBinding;
  /** The device end: a simulator reads host writes from it and writes replies to it. */
  device: MemoryTransport;
  /** Convenience: a host-side SerialTransport on this link (not yet opened). */
  createHostTransport(opts?: { baudRate?: number }): SerialTransport;
}

let mockCounter = 0;

/**
 * A mock serial port at `path` (default a unique /dev/mock-r30x-N). The binding
 * wraps MockBinding so that bytes the host writes reach `device`, and bytes the
 * device writes are emitted into the host's port.
 */
export function createMockSerialLink(opts: { path?: string } = {}): MockSerialLink {
  const path = opts.path ?? `/dev/mock-serial-${process.pid}-${++mockCounter}`;
  const base = SerialPortMock.binding;
  base.createPort(path, { echo: false, record: false });
  const device = new MemoryTransport({ description: `mock-device:${path}` });
  let hostPort: MockPort | null = null;

  device.deliver = (bytes) => {
    // A wire with nobody listening loses the bytes, as a real UART would.
    if (hostPort && hostPort.isOpen) hostPort.emitData(bytes);
  };

  const binding: MockBinding = {
    ...base,
    async open(options) {
      const port = await base.open(options);
      const write = port.write.bind(port);
      port.write = async (buffer: Buffer) => {
        await write(buffer);
        device.receive(Buffer.from(buffer));
      };
      const close = port.close.bind(port);
      port.close = async () => {
        if (hostPort === port) hostPort = null;
        await close();
      };
      hostPort = port;
      return port;
    },
  };

  return {
    path,
    binding,
    device,
    createHostTransport: (o = {}) => new SerialTransport({ path, binding, ...(o.baudRate ? { baudRate: o.baudRate } : {}) }),
  };
}
