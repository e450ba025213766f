/**
 * Pure R30x framing: bytes ⇄ packets. No I/O, no timers, so it is tested with
 * byte arrays and shared by the host driver and the simulator (device side).
 *
 * Frame: EF 01 | ADDR(4) | PID(1) | LEN(2) | CONTENT(LEN-2) | SUM(2), big-endian,
 * SUM = PID + LEN hi + LEN lo + Σ content, mod 2^16.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { CHECKSUM_LENGTH, DEFAULT_ADDRESS, DEFAULT_MAX_LEN, HEADER_LENGTH, PID_VALUES } from './constants.js';

export interface Packet {
  addr: number;
  pid: number;
  content: Buffer;
}

export interface PacketInput {
  /** Default FFFFFFFF. */
  addr?: number;
  pid: number;
  content: Uint8Array | readonly number[];
}

export type RejectReason = 'bad-checksum' | 'bad-length' | 'bad-pid';

/** A frame-shaped run of bytes the decoder refused, with why. */
export interface FrameReject {
  reason: RejectReason;
  /** The refused bytes (header only for bad-length/bad-pid, whole frame for bad-checksum). */
  bytes: Buffer;
}

export type DecodedItem = { kind: 'packet'; packet: Packet } | { kind: 'reject'; reject: FrameReject };

export function checksum(pid: number, len: number, content: Uint8Array): number {
  let sum = pid + (len >> 8) + (len & 0xff);
  for (const b of content) sum += b;
  return sum & 0xffff;
}

export function encodePacket(input: PacketInput): Buffer {
  const addr = input.addr ?? DEFAULT_ADDRESS;
  const content = Buffer.from(input.content as Uint8Array);
  if (!Number.isInteger(addr) || addr < 0 || addr > 0xffffffff) throw new RangeError(`address ${addr} is not a 32-bit unsigned integer`);
  if (!PID_VALUES.has(input.pid)) throw new RangeError(`PID 0x${input.pid.toString(16)} is not one of 01, 02, 07, 08`);
  const len = content.length + CHECKSUM_LENGTH;
  if (len > 0xffff) throw new RangeError(`content of ${content.length} bytes does not fit a 16-bit LEN`);
  const out = Buffer.alloc(HEADER_LENGTH + len);
  out.writeUInt16BE(0xef01, 0);
  out.writeUInt32BE(addr, 2);
  out.writeUInt8(input.pid, 6);
  out.writeUInt16BE(len, 7);
  content.copy(out, HEADER_LENGTH);
  out.writeUInt16BE(checksum(input.pid, len, content), HEADER_LENGTH + content.length);
  return out;
}

export interface DecoderStats {
  packets: number;
  rejects: number;
  /** Bytes skipped while looking for EF 01. */
  garbageBytes: number;
}

export interface FrameDecoderOptions {
  /** Largest LEN accepted (default 512); bounds memory and waiting on noise. */
  maxLen?: number;
}

/**
 * Incremental decoder. Buffers at most one frame (HEADER + maxLen bytes): garbage
 * before EF 01 is dropped at once, and a header with an impossible PID or LEN
 * is refused without waiting for its body.
 */
export class R30xFrameDecoder {
  readonly maxLen: number;
  readonly stats: DecoderStats = { packets: 0, rejects: 0, garbageBytes: 0 };
  #buf: Buffer = Buffer.alloc(0);

  constructor(opts: FrameDecoderOptions = {}) {
    this.maxLen = opts.maxLen ?? DEFAULT_MAX_LEN;
  }

  /** Bytes held waiting for the rest of a frame. */
  get pending(): number {
    return this.#buf.length;
  }

  /** Forget a partial frame (the host does this after a timeout). */
  reset(): void {
    this.#buf = Buffer.alloc(0);
  }

  push(chunk: Uint8Array): DecodedItem[] {
    const out: DecodedItem[] = [];
    let buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : Buffer.from(chunk);
    let pos = 0;
    for (;;) {
      const start = findStart(buf, pos);
      if (start < 0) {
        // Keep a trailing EF: it may be the first half of a start code split across chunks.
        const keep = buf.length > pos && buf[buf.length - 1] === 0xef ? 1 : 0;
        this.stats.garbageBytes += buf.length - pos - keep;
        pos = buf.length - keep;
        break;
      }
      this.stats.garbageBytes += start - pos;
      pos = start;
      if (buf.length - pos < HEADER_LENGTH) break;
      const pid = buf[pos + 6] as number;
      const len = buf.readUInt16BE(pos + 7);
      if (!PID_VALUES.has(pid) || len < CHECKSUM_LENGTH + 1 || len > this.maxLen) {
        this.#reject(out, PID_VALUES.has(pid) ? 'bad-length' : 'bad-pid', buf.subarray(pos, pos + HEADER_LENGTH));
        // Skip only the start code: the real frame may begin inside these bytes.
        pos += 2;
        continue;
      }
      const total = HEADER_LENGTH + len;
      if (buf.length - pos < total) break;
      const content = buf.subarray(pos + HEADER_LENGTH, pos + total - CHECKSUM_LENGTH);
      const sum = buf.readUInt16BE(pos + total - CHECKSUM_LENGTH);
      if (sum !== checksum(pid, len, content)) {
        // A dropped byte makes a frame swallow the next frame's first bytes; skipping
        // only EF 01 lets that next frame be found again.
        this.#reject(out, 'bad-checksum', buf.subarray(pos, pos + total));
        pos += 2;
        continue;
      }
      this.stats.packets++;
      out.push({ kind: 'packet', packet: { addr: buf.readUInt32BE(pos + 2), pid, content: Buffer.from(content) } });
      pos += total;
    }
    this.#buf = pos >= buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(pos));
    buf = Buffer.alloc(0);
    return out;
  }

  #reject(out: DecodedItem[], reason: RejectReason, bytes: Buffer): void {
    this.stats.rejects++;
    out.push({ kind: 'reject', reject: { reason, bytes: Buffer.from(bytes) } });
  }
}

function findStart(buf: Buffer, from: number): number {
  let i = buf.indexOf(0xef, from);
  while (i >= 0 && i + 1 < buf.length) {
    if (buf[i + 1] === 0x01) return i;
    i = buf.indexOf(0xef, i + 1);
  }
  // An EF as the very last byte is not a start yet; the caller keeps it.
  return -1;
}

/** Decode exactly one whole frame (tests, tools); throws RangeError naming what is wrong. */
export function decodePacket(bytes: Uint8Array, opts: FrameDecoderOptions = {}): Packet {
  const items = new R30xFrameDecoder(opts).push(bytes);
  const first = items[0];
  if (!first) throw new RangeError(`no complete frame in ${bytes.length} bytes`);
  if (first.kind === 'reject') throw new RangeError(`frame rejected: ${first.reject.reason}`);
  return first.packet;
}

/**
 * Stream form: bytes in, `Packet` objects out. Refused frames never become
 * stream errors (one bad frame must not end the stream); they are emitted as
 * `'error-frame'` events carrying a FrameReject, and parsing carries on.
 */
export class R30xParser extends Transform {
  readonly decoder: R30xFrameDecoder;

  constructor(opts: FrameDecoderOptions = {}) {
    super({ readableObjectMode: true });
    this.decoder = new R30xFrameDecoder(opts);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    for (const item of this.decoder.push(chunk)) {
      if (item.kind === 'packet') this.push(item.packet);
      else this.emit('error-frame', item.reject);
    }
    done();
  }

  /** Drop a partial frame, e.g. after a reply timed out. */
  reset(): void {
    this.decoder.reset();
  }
}
