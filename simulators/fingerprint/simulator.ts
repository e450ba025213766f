/**
 * Assembles the fingerprint simulator: device state machine + link (faults) +
 * a "plug" (a pseudo-terminal whose master end it holds, or any injected
 * ByteTransport such as a mock binding's device end) + the control server.
 */
import type { ByteTransport } from '../../firmware-bridge/transport/types.js';
import { startControlServer, type ControlAddress, type ControlServer } from './control.js';
import { FingerprintDevice, type FingerprintDeviceOptions } from './device.js';
import { DeviceLink, type Faults, type LinkStats } from './link.js';
import { createPtyPair, type PtyPair } from '../lib/pty.js';

/** 'plugged'; 'silent' = powered off but the port stays; 'closed' = the pty (or transport) is gone. */
export type PlugState = 'plugged' | 'silent' | 'closed';

export interface ControlOptions {
  /** TCP port on 127.0.0.1; 0 (default) picks a free one. */
  port?: number;
  /** Listen on a unix socket instead. */
  socketPath?: string;
}

interface SimulatorCommon extends FingerprintDeviceOptions {
  /** Control server; default on (random port). `false` for none. */
  control?: ControlOptions | false;
}

export interface PtySimulatorOptions extends SimulatorCommon {
  /** Host-side path (a symlink to the pty), e.g. /tmp/tallybox-r30x. */
  link: string;
  /** Default 57600. Nominal on a pty (the kernel moves bytes at memory speed). */
  baudRate?: number;
}

export interface TransportSimulatorOptions extends SimulatorCommon {
  /** The device end of some link, e.g. `createMockSerialLink().device`. */
  transport: ByteTransport;
}

export interface SimulatorState {
  link: string | null;
  plug: PlugState;
  capacity: number;
  address: string;
  packetSize: number;
  finger: FingerprintDevice['finger'];
  templateCount: number;
  pages: number[];
  faults: Faults;
  stats: LinkStats & FingerprintDevice['counters'];
}

interface Plug {
  /** Open the module's end; returns the transport to attach. */
  connect(): Promise<ByteTransport>;
  /** Tear the module's end down (pty gone / transport closed). */
  disconnect(): Promise<void>;
  readonly link: string | null;
  /** The pseudo-terminal while one exists. */
  readonly pty?: PtyPair | null;
  /** Set by the simulator: the module's end vanished without being asked (pty hung up). */
  onLost?: () => void;
}

export class FingerprintSimulator {
  readonly device: FingerprintDevice;
  readonly deviceLink: DeviceLink;
  #plug: Plug;
  #state: PlugState = 'closed';
  #control: ControlServer | null = null;
  #closed = false;

  private constructor(opts: { device: FingerprintDevice; plug: Plug }) {
    this.device = opts.device;
    this.deviceLink = new DeviceLink({ device: opts.device });
    this.#plug = opts.plug;
    this.#plug.onLost = () => {
      if (this.#closed || this.#state === 'closed') return;
      this.deviceLink.detach();
      this.#state = 'closed';
    };
  }

  /** The pseudo-terminal behind the plug, or null (injected transport / unplugged). */
  get pty(): PtyPair | null {
    return this.#plug.pty ?? null;
  }

  /** Host-side path the agent opens, or null on an injected transport. */
  get link(): string | null {
    return this.#plug.link;
  }
  get plug(): PlugState {
    return this.#state;
  }
  get control(): ControlAddress | null {
    return this.#control?.address ?? null;
  }

  state(): SimulatorState {
    return {
      link: this.link,
      plug: this.#state,
      capacity: this.device.capacity,
      address: this.device.address.toString(16).toUpperCase().padStart(8, '0'),
      packetSize: this.device.packetSize,
      finger: this.device.finger,
      templateCount: this.device.pages().length,
      pages: this.device.pages(),
      faults: { ...this.deviceLink.faults },
      stats: { ...this.deviceLink.stats, ...this.device.counters },
    };
  }

  /** 'silent': stop answering (module unpowered). 'close': also remove the pty, so the host's port fails. */
  async unplug(mode: 'silent' | 'close' = 'silent'): Promise<void> {
    if (this.#state === 'closed') return;
    this.deviceLink.unplugged = true;
    this.device.powerCycle();
    if (mode === 'close') {
      this.deviceLink.detach();
      await this.#plug.disconnect();
      this.#state = 'closed';
    } else {
      this.#state = 'silent';
    }
  }

  /** Power back on; recreates the pty (same path) after a 'close' unplug. */
  async replug(): Promise<void> {
    if (this.#closed) throw new Error('simulator is closed');
    if (this.#state === 'closed') this.deviceLink.attach(await this.#plug.connect());
    this.device.powerCycle();
    this.deviceLink.unplugged = false;
    this.#state = 'plugged';
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.deviceLink.unplugged = true;
    this.deviceLink.detach();
    await this.#control?.close();
    await this.#plug.disconnect();
    this.#state = 'closed';
  }

  /** @internal */
  static async start(opts: SimulatorCommon & { plug: Plug }): Promise<FingerprintSimulator> {
    const sim = new FingerprintSimulator({ device: new FingerprintDevice(opts), plug: opts.plug });
    try {
      await sim.replug();
      if (opts.control !== false) sim.#control = await startControlServer({ simulator: sim, ...(opts.control ?? {}) });
    } catch (err) {
      await sim.close();
      throw err;
    }
    return sim;
  }
}

/** The simulator on a real pseudo-terminal: the host opens `opts.link` with serialport. */
export function startFingerprintSimulator(opts: PtySimulatorOptions): Promise<FingerprintSimulator> {
  let pty: PtyPair | null = null;
  const plug: Plug = {
    link: opts.link,
    get pty() {
      return pty;
    },
    async connect() {
      const pair = await createPtyPair({ link: opts.link });
      pty = pair;
      // The pty vanished without being asked (hangup): report the plug as closed so /replug can rebuild it.
      void pair.closed.then(() => {
        if (pty !== pair) return;
        pty = null;
        plug.onLost?.();
      });
      return pair.device;
    },
    async disconnect() {
      const p = pty;
      pty = null;
      await p?.close();
    },
  };
  return FingerprintSimulator.start({ ...opts, plug });
}

/** The simulator on an injected transport (no pty), e.g. a mock binding's device end. */
export function startFingerprintSimulatorOnTransport(opts: TransportSimulatorOptions): Promise<FingerprintSimulator> {
  const plug: Plug = {
    link: null,
    async connect() {
      await opts.transport.open();
      return opts.transport;
    },
    async disconnect() {
      await opts.transport.close();
    },
  };
  return FingerprintSimulator.start({ ...opts, plug });
}
