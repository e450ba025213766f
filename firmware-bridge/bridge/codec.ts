/**
 * Bridge protocol framing: pure functions (bytes <-> frames) and a stream
 * Transform that turns a UART byte stream into decoded BridgeFrames.
 *
 * Wire format (byte by byte in firmware-bridge/README.md):
 *
 *   COBS( version:u8=0x01 | type:u8=0x01 | protobuf BridgeFrame | crc32c:u32le ) 0x00
 *
 * Why COBS: the 0x00 delimiter never appears inside a frame, so a receiver that
 * starts mid-stream or loses bytes resynchronises at the next 0x00 with no
 * length field to trust; overhead is at most 1 byte per 254.
 * Why CRC-32C over CRC-16: feature frames are ~2 KB; a 16-bit check lets one
 * corrupted frame in 65,536 through, and a corrupted feature vector could be
 * matched to the wrong person. CRC-32C (Castagnoli) has a Hamming distance of 4
 * up to 2^31 bits and 6 up to ~5 kbit, and is in hardware on ARMv8 (CRC32C
 * instructions), x86 (SSE4.2) and programmable-polynomial MCU CRC units; a
 * 1 KiB table does it in software elsewhere.
 * Both are hand-written here (a few lines each, tested against the published
 * check values) because the project takes no new runtime dependency for them.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { tallybox } from '../../src/gen/tallybox.js';
import { TallyboxError } from '../../src/util/errors.js';

export const BridgeFrame = tallybox.v1.BridgeFrame;
export type BridgeFrame = tallybox.v1.BridgeFrame;
export type BridgeFrameProps = tallybox.v1.BridgeFrame.$Properties;

/** Framing version (byte 0 of every unstuffed frame). */
export const FRAME_VERSION = 0x01;
/** Payload type (byte 1): a protobuf tallybox.v1.BridgeFrame. Others are reserved. */
export const PAYLOAD_PROTOBUF = 0x01;
/** Bridge protocol versions this code speaks (negotiated by BridgeHello). */
export const PROTOCOL_MIN = 1;
export const PROTOCOL_MAX = 1;
/** Header (version, type) + CRC. */
export const FRAME_OVERHEAD = 2 + 4;
/**
 * Default cap on an unstuffed frame: a 512-float feature frame is ~2.1 KB;
 * 4 KiB leaves room for 1024-dim vectors and stays within a small MCU's RAM.
 */
export const DEFAULT_MAX_FRAME = 4096;

// ---------------------------------------------------------------- CRC-32C

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (Castagnoli): reflected, poly 0x1EDC6F41, init and xorout 0xFFFFFFFF. check("123456789") = 0xE3069283. */
export function crc32c(data: Uint8Array, start = 0, end = data.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC32C_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------- COBS

/** COBS-encode `data` (no trailing delimiter). Output never contains 0x00. */
export function cobsEncode(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length + Math.ceil(data.length / 254) + 1);
  let codeIdx = 0;
  let o = 1;
  let code = 1;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b === 0) {
      out[codeIdx] = code;
      codeIdx = o++;
      code = 1;
    } else {
      out[o++] = b;
      code++;
      if (code === 0xff) {
        out[codeIdx] = code;
        codeIdx = o++;
        code = 1;
      }
    }
  }
  out[codeIdx] = code;
  return out.subarray(0, o);
}

/** COBS-decode one frame (without its delimiter). Returns null if malformed. */
export function cobsDecode(data: Uint8Array): Uint8Array | null {
  const out = new Uint8Array(data.length);
  let o = 0;
  let i = 0;
  while (i < data.length) {
    const code = data[i]!;
    if (code === 0) return null;
    i++;
    const end = i + code - 1;
    if (end > data.length) return null;
    for (; i < end; i++) {
      const b = data[i]!;
      if (b === 0) return null;
      out[o++] = b;
    }
    // A block shorter than 255 implies a zero, unless it is the last block.
    if (code !== 0xff && i < data.length) out[o++] = 0;
  }
  return out.subarray(0, o);
}

// ---------------------------------------------------------------- frames

export type RejectReason = 'cobs' | 'short' | 'crc' | 'version' | 'type' | 'protobuf' | 'oversize';

export class BridgeCodecError extends TallyboxError {
  readonly reason: RejectReason;
  constructor(opts: { reason: RejectReason; message: string; details?: Record<string, unknown> }) {
    super(`BRIDGE_FRAME_${opts.reason.toUpperCase()}`, opts.message, { reason: opts.reason, ...opts.details });
    this.name = 'BridgeCodecError';
    this.reason = opts.reason;
  }
}

/** The unstuffed frame: header + protobuf + CRC. Exposed for tests and the README's worked example. */
export function buildPayload(frame: BridgeFrameProps): Uint8Array {
  const body = BridgeFrame.encode(frame).finish();
  const out = new Uint8Array(2 + body.length + 4);
  out[0] = FRAME_VERSION;
  out[1] = PAYLOAD_PROTOBUF;
  out.set(body, 2);
  const crc = crc32c(out, 0, 2 + body.length);
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(2 + body.length, crc, true);
  return out;
}

/** Encode one frame for the wire: COBS(payload) followed by the 0x00 delimiter. */
export function encodeFrame(frame: BridgeFrameProps, opts: { maxFrame?: number } = {}): Buffer {
  const payload = buildPayload(frame);
  const max = opts.maxFrame ?? DEFAULT_MAX_FRAME;
  if (payload.length > max) {
    throw new BridgeCodecError({ reason: 'oversize', message: `bridge frame of ${payload.length} bytes exceeds maxFrame ${max}`, details: { length: payload.length, maxFrame: max } });
  }
  const stuffed = cobsEncode(payload);
  const wire = Buffer.allocUnsafe(stuffed.length + 1);
  wire.set(stuffed, 0);
  wire[stuffed.length] = 0;
  return wire;
}

/** Check and decode one unstuffed payload. Throws BridgeCodecError naming the reason. */
export function decodePayload(payload: Uint8Array): BridgeFrame {
  if (payload.length < FRAME_OVERHEAD) throw new BridgeCodecError({ reason: 'short', message: `bridge frame of ${payload.length} bytes is shorter than its ${FRAME_OVERHEAD}-byte header and CRC`, details: { length: payload.length } });
  const n = payload.length - 4;
  const got = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(n, true);
  const want = crc32c(payload, 0, n);
  if (got !== want) throw new BridgeCodecError({ reason: 'crc', message: `bridge frame CRC-32C mismatch (got 0x${got.toString(16)}, computed 0x${want.toString(16)})`, details: { length: payload.length } });
  if (payload[0] !== FRAME_VERSION) throw new BridgeCodecError({ reason: 'version', message: `bridge frame version ${payload[0]} is not the supported ${FRAME_VERSION}`, details: { version: payload[0] } });
  if (payload[1] !== PAYLOAD_PROTOBUF) throw new BridgeCodecError({ reason: 'type', message: `bridge payload type ${payload[1]} is not PAYLOAD_PROTOBUF (${PAYLOAD_PROTOBUF})`, details: { type: payload[1] } });
  try {
    return BridgeFrame.decode(payload.subarray(2, n));
  } catch (err) {
    throw new BridgeCodecError({ reason: 'protobuf', message: `bridge frame body is not a valid BridgeFrame: ${(err as Error).message}`, details: { length: payload.length } });
  }
}

/** Decode one wire frame (with or without its trailing 0x00). */
export function decodeFrame(wire: Uint8Array): BridgeFrame {
  const body = wire.length > 0 && wire[wire.length - 1] === 0 ? wire.subarray(0, wire.length - 1) : wire;
  const payload = cobsDecode(body);
  if (!payload) throw new BridgeCodecError({ reason: 'cobs', message: 'bridge frame is not valid COBS', details: { length: body.length } });
  return decodePayload(payload);
}

/** Largest stuffed length for a payload cap: COBS adds one byte per 254 plus one. */
export function maxStuffedLength(maxFrame: number): number {
  return maxFrame + Math.ceil(maxFrame / 254) + 1;
}

export interface RejectEvent {
  reason: RejectReason;
  /** Stuffed length of the dropped frame (bytes); never its content. */
  length: number;
}

export interface BridgeDecoderOptions {
  /** Cap on an unstuffed frame, bytes. Longer input is dropped up to the next delimiter. */
  maxFrame?: number;
}

/**
 * Byte stream in, BridgeFrame objects out. Garbage and corrupt frames are
 * dropped (reported as 'reject' events with the reason, never as stream
 * errors, so one bad frame does not tear the link down); decoding continues
 * at the next 0x00. Chunks may split frames anywhere.
 */
export class BridgeDecoder extends Transform {
  readonly maxFrame: number;
  readonly stats = { frames: 0, rejected: 0 } as { frames: number; rejected: number } & Partial<Record<RejectReason, number>>;
  private buf: Buffer;
  private len = 0;
  /** True while skipping an oversize frame up to its delimiter. */
  private discarding = false;
  private readonly maxStuffed: number;

  constructor(opts: BridgeDecoderOptions = {}) {
    super({ readableObjectMode: true });
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    this.maxStuffed = maxStuffedLength(this.maxFrame);
    this.buf = Buffer.allocUnsafe(Math.min(this.maxStuffed, 1024));
  }

  override _transform(chunk: Buffer | Uint8Array, _enc: BufferEncoding, cb: TransformCallback): void {
    let start = 0;
    while (start < chunk.length) {
      const z = chunk.indexOf(0, start);
      const end = z === -1 ? chunk.length : z;
      if (!this.discarding) this.append(chunk, start, end);
      if (z === -1) break;
      // Delimiter: a complete frame (or the end of a discarded one).
      if (this.discarding) {
        this.discarding = false;
      } else if (this.len > 0) {
        this.finishFrame();
      }
      this.len = 0;
      start = z + 1;
    }
    cb();
  }

  private append(chunk: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (n === 0) return;
    if (this.len + n > this.maxStuffed) {
      this.reject('oversize', this.len + n);
      this.len = 0;
      this.discarding = true;
      return;
    }
    if (this.len + n > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.min(this.maxStuffed, Math.max(this.buf.length * 2, this.len + n)));
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
    }
    this.buf.set(chunk.subarray(start, end), this.len);
    this.len += n;
  }

  private finishFrame(): void {
    const stuffed = this.buf.subarray(0, this.len);
    const payload = cobsDecode(stuffed);
    if (!payload) return this.reject('cobs', this.len);
    if (payload.length > this.maxFrame) return this.reject('oversize', this.len);
    let frame: BridgeFrame;
    try {
      frame = decodePayload(payload);
    } catch (err) {
      return this.reject(err instanceof BridgeCodecError ? err.reason : 'protobuf', this.len);
    }
    this.stats.frames++;
    this.push(frame);
  }

  private reject(reason: RejectReason, length: number): void {
    this.stats.rejected++;
    this.stats[reason] = (this.stats[reason] ?? 0) + 1;
    this.emit('reject', { reason, length } satisfies RejectEvent);
  }

  override _flush(cb: TransformCallback): void {
    // A partial frame at end of stream has no delimiter: it is incomplete, not a frame.
    if (this.len > 0 && !this.discarding) this.reject('short', this.len);
    this.len = 0;
    cb();
  }
}
