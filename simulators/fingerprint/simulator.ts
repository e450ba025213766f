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
import { isTermiosSpeed, readTtySpeed, setTtySpeed } from './tty-speed.js';
import { SerialQueue } from '../../src/util/serial-queue.js';

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
  /**
   * Pace replies at the configured baud rate (bytes × 10 / baud). Default false
   * for this programmatic API (tests and in-process stacks want speed); the
   * `tallybox-sim fingerprint` CLI paces by default (`--no-pacing` turns it off).
   */
  pacing?: boolean;
}

export interface PtySimulatorOptions extends SimulatorCommon {
  /** Default 57600 (9600 × N, N 1..12): ReadSysPara's baud, the pty's termios speed and the pacing rate. */
  baudRate?: number;
  /** Host-side path (a symlink to the pty), e.g. /tmp/tallybox-r30x. */
  link: string;
}

export interface TransportSimulatorOptions extends SimulatorCommon {
  /** Default 57600 (9600 × N, N 1..12): what ReadSysPara reports and pacing uses. */
  baudRate?: number;
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
  /** The module's configured line speed (ReadSysPara's), and whether replies are paced at it. */
  baudRate: number;
  pacing: boolean;
  /** Instructions received so far, by name: what the host has asked of the module. */
  instructions: Record<string, number>;
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

  /** termios speed changes, one at a time in the order the module changed its baud rate. */
  readonly #speedChange = new SerialQueue();
  /** The last failure to set the pty's speed (a baud rate termios cannot express), for state(). */
  lineSpeedError: string | null = null;

  private constructor(opts: { device: FingerprintDevice; plug: Plug; pacing: boolean }) {
    this.device = opts.device;
    this.deviceLink = new DeviceLink({ device: opts.device, pacing: opts.pacing });
    this.device.onBaudRate = () => {
      void this.#speedChange.run(() => this.#applyLineSpeed()); // never rejects: a failure lands in lineSpeedError
    };
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
      baudRate: this.device.baudRate,
      pacing: this.deviceLink.pacing,
      instructions: this.device.instructionCounts(),
      stats: { ...this.deviceLink.stats, ...this.device.counters },
    };
  }

  /** The pty's configured speed as termios reports it (stty), or null without a pty. */
  async lineSpeed(): Promise<number | null> {
    await this.#speedChange.idle();
    const pty = this.pty;
    return pty ? readTtySpeed(pty.slavePath) : null;
  }

  /** Set the pty's termios speed to the module's baud rate; best effort (see tty-speed.ts). */
  async #applyLineSpeed(): Promise<void> {
    const pty = this.pty;
    if (!pty) return;
    const baud = this.device.baudRate;
    if (!isTermiosSpeed(baud)) {
      this.lineSpeedError = `${baud} baud has no termios speed; the pty keeps its previous one (pacing uses ${baud})`;
      return;
    }
    try {
      await setTtySpeed(pty.slavePath, baud);
      this.lineSpeedError = null;
    } catch (err) {
      this.lineSpeedError = (err as Error).message;
    }
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
    const fresh = this.#state === 'closed';
    if (fresh) this.deviceLink.attach(await this.#plug.connect());
    if (fresh) await this.#applyLineSpeed();
    this.deviceLink.unplugged = false;
    this.#state = 'plugged';
    // Power-up: volatile state cleared, then the 0x55 "ready" byte, as the datasheet says.
    void this.deviceLink.sendRaw(this.device.powerUp());
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
    const sim = new FingerprintSimulator({ device: new FingerprintDevice(opts), plug: opts.plug, pacing: opts.pacing ?? false });
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
