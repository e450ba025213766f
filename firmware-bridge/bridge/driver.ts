/**
 * Host side of the bridge protocol: one request in flight at a time, replies
 * matched by seq with a timeout, unsolicited device events (faces, enrolment
 * captures, tamper, keypad, keep-alives) surfaced as typed events.
 *
 * The byte transport is injected (firmware-bridge/transport): a serial port, a
 * socat pseudo-terminal and an in-memory pair differ only in that field.
 * No business logic here: matching, punches and feedback policy live in the roles.
 */
import { EventEmitter } from 'node:events';
import { tallybox } from '../../src/gen/tallybox.js';
import { SerialQueue } from '../../src/util/serial-queue.js';
import type { Logger } from '../../src/util/log.js';
import type { ByteTransport, TransportStatus } from '../transport/types.js';
import { BridgeDecoder, DEFAULT_MAX_FRAME, PROTOCOL_MAX, PROTOCOL_MIN, encodeFrame, type BridgeFrame, type BridgeFrameProps, type RejectEvent } from './codec.js';
import { BridgeError } from './errors.js';

const pb = tallybox.v1;
export const BridgeStatusCode = pb.BridgeStatus;
export const BridgeCapturePurpose = pb.BridgeCapturePurpose;
export const BridgeLedColour = pb.BridgeLedColour;

/**
 * Link status, explicit transitions:
 *   closed → handshaking → ready → closed
 *   handshaking → closed (no reply, no common version, transport lost)
 */
export type BridgeLinkStatus = 'closed' | 'handshaking' | 'ready';

/** A face capture as the host uses it: the vector as Float32Array. Personal data: never log it. */
export interface FaceCapture {
  vector: Float32Array;
  quality: number;
  liveness: number;
  purpose: tallybox.v1.BridgeCapturePurpose;
  captureId: number;
}

export interface ModuleInfo {
  protocol: number;
  firmwareVersion: string;
  model: string;
  featureDim: number;
  featureModel: string;
  maxFrame: number;
}

export type DriverRejectEvent = RejectEvent | { reason: 'feature' | 'stale-reply'; length: number };

export interface BridgeDriverEvents {
  status: [status: BridgeLinkStatus, reason?: Error];
  face: [capture: FaceCapture];
  enrolCapture: [capture: { index: number; total: number; feature: FaceCapture | null; aborted: boolean }];
  tamper: [event: { open: boolean }];
  /** A PIN is a credential: handlers must not log `keys`. */
  keypad: [event: { keys: string }];
  heartbeat: [event: { uptimeMs: number }];
  /** A frame was dropped (corrupt, stale, inconsistent); for counters and diagnostics. */
  reject: [event: DriverRejectEvent];
}

export interface BridgeDriverOptions {
  transport: ByteTransport;
  /** Reply timeout per request; default 1000 ms (a 2 KB frame takes ~180 ms at 115200 baud). */
  timeoutMs?: number;
  maxFrame?: number;
  hostVersion?: string;
  logger?: Logger;
}

interface Pending {
  seq: number;
  expect: NonNullable<BridgeFrame['body']>;
  name: string;
  resolve: (f: BridgeFrame) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class BridgeDriver extends EventEmitter<BridgeDriverEvents> {
  readonly transport: ByteTransport;
  readonly timeoutMs: number;
  private readonly maxFrame: number;
  private readonly hostVersion: string;
  private readonly log: Logger | undefined;
  private readonly decoder: BridgeDecoder;
  private _status: BridgeLinkStatus = 'closed';
  private _info: ModuleInfo | null = null;
  private seq = 0;
  private pending: Pending | null = null;
  /** Serialises requests: one in flight, the rest wait their turn. */
  private readonly queue = new SerialQueue();
  private readonly onData = (chunk: Buffer) => this.decoder.write(chunk);
  private readonly onTransportStatus = (s: TransportStatus, reason?: Error) => {
    if (s === 'closed') this.linkLost(reason ?? new Error(`transport ${this.transport.description} closed`));
  };

  constructor(opts: BridgeDriverOptions) {
    super();
    this.transport = opts.transport;
    this.timeoutMs = opts.timeoutMs ?? 1000;
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    this.hostVersion = opts.hostVersion ?? '';
    this.log = opts.logger;
    this.decoder = new BridgeDecoder({ maxFrame: this.maxFrame });
    this.decoder.on('data', (f: BridgeFrame) => this.onFrame(f));
    this.decoder.on('reject', (e: RejectEvent) => {
      this.log?.debug({ reason: e.reason, length: e.length }, 'bridge: frame rejected');
      this.emit('reject', e);
    });
  }

  get status(): BridgeLinkStatus {
    return this._status;
  }

  /** What the module said in its BridgeHelloAck; null before the handshake. */
  get info(): ModuleInfo | null {
    return this._info;
  }

  /** Open the transport (if needed) and negotiate the protocol version. */
  async start(): Promise<ModuleInfo> {
    if (this._status === 'ready' && this._info) return this._info;
    this.transport.on('data', this.onData);
    this.transport.on('status', this.onTransportStatus);
    this.setStatus('handshaking');
    try {
      if (this.transport.status !== 'open') await this.transport.open();
      const reply = await this.request({ hello: { hostProtocolMin: PROTOCOL_MIN, hostProtocolMax: PROTOCOL_MAX, hostVersion: this.hostVersion } }, 'helloAck', 'hello');
      const a = reply.helloAck!;
      if (!a.protocol || a.protocol < PROTOCOL_MIN || a.protocol > PROTOCOL_MAX) {
        throw new BridgeError('BRIDGE_NO_COMMON_VERSION', `bridge module chose protocol ${a.protocol ?? 0}; the host speaks ${PROTOCOL_MIN}..${PROTOCOL_MAX}`, { protocol: a.protocol ?? 0 });
      }
      this._info = {
        protocol: a.protocol,
        firmwareVersion: a.firmwareVersion ?? '',
        model: a.model ?? '',
        featureDim: a.featureDim ?? 0,
        featureModel: a.featureModel ?? '',
        maxFrame: a.maxFrame || DEFAULT_MAX_FRAME,
      };
      this.setStatus('ready');
      return this._info;
    } catch (err) {
      this.detach();
      this.setStatus('closed', err as Error);
      throw err;
    }
  }

  /** Round-trip a heartbeat; resolves with the device uptime. */
  async ping(): Promise<{ uptimeMs: number; rttMs: number }> {
    const t0 = performance.now();
    const r = await this.request({ heartbeat: { uptimeMs: 0 } }, 'heartbeat', 'heartbeat');
    return { uptimeMs: Number(r.heartbeat?.uptimeMs ?? 0), rttMs: performance.now() - t0 };
  }

  displayText(msg: { line1?: string; line2?: string; durationMs?: number }): Promise<void> {
    return this.command({ displayText: { line1: msg.line1 ?? '', line2: msg.line2 ?? '', durationMs: msg.durationMs ?? 0 } }, 'displayText');
  }

  indicator(msg: { led?: tallybox.v1.BridgeLedColour; ledMs?: number; beeps?: number; beepMs?: number }): Promise<void> {
    return this.command({ indicator: { led: msg.led ?? pb.BridgeLedColour.BRIDGE_LED_COLOUR_UNSPECIFIED, ledMs: msg.ledMs ?? 0, beeps: msg.beeps ?? 0, beepMs: msg.beepMs ?? 0 } }, 'indicator');
  }

  relay(msg: { energised: boolean; pulseMs?: number }): Promise<void> {
    return this.command({ relay: { energised: msg.energised, pulseMs: msg.pulseMs ?? 0 } }, 'relay');
  }

  /**
   * Ask the module for `captures` enrolment captures and collect them. The
   * person has `timeoutMs` in total to present themselves.
   */
  async enrol(opts: { captures: number; timeoutMs: number }): Promise<FaceCapture[]> {
    const got: FaceCapture[] = [];
    let onCapture!: (c: BridgeDriverEvents['enrolCapture'][0]) => void;
    let timer: NodeJS.Timeout | undefined;
    const done = new Promise<FaceCapture[]>((resolve, reject) => {
      onCapture = (c) => {
        if (c.aborted || !c.feature) return reject(new BridgeError('BRIDGE_ENROL_ABORTED', `bridge module aborted the enrolment after ${got.length} of ${opts.captures} captures`, { captured: got.length }));
        got.push(c.feature);
        if (got.length >= opts.captures) resolve(got);
      };
      this.on('enrolCapture', onCapture);
    });
    try {
      await this.command({ enrolStart: { captures: opts.captures, timeoutMs: opts.timeoutMs } }, 'enrolStart');
      return await Promise.race([
        done,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new BridgeError('BRIDGE_TIMEOUT', `enrolment: ${got.length} of ${opts.captures} captures within ${opts.timeoutMs} ms`, { captured: got.length })), opts.timeoutMs + this.timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      this.off('enrolCapture', onCapture);
      done.catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    this.detach();
    this.failPending(new BridgeError('BRIDGE_CLOSED', 'bridge link closed while waiting for a reply'));
    await this.transport.close();
    this.setStatus('closed');
  }

  /** A request whose reply is a BridgeAck; a status other than OK is a BRIDGE_NACK. */
  private async command(body: BridgeFrameProps, name: string): Promise<void> {
    const r = await this.request(body, 'ack', name);
    const status = r.ack?.status ?? pb.BridgeStatus.BRIDGE_STATUS_UNSPECIFIED;
    if (status !== pb.BridgeStatus.BRIDGE_STATUS_OK) {
      throw new BridgeError('BRIDGE_NACK', `bridge module refused ${name}: ${pb.BridgeStatus[status] ?? status}${r.ack?.detail ? ` (${r.ack.detail})` : ''}`, { request: name, status: pb.BridgeStatus[status] ?? status });
    }
  }

  private request(body: BridgeFrameProps, expect: Pending['expect'], name: string): Promise<BridgeFrame> {
    return this.queue.run(() => this.exchange(body, expect, name));
  }

  private exchange(body: BridgeFrameProps, expect: Pending['expect'], name: string): Promise<BridgeFrame> {
    if (this._status === 'closed') return Promise.reject(new BridgeError('BRIDGE_CLOSED', `bridge link is CLOSED; cannot send ${name}`, { request: name }));
    if (this._status !== 'ready' && name !== 'hello') return Promise.reject(new BridgeError('BRIDGE_NOT_READY', `bridge link is ${this._status.toUpperCase()}; ${name} needs READY`, { request: name }));
    // seq 0 marks unsolicited frames, so request ids skip it when wrapping.
    this.seq = (this.seq % 0xffffffff) + 1;
    const seq = this.seq;
    const wire = encodeFrame({ ...body, seq }, { maxFrame: this._info?.maxFrame ?? this.maxFrame });
    return new Promise<BridgeFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending?.seq === seq) this.pending = null;
        reject(new BridgeError('BRIDGE_TIMEOUT', `bridge module did not answer ${name} (seq ${seq}) within ${this.timeoutMs} ms`, { request: name, seq, timeoutMs: this.timeoutMs }));
      }, this.timeoutMs);
      this.pending = { seq, expect, name, resolve, reject, timer };
      this.transport.write(wire).catch((err: unknown) => {
        if (this.pending?.seq !== seq) return;
        clearTimeout(timer);
        this.pending = null;
        reject(new BridgeError('BRIDGE_TRANSPORT', `bridge write of ${name} failed: ${(err as Error).message}`, { request: name }, { cause: err }));
      });
    });
  }

  private onFrame(f: BridgeFrame): void {
    if (f.seq !== 0) {
      const p = this.pending;
      if (!p || p.seq !== f.seq) {
        // A reply that arrived after its timeout, or a device bug: drop it.
        this.emit('reject', { reason: 'stale-reply', length: 0 });
        return;
      }
      clearTimeout(p.timer);
      this.pending = null;
      if (f.body === p.expect) return p.resolve(f);
      if (f.body === 'ack' && f.ack?.status !== pb.BridgeStatus.BRIDGE_STATUS_OK) {
        const st = f.ack?.status ?? 0;
        return p.reject(new BridgeError('BRIDGE_NACK', `bridge module refused ${p.name}: ${pb.BridgeStatus[st] ?? st}`, { request: p.name, status: pb.BridgeStatus[st] ?? st }));
      }
      return p.reject(new BridgeError('BRIDGE_UNEXPECTED_REPLY', `bridge module answered ${p.name} with ${f.body ?? 'an empty frame'}, expected ${p.expect}`, { request: p.name, body: f.body ?? null }));
    }
    switch (f.body) {
      case 'faceFeature': {
        const c = this.toCapture(f.faceFeature!);
        if (c) this.emit('face', c);
        return;
      }
      case 'enrolCapture': {
        const e = f.enrolCapture!;
        const feature = e.feature && !e.aborted ? this.toCapture(e.feature) : null;
        if (!e.aborted && !feature) return;
        this.emit('enrolCapture', { index: e.index ?? 0, total: e.total ?? 0, feature, aborted: !!e.aborted });
        return;
      }
      case 'tamper':
        this.emit('tamper', { open: !!f.tamper?.open });
        return;
      case 'keypad':
        this.emit('keypad', { keys: f.keypad?.keys ?? '' });
        return;
      case 'heartbeat':
        this.emit('heartbeat', { uptimeMs: Number(f.heartbeat?.uptimeMs ?? 0) });
        return;
      default:
        this.log?.debug({ body: f.body ?? null }, 'bridge: unsolicited frame ignored');
    }
  }

  /** Check a feature frame and copy the vector into a Float32Array; null (and a reject event) if inconsistent. */
  private toCapture(ff: tallybox.v1.BridgeFaceFeature.$Properties): FaceCapture | null {
    const v = ff.vector ?? [];
    const dim = ff.dim ?? 0;
    const want = this._info?.featureDim || dim;
    let ok = v.length > 0 && v.length === dim && dim === want;
    const vector = new Float32Array(v.length);
    for (let i = 0; ok && i < v.length; i++) {
      const x = v[i]!;
      if (!Number.isFinite(x)) ok = false;
      vector[i] = x;
    }
    const liveness = ff.liveness ?? 0;
    const quality = ff.quality ?? 0;
    if (!ok || !Number.isFinite(liveness) || !Number.isFinite(quality)) {
      this.log?.warn({ dim, length: v.length, expected: want }, 'bridge: inconsistent face feature frame dropped');
      this.emit('reject', { reason: 'feature', length: v.length });
      return null;
    }
    return { vector, quality, liveness, purpose: ff.purpose ?? pb.BridgeCapturePurpose.BRIDGE_CAPTURE_PURPOSE_UNSPECIFIED, captureId: ff.captureId ?? 0 };
  }

  private setStatus(s: BridgeLinkStatus, reason?: Error): void {
    if (s === this._status) return;
    this._status = s;
    this.emit('status', s, reason);
  }

  private linkLost(reason: Error): void {
    this.detach();
    this.failPending(new BridgeError('BRIDGE_CLOSED', `bridge link lost: ${reason.message}`, {}, { cause: reason }));
    this.setStatus('closed', reason);
  }

  private failPending(err: BridgeError): void {
    const p = this.pending;
    if (!p) return;
    clearTimeout(p.timer);
    this.pending = null;
    p.reject(err);
  }

  private detach(): void {
    this.transport.off('data', this.onData);
    this.transport.off('status', this.onTransportStatus);
  }
}
