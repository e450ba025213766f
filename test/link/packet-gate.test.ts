/**
 * The packet-size gate as a pure transform over byte arrays (issue 9 §4):
 * packets at the limit pass byte for byte, anything larger passes on none of
 * its bytes, whatever the chunking; a header split across chunks, several
 * packets in one chunk, and a malformed length all behave.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PacketSizeGate, type DroppedPacket } from '../../src/link/packet-gate.js';

/** An MQTT packet: type byte, variable-length remaining length, body. */
function packet(typeByte: number, bodyLength: number, fill = 0xab): Buffer {
  const len: number[] = [];
  let n = bodyLength;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return Buffer.concat([Buffer.from([typeByte, ...len]), Buffer.alloc(bodyLength, fill)]);
}

function run(gate: PacketSizeGate, chunks: Buffer[]): Buffer {
  return Buffer.concat(chunks.flatMap((c) => gate.feed(c)));
}

function split(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(buf.subarray(at, p));
    at = p;
  }
  out.push(buf.subarray(at));
  return out;
}

describe('PacketSizeGate', () => {
  it('passes a packet exactly at the limit and drops one byte over, unread', () => {
    const drops: DroppedPacket[] = [];
    const gate = new PacketSizeGate(1000, (d) => drops.push(d));
    const atLimit = packet(0x30, 1000 - 3); // 1 type byte + 2 length bytes + 997
    const over = packet(0x32, 1000 - 2); // 1001 bytes in all
    const ping = packet(0xd0, 0);
    expect(atLimit.length).toBe(1000);
    expect(over.length).toBe(1001);
    expect(run(gate, [Buffer.concat([atLimit, over, ping])])).toEqual(Buffer.concat([atLimit, ping]));
    expect(drops).toEqual([{ type: 3, bytes: 1001 }]);
    expect(gate.dropped).toBe(1);
  });

  it('any chunking gives the same result (split headers, packets spanning chunks)', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ type: fc.constantFrom(0x30, 0x40, 0x90, 0xd0), len: fc.integer({ min: 0, max: 400 }) }), { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 10 }), (specs, cuts) => {
        const packets = specs.map((s, i) => packet(s.type, s.len, i));
        const stream = Buffer.concat(packets);
        const expected = Buffer.concat(packets.filter((p) => p.length <= 200));
        const gate = new PacketSizeGate(200, () => undefined);
        expect(run(gate, split(stream, cuts))).toEqual(expected);
        expect(gate.dropped).toBe(packets.filter((p) => p.length > 200).length);
      }),
    );
  });

  it('a declared 200 MiB packet costs nothing: its body is never held', () => {
    const gate = new PacketSizeGate(64 * 1024, () => undefined);
    const header = packet(0x30, 200 * 1024 * 1024).subarray(0, 5);
    expect(gate.feed(header)).toEqual([]);
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < 200; i++) expect(gate.feed(chunk)).toEqual([]);
    // The next packet passes again.
    expect(Buffer.concat(gate.feed(packet(0xd0, 0)))).toEqual(Buffer.from([0xd0, 0]));
  });

  it('a remaining-length field longer than 4 bytes is malformed: MQTT_MALFORMED', () => {
    const gate = new PacketSizeGate(1000, () => undefined);
    expect(() => gate.feed(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))).toThrow(expect.objectContaining({ code: 'MQTT_MALFORMED' }));
  });
});
