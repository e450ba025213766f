/**
 * Puts a FingerprintDevice on a byte transport: decodes what the host sends,
 * writes the device's replies, and applies injected faults on the way out.
 */
import { R30xFrameDecoder } from '../../firmware-bridge/r30x/codec.js';
import type { ByteTransport } from '../../firmware-bridge/transport/types.js';
import { SerialQueue } from '../../src/util/serial-queue.js';
import type { FingerprintDevice } from './device.js';

/** Faults applied to the next replies. Counts are consumed one reply at a time. */
export interface Faults {
  /** Garbage bytes (never EF) written before the next reply. */
  noise: number;
  /** This many next replies lose one byte (their confirmation code). */
  dropByte: number;
  /** This many next replies carry a wrong checksum. */
  corruptChecksum: number;
  /** Every reply waits this long (until set back to 0). */
  delayMs: number;
}

export const NO_FAULTS: Readonly<Faults> = { noise: 0, dropByte: 0, corruptChecksum: 0, delayMs: 0 };

export interface LinkStats {
  rxFrames: number;
  rxRejects: number;
  txReplies: number;
}

/** Time on the wire of `bytes` at `baudRate`, 8N1: 10 bits a byte (start, 8 data, stop). */
export function wireTimeMs(bytes: number, baudRate: number): number {
  return (bytes * 10 * 1000) / baudRate;
}

export class DeviceLink {
  readonly device: FingerprintDevice;
  /**
   * Pace replies at the module's baud rate (bytes × 10 bits / baud), as a real
   * UART would deliver them; off for fast tests. A pty or a mock moves bytes at
   * memory speed otherwise, which hides timeouts a host would hit on hardware
   * (an UpChar is ~100 ms at 57600, an UpImage ~6.5 s).
   */
  pacing: boolean;
  faults: Faults = { ...NO_FAULTS };
  /** Silent unplug: bytes in are lost, nothing goes out. */
  unplugged = false;
  readonly stats: LinkStats = { rxFrames: 0, rxRejects: 0, txReplies: 0 };
  #transport: ByteTransport | null = null;
  #decoder = new R30xFrameDecoder();
  /** Replies (and unasked bytes) leave one at a time, in order. */
  readonly #tx = new SerialQueue();
  #noiseState = 0x1234;
  /** Monotonic time (performance.now) until which the simulated line is busy sending. */
  #lineBusyUntil = 0;
  readonly #onData = (chunk: Buffer) => this.#receive(chunk);

  constructor(opts: { device: FingerprintDevice; transport?: ByteTransport; pacing?: boolean }) {
    this.device = opts.device;
    this.pacing = opts.pacing ?? false;
    if (opts.transport) this.attach(opts.transport);
  }

  get transport(): ByteTransport | null {
    return this.#transport;
  }

  attach(transport: ByteTransport): void {
    this.detach();
    this.#transport = transport;
    this.#decoder = new R30xFrameDecoder();
    transport.on('data', this.#onData);
  }

  detach(): void {
    this.#transport?.off('data', this.#onData);
    this.#transport = null;
  }

  setFaults(patch: Partial<Faults>): Faults {
    for (const key of Object.keys(NO_FAULTS) as (keyof Faults)[]) {
      const v = patch[key];
      if (v === undefined) continue;
      if (!Number.isInteger(v) || v < 0 || v > 600_000) throw new RangeError(`fault ${key}=${String(v)} is not an integer 0..600000`);
      this.faults[key] = v;
    }
    return { ...this.faults };
  }

  clearFaults(): void {
    this.faults = { ...NO_FAULTS };
  }

  /** Write garbage now, unasked (line noise). */
  injectNoise(bytes: number): Promise<void> {
    return this.#send([this.#noise(bytes)], 0, this.device.baudRate);
  }

  /** Send bytes outside any exchange (the 0x55 handshake at power-up). */
  sendRaw(frames: Buffer[]): Promise<void> {
    return this.#send(frames, 0, this.device.baudRate);
  }

  /** Resolves when every queued reply has been written. */
  flush(): Promise<void> {
    return this.#tx.idle();
  }

  #receive(chunk: Buffer): void {
    if (this.unplugged) return;
    for (const item of this.#decoder.push(chunk)) {
      if (item.kind === 'reject') {
        this.stats.rxRejects++;
        continue;
      }
      this.stats.rxFrames++;
      // The reply leaves at the speed in force when the command came (SetSysPara's ack goes at the old rate).
      const baudRate = this.device.baudRate;
      const frames = this.device.handle(item.packet);
      if (frames.length === 0) continue;
      this.stats.txReplies++;
      void this.#send(this.#applyFaults(frames), this.faults.delayMs, baudRate);
    }
  }

  #applyFaults(frames: Buffer[]): Buffer[] {
    const out: Buffer[] = frames.map((f) => Buffer.from(f));
    const first = out[0] as Buffer;
    if (this.faults.corruptChecksum > 0) {
      this.faults.corruptChecksum--;
      const i = first.length - 1;
      first[i] = (first[i] as number) ^ 0x5a;
    }
    if (this.faults.dropByte > 0) {
      this.faults.dropByte--;
      // Drop the confirmation code: LEN no longer fits, which is what a UART overrun looks like.
      out[0] = Buffer.concat([first.subarray(0, 9), first.subarray(10)]);
    }
    if (this.faults.noise > 0) {
      out.unshift(this.#noise(this.faults.noise));
      this.faults.noise = 0;
    }
    return out;
  }

  /** Replies leave in order even when delayed: one write chain. */
  #send(frames: Buffer[], delayMs: number, baudRate: number): Promise<void> {
    const run = async () => {
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      if (!this.pacing) {
        // One write per frame, yielding to the event loop in between: libuv writes a pty
        // master with blocking writes (it cannot reopen a master non-blocking), so one
        // ~40 KB UpImage write would fill the pty and block this process, host included.
        for (let i = 0; i < frames.length; i++) {
          if (i > 0) await new Promise((r) => setImmediate(r));
          await this.#write(frames[i] as Buffer);
        }
        return;
      }
      // Paced: each frame is written once the line would have finished sending it,
      // so a multi-packet reply trickles out at the baud rate (durations on the monotonic clock).
      for (const f of frames) {
        const start = Math.max(performance.now(), this.#lineBusyUntil);
        this.#lineBusyUntil = start + wireTimeMs(f.length, baudRate);
        const wait = this.#lineBusyUntil - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        await this.#write(f);
      }
    };
    return this.#tx.run(run);
  }

  async #write(bytes: Buffer): Promise<void> {
    const t = this.#transport;
    if (this.unplugged || !t || t.status !== 'open') return;
    try {
      await t.write(bytes);
    } catch {
      // The host end went away mid-write; a real module would not notice either.
    }
  }

  #noise(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      // Deterministic LCG so a failing run can be replayed; EF excluded so noise cannot fake a start code.
      this.#noiseState = (this.#noiseState * 1103515245 + 12345) & 0x7fffffff;
      const b = (this.#noiseState >> 16) & 0xff;
      out[i] = b === 0xef ? 0xee : b;
    }
    return out;
  }
}
