/**
 * Bounded input before parsing (issue 9 §4). mqtt-packet's parser (under
 * mqtt.js) appends every byte to a buffer list until the whole packet has
 * arrived, and only then does mqtt.js compare it with maximumPacketSize: a
 * 200 MiB PUBLISH is 200 MiB of memory before anything can refuse it.
 *
 * This gate sits between the socket and that parser. It reads only the fixed
 * header (one type byte and at most four length bytes), and for a packet whose
 * total size is over the limit it passes on none of it: the body is counted
 * down and discarded as it streams past, so memory stays bounded by a socket
 * chunk, whatever the peer declares. Pure and synchronous, tested with byte
 * arrays (split headers, a packet exactly at the limit, one byte over).
 */
import { TallyboxError } from '../util/errors.js';

/** What was dropped, for the log (never the content: a payload may be anything). */
export interface DroppedPacket {
  /** MQTT control packet type (3 = PUBLISH). */
  type: number;
  /** Total packet size as declared by its fixed header (header included). */
  bytes: number;
}

/** Names for the log; MQTT control packet types 1-15. */
export const PACKET_TYPES = ['reserved', 'CONNECT', 'CONNACK', 'PUBLISH', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP', 'SUBSCRIBE', 'SUBACK', 'UNSUBSCRIBE', 'UNSUBACK', 'PINGREQ', 'PINGRESP', 'DISCONNECT', 'AUTH'] as const;

export class PacketSizeGate {
  private readonly head: number[] = [];
  /** Body bytes still to pass on (mode 'pass') or to discard (mode 'skip'). */
  private left = 0;
  private mode: 'header' | 'pass' | 'skip' = 'header';
  dropped = 0;

  constructor(
    /** Largest total packet (fixed header + remaining length) let through. */
    readonly maxBytes: number,
    private readonly onDrop: (p: DroppedPacket) => void,
  ) {
    if (!Number.isInteger(maxBytes) || maxBytes < 5) throw new RangeError(`PacketSizeGate: maxBytes ${maxBytes} must be an integer ≥ 5`);
  }

  /**
   * Feed bytes from the socket; returns the pieces to hand to the MQTT parser:
   * slices of `chunk` (one per run of packets that pass, so a chunk of 256
   * PUBACKs is one slice, not 512) and at most one small header buffer per
   * packet whose header was split across chunks; never a copy of a body.
   * Throws MQTT_MALFORMED on a length field longer than four bytes: the
   * stream cannot be resynchronised, so the connection must close.
   */
  feed(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    /** Start in `chunk` of the run of passed bytes being collected (-1: none). */
    let run = -1;
    const flush = (end: number): void => {
      if (run >= 0 && end > run) out.push(chunk.subarray(run, end));
      run = -1;
    };
    let i = 0;
    while (i < chunk.length) {
      if (this.mode === 'header') {
        const start = i;
        // Fast path: the whole fixed header is in this chunk and nothing is pending from the last one.
        if (this.head.length === 0) {
          let k = i + 1;
          let remaining = 0;
          let mul = 1;
          let complete = false;
          for (; k < chunk.length && k <= i + 4; k++) {
            const b = chunk[k]!;
            remaining += (b & 0x7f) * mul;
            mul *= 128;
            if ((b & 0x80) === 0) {
              complete = true;
              break;
            }
          }
          if (complete) {
            const headLen = k + 1 - i;
            const total = headLen + remaining;
            i = k + 1;
            if (total > this.maxBytes) {
              flush(start);
              this.dropped++;
              this.onDrop({ type: chunk[start]! >> 4, bytes: total });
              this.mode = remaining === 0 ? 'header' : 'skip';
            } else {
              if (run < 0) run = start;
              this.mode = remaining === 0 ? 'header' : 'pass';
            }
            this.left = remaining;
            continue;
          }
          if (k === i + 5 && k < chunk.length) throw new TallyboxError('MQTT_MALFORMED', 'incoming MQTT packet has a remaining-length field longer than 4 bytes');
          // The header runs past this chunk: collect it byte by byte below.
          flush(start);
        }
        const b = chunk[i++]!;
        this.head.push(b);
        // head[0] is the type byte; head[1..4] the variable-length remaining length.
        if (this.head.length === 1) continue;
        if (b & 0x80) {
          if (this.head.length === 5) throw new TallyboxError('MQTT_MALFORMED', 'incoming MQTT packet has a remaining-length field longer than 4 bytes');
          continue;
        }
        let remaining = 0;
        for (let k = this.head.length - 1; k >= 1; k--) remaining = remaining * 128 + (this.head[k]! & 0x7f);
        const total = this.head.length + remaining;
        if (total > this.maxBytes) {
          this.dropped++;
          this.onDrop({ type: this.head[0]! >> 4, bytes: total });
          this.mode = 'skip';
        } else {
          out.push(Buffer.from(this.head));
          this.mode = 'pass';
        }
        this.head.length = 0;
        this.left = remaining;
        if (this.left === 0) this.mode = 'header';
        continue;
      }
      const n = Math.min(this.left, chunk.length - i);
      if (this.mode === 'pass') {
        if (run < 0) run = i;
      } else {
        flush(i);
      }
      i += n;
      this.left -= n;
      if (this.left === 0) this.mode = 'header';
    }
    flush(chunk.length);
    return out;
  }
}
