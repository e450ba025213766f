/**
 * The platform serialport binding, with one fix: a read that returns 0 bytes
 * is a hangup, not "try again".
 *
 * Why: when a tty hangs up — a USB-serial adapter pulled out, or the other end
 * of a pseudo-terminal closed — Linux switches the open file to hung-up
 * operations whose read() returns 0 forever. @serialport/bindings-cpp 13
 * retries a 0-byte read at once, without polling, so a read that was in flight
 * at the moment of the hangup spins the libuv thread pool forever and the port
 * never reports 'close' (only a read parked in poll sees POLLERR and
 * disconnects). Which of the two happens is a race; the peripheral would stay
 * "online" with a core busy. Here a 0-byte read becomes an EIO disconnect, so
 * SerialPortStream closes the port and the transport reports CLOSED.
 *
 * Only `read` on Unix bindings is replaced, with the same loop as
 * bindings-cpp's unixRead (read; on EAGAIN wait for the poller) minus the
 * 0-byte retry. Other platforms and mock bindings pass through untouched.
 */
import { read as fsRead } from 'node:fs';
import { promisify } from 'node:util';
import { SerialPort } from 'serialport';

const readAsync = promisify(fsRead);

type Binding = typeof SerialPort.binding;

/** The parts of bindings-cpp's Unix port the loop needs (public fields of LinuxPortBinding/DarwinPortBinding). */
interface UnixPort {
  fd: number | null;
  readonly isOpen: boolean;
  readonly poller: { once(event: 'readable', cb: (err?: Error | null) => void): unknown };
  read(buffer: Buffer, offset: number, length: number): Promise<{ bytesRead: number; buffer: Buffer }>;
}

function isUnixPort(port: unknown): port is UnixPort {
  const p = port as Partial<UnixPort> | null;
  return typeof p === 'object' && p !== null && 'fd' in p && typeof p.poller?.once === 'function';
}

/** Shaped like bindings-cpp's BindingsError: `canceled` tells SerialPortStream it is not a disconnect. */
function notOpen(): Error {
  return Object.assign(new Error('Port is not open'), { canceled: true });
}

async function readUntilData(port: UnixPort, buffer: Buffer, offset: number, length: number): Promise<{ bytesRead: number; buffer: Buffer }> {
  for (;;) {
    if (!port.isOpen || port.fd === null) throw notOpen();
    try {
      const { bytesRead } = await readAsync(port.fd, buffer, offset, length, null);
      if (bytesRead === 0) {
        throw Object.assign(new Error('EIO: the tty hung up (read returned end of file)'), { code: 'EIO', disconnect: true });
      }
      return { bytesRead, buffer };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK' && code !== 'EINTR') throw err;
      if (!port.isOpen) throw notOpen();
      await new Promise<void>((resolve, reject) => port.poller.once('readable', (e) => (e ? reject(e) : resolve())));
    }
  }
}

/** Wrap a binding (default: the platform's) so its Unix ports treat end of file as a hangup. */
export function hangupAwareBinding(inner: Binding = SerialPort.binding): Binding {
  // The binding types are a union over platforms; the wrapper only needs "open returns a port".
  const open = inner.open.bind(inner) as (options: unknown) => Promise<unknown>;
  const wrapped = Object.create(inner) as { open: (options: unknown) => Promise<unknown> };
  wrapped.open = async (options) => {
    const port = await open(options);
    if (isUnixPort(port)) port.read = (buffer, offset, length) => readUntilData(port, buffer, offset, length);
    return port;
  };
  return wrapped as unknown as Binding;
}
