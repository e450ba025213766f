/**
 * Device side of the bridge protocol, the half a module firmware implements:
 * decode host requests, answer with the same seq, send unsolicited events with
 * seq 0. The face simulator is built on this, so host and simulator share one codec.
 */
import { EventEmitter } from 'node:events';
import type { ByteTransport } from '../transport/types.js';
import { BridgeDecoder, DEFAULT_MAX_FRAME, encodeFrame, type BridgeFrame, type BridgeFrameProps, type RejectEvent } from './codec.js';

export interface BridgeDeviceEvents {
  /** A host request; answer it with reply(frame.seq, ...). */
  request: [frame: BridgeFrame];
  reject: [event: RejectEvent];
}

export interface BridgeDeviceOptions {
  transport: ByteTransport;
  maxFrame?: number;
}

export class BridgeDevice extends EventEmitter<BridgeDeviceEvents> {
  readonly transport: ByteTransport;
  readonly decoder: BridgeDecoder;
  private readonly maxFrame: number;

  constructor(opts: BridgeDeviceOptions) {
    super();
    this.transport = opts.transport;
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    this.decoder = new BridgeDecoder({ maxFrame: this.maxFrame });
    this.decoder.on('data', (f: BridgeFrame) => this.emit('request', f));
    this.decoder.on('reject', (e: RejectEvent) => this.emit('reject', e));
    this.transport.on('data', (chunk) => this.decoder.write(chunk));
  }

  /** Answer request `seq`. */
  reply(seq: number, body: Omit<BridgeFrameProps, 'seq'>): Promise<void> {
    return this.transport.write(encodeFrame({ ...body, seq }, { maxFrame: this.maxFrame }));
  }

  /** Send an unsolicited event (seq 0). */
  send(body: Omit<BridgeFrameProps, 'seq'>): Promise<void> {
    return this.transport.write(encodeFrame({ ...body, seq: 0 }, { maxFrame: this.maxFrame }));
  }
}
