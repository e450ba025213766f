/**
 * HID report transports. A report transport delivers whole reports (unlike a
 * byte transport, boundaries matter). The card reader takes one injected, so a
 * real reader (node-hid) and the simulator (SimHidTransport) differ in one field.
 */
import { EventEmitter } from 'node:events';
import { access, constants } from 'node:fs/promises';
import { TallyboxError, errorMessage } from '../../src/util/errors.js';
import { TRANSPORT_TRANSITIONS, type TransportStatus } from '../transport/types.js';

export interface HidTransportEvents {
  /** One input report. */
  report: [report: Buffer];
  /** closed → opening → open → closing → closed; `reason` when not asked for (unplugged). */
  status: [status: TransportStatus, reason?: Error];
}

export interface HidReportTransport extends Pick<EventEmitter<HidTransportEvents>, 'on' | 'off' | 'once'> {
  readonly description: string;
  readonly status: TransportStatus;
  open(): Promise<void>;
  close(): Promise<void>;
  /**
   * Presence check for the supervisor's heartbeat: resolves while the reader
   * is still there (listed by the HID layer, its node present). A HID reader
   * answers nothing, so presence is all a heartbeat can ask.
   */
  probe?(): Promise<void>;
}

abstract class BaseHidTransport extends EventEmitter<HidTransportEvents> implements HidReportTransport {
  abstract readonly description: string;
  #status: TransportStatus = 'closed';
  get status(): TransportStatus {
    return this.#status;
  }
  protected setStatus(next: TransportStatus, reason?: Error): void {
    const from = this.#status;
    if (from === next) return;
    if (!TRANSPORT_TRANSITIONS[from].includes(next)) throw new TallyboxError('TRANSPORT_BAD_TRANSITION', `transport ${this.description}: status ${from} → ${next} is not allowed`, { from, next });
    this.#status = next;
    this.emit('status', next, reason);
  }
  abstract open(): Promise<void>;
  abstract close(): Promise<void>;
}

/** In-memory reader for simulators and tests: `inject` delivers reports as if from USB. */
export class SimHidTransport extends BaseHidTransport {
  readonly description: string;
  constructor(opts: { description?: string } = {}) {
    super();
    this.description = opts.description ?? 'hid:sim';
  }
  #plugged = true;
  async open(): Promise<void> {
    if (this.status === 'open') return;
    this.setStatus('opening');
    if (!this.#plugged) {
      const err = new TallyboxError('HID_DEVICE_NOT_FOUND', `card reader ${this.description} is not connected`);
      this.setStatus('closed', err);
      throw err;
    }
    this.setStatus('open');
  }
  #hung = false;
  /** Simulate unplugging (the HID layer reports it: a read error); open() fails until replug(). */
  unplug(): void {
    this.#plugged = false;
    if (this.status === 'open') this.setStatus('closed', new Error('device unplugged'));
  }
  replug(): void {
    this.#plugged = true;
    this.#hung = false;
  }
  /**
   * Simulate a reader that vanished without a word (no read error; seen with
   * hubs that lose power): reports stop, the transport still says 'open',
   * and only a presence probe notices. `false` brings it back.
   */
  hang(hung = true): void {
    this.#hung = hung;
  }
  inject(report: Uint8Array): void {
    if (!this.#hung) this.#deliver(report);
  }
  #deliver(report: Uint8Array): void {
    if (this.status === 'open') this.emit('report', Buffer.from(report));
  }
  async probe(): Promise<void> {
    if (this.status !== 'open') throw new TallyboxError('HID_NOT_OPEN', `card reader ${this.description} is ${this.status}`);
    if (this.#hung) throw new TallyboxError('HID_DEVICE_GONE', `card reader ${this.description} is no longer listed`);
  }
  async close(): Promise<void> {
    if (this.status !== 'open') return;
    this.setStatus('closing');
    this.setStatus('closed');
  }
}

const hex4 = (n: number) => n.toString(16).padStart(4, '0');

/** The udev rule that lets the agent's user read the reader. */
export function udevRule(vendorId: number, productId: number, group = 'plugdev'): string {
  return `SUBSYSTEM=="hidraw", ATTRS{idVendor}=="${hex4(vendorId)}", ATTRS{idProduct}=="${hex4(productId)}", MODE="0660", GROUP="${group}"`;
}

function permissionFix(vendorId: number, productId: number, path?: string): string {
  return (
    `${path ? `${path} is not readable by this user. ` : ''}Add a udev rule, e.g. /etc/udev/rules.d/99-tallybox-card-reader.rules:\n  ${udevRule(vendorId, productId)}\n` +
    `then run: udevadm control --reload-rules && udevadm trigger, add the agent's user to that group, and replug the reader.`
  );
}

/** Only the parts of node-hid used here (typed locally: the module is loaded lazily). */
interface NodeHidModule {
  devices(): { vendorId: number; productId: number; path?: string; usagePage?: number; usage?: number; interface?: number }[];
  HID: new (path: string, options?: { nonExclusive?: boolean }) => NodeHidDevice;
}
interface NodeHidDevice {
  on(ev: 'data', fn: (d: Buffer) => void): void;
  on(ev: 'error', fn: (e: Error) => void): void;
  removeAllListeners(): void;
  close(): void;
}

export interface NodeHidTransportOptions {
  vendorId: number;
  productId: number;
  /** Pick one interface when the reader exposes several (default: the keyboard one, usage page 1 usage 6, if listed). */
  path?: string;
  /** For tests: a stand-in for `await import('node-hid')`. */
  loadHid?: () => Promise<unknown>;
  /** For tests: checks read access to a hidraw node. */
  canRead?: (path: string) => Promise<boolean>;
}

/**
 * A real reader through node-hid, loaded with a dynamic import only when a
 * reader is configured: a machine without card readers never needs libusb/hidraw.
 */
export class NodeHidTransport extends BaseHidTransport {
  readonly description: string;
  private readonly opts: NodeHidTransportOptions;
  private dev: NodeHidDevice | null = null;
  private hid: NodeHidModule | null = null;
  private path: string | null = null;

  constructor(opts: NodeHidTransportOptions) {
    super();
    this.opts = opts;
    this.description = `hid:${hex4(opts.vendorId)}:${hex4(opts.productId)}`;
  }

  async open(): Promise<void> {
    if (this.status === 'open') return;
    const { vendorId, productId } = this.opts;
    this.setStatus('opening');
    try {
      let hid: NodeHidModule;
      try {
        const mod = (await (this.opts.loadHid ?? (() => import('node-hid')))()) as { default?: NodeHidModule } & NodeHidModule;
        hid = mod.default ?? mod;
      } catch (err) {
        throw new TallyboxError(
          'HID_LIBRARY_UNAVAILABLE',
          `cannot load node-hid for the card reader (${errorMessage(err)}). Install the USB HID runtime libraries (Debian/Ubuntu: apt-get install libusb-1.0-0 libudev1) and reinstall the agent's node modules.`,
          { vendorId, productId },
          { cause: err },
        );
      }
      let list: ReturnType<NodeHidModule['devices']>;
      try {
        list = hid.devices().filter((d) => d.vendorId === vendorId && d.productId === productId);
      } catch (err) {
        throw new TallyboxError('HID_LIBRARY_UNAVAILABLE', `node-hid cannot enumerate devices (${errorMessage(err)}); check that libusb/libudev are installed`, { vendorId, productId }, { cause: err });
      }
      const chosen = this.opts.path ? list.find((d) => d.path === this.opts.path) : (list.find((d) => d.usagePage === 1 && d.usage === 6) ?? list[0]);
      if (!chosen?.path) {
        throw new TallyboxError(
          'HID_DEVICE_NOT_FOUND',
          `no HID card reader with vendorId 0x${hex4(vendorId)} productId 0x${hex4(productId)} is connected (check the cable and the ids in config: lsusb lists them). If lsusb shows it, the hidraw node may be unreadable: ${permissionFix(vendorId, productId)}`,
          { vendorId, productId },
        );
      }
      const path = chosen.path;
      this.hid = hid;
      this.path = path;
      try {
        this.dev = new hid.HID(path);
      } catch (err) {
        const readable = await (this.opts.canRead ?? canRead)(path);
        if (!readable) throw new TallyboxError('HID_PERMISSION_DENIED', `cannot open card reader ${path}: permission denied. ${permissionFix(vendorId, productId, path)}`, { vendorId, productId, path }, { cause: err });
        throw new TallyboxError('HID_OPEN_FAILED', `cannot open card reader ${path}: ${errorMessage(err)} (another process may hold it)`, { vendorId, productId, path }, { cause: err });
      }
    } catch (err) {
      this.setStatus('closed', err as Error);
      throw err;
    }
    const dev = this.dev;
    dev.on('data', (d: Buffer) => this.emit('report', d));
    dev.on('error', (e: Error) => {
      // node-hid reports an unplug as a read error; the device is gone.
      if (this.dev !== dev) return;
      this.dev = null;
      try {
        dev.removeAllListeners();
        dev.close();
      } catch {
        /* already gone */
      }
      this.setStatus('closed', e);
    });
    this.setStatus('open');
  }

  /**
   * Still in node-hid's device list? An unplugged reader is not always
   * reported as a read error (hidraw on some hubs just stops): the list is.
   */
  async probe(): Promise<void> {
    if (this.status !== 'open' || !this.hid || !this.path) throw new TallyboxError('HID_NOT_OPEN', `card reader ${this.description} is ${this.status}`);
    let listed: boolean;
    try {
      listed = this.hid.devices().some((d) => d.path === this.path);
    } catch (err) {
      throw new TallyboxError('HID_LIBRARY_UNAVAILABLE', `node-hid cannot enumerate devices (${errorMessage(err)})`, {}, { cause: err });
    }
    if (!listed) throw new TallyboxError('HID_DEVICE_GONE', `card reader ${this.description} is no longer connected`);
  }

  async close(): Promise<void> {
    const dev = this.dev;
    if (!dev || this.status !== 'open') return;
    this.setStatus('closing');
    this.dev = null;
    dev.removeAllListeners();
    try {
      dev.close();
    } catch {
      /* closing a vanished device */
    }
    this.setStatus('closed');
  }
}

async function canRead(path: string): Promise<boolean> {
  if (!path.startsWith('/dev/')) return true; // non-Linux paths: no file mode to check
  try {
    await access(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
