import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BridgeDecoder, type BridgeFrame, type RejectEvent, buildPayload, cobsDecode, cobsEncode, crc32c, decodeFrame, encodeFrame, maxStuffedLength } from './codec.js';

function feed(chunks: Uint8Array[], opts: { maxFrame?: number } = {}): { frames: BridgeFrame[]; rejects: RejectEvent[] } {
  const d = new BridgeDecoder(opts);
  const frames: BridgeFrame[] = [];
  const rejects: RejectEvent[] = [];
  d.on('data', (f: BridgeFrame) => frames.push(f));
  d.on('reject', (r: RejectEvent) => rejects.push(r));
  for (const c of chunks) d.write(c);
  return { frames, rejects };
}

const face = (seed: number) => ({ seq: 0, faceFeature: { vector: Array.from({ length: 512 }, (_, i) => Math.fround(Math.sin(seed + i))), dim: 512, quality: 0.9, liveness: 0.95, captureId: seed } });

describe('crc32c', () => {
  it('matches the published check value', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa); // iSCSI test vector: 32 zero bytes
  });
});

describe('COBS', () => {
  it('encodes the reference examples', () => {
    const hex = (a: Uint8Array) => Buffer.from(a).toString('hex');
    expect(hex(cobsEncode(Uint8Array.of(0)))).toBe('0101');
    expect(hex(cobsEncode(Uint8Array.of(0, 0)))).toBe('010101');
    expect(hex(cobsEncode(Uint8Array.of(0x11, 0x22, 0, 0x33)))).toBe('0311220233');
    expect(hex(cobsEncode(Uint8Array.of(0x11, 0x22, 0x33, 0x44)))).toBe('0511223344');
    const run254 = Uint8Array.from({ length: 254 }, (_, i) => i + 1);
    expect(cobsEncode(run254)[0]).toBe(0xff);
    expect(cobsEncode(run254).length).toBe(256);
  });
  it('round-trips any bytes and never emits 0x00', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1200 }), (data) => {
        const enc = cobsEncode(data);
        expect(enc.includes(0)).toBe(false);
        expect(enc.length).toBeLessThanOrEqual(maxStuffedLength(data.length));
        expect(Buffer.from(cobsDecode(enc)!).equals(Buffer.from(data))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

describe('frames', () => {
  it('round-trips a feature frame', () => {
    const f = decodeFrame(encodeFrame(face(1)));
    expect(f.body).toBe('faceFeature');
    expect(f.faceFeature!.vector!.length).toBe(512);
    expect(f.faceFeature!.vector![3]).toBe(Math.fround(Math.sin(4)));
  });
  it('the wire frame has exactly one 0x00, at the end', () => {
    const w = encodeFrame({ seq: 7, relay: { energised: true, pulseMs: 3000 } });
    expect(w.indexOf(0)).toBe(w.length - 1);
  });
  it('lays out header, body and CRC as documented', () => {
    const p = buildPayload({ seq: 1, heartbeat: {} });
    // version 1, type 1, protobuf: field 1 varint 1 (08 01), field 12 empty message (62 00), CRC-32C LE
    expect(Buffer.from(p.subarray(0, 6)).toString('hex')).toBe('010108016200');
    expect(new DataView(p.buffer, p.byteOffset).getUint32(6, true)).toBe(crc32c(p, 0, 6));
  });
  it('refuses to encode a frame above maxFrame', () => {
    expect(() => encodeFrame(face(1), { maxFrame: 1000 })).toThrow(/exceeds maxFrame 1000/);
  });
});

describe('BridgeDecoder', () => {
  const frames = [encodeFrame({ seq: 1, hello: { hostProtocolMin: 1, hostProtocolMax: 1 } }), encodeFrame(face(2)), encodeFrame({ seq: 0, tamper: { open: true } })];
  const all = Buffer.concat(frames);

  it('decodes frames split at every possible point', () => {
    for (let cut = 1; cut < all.length; cut += 7) {
      const { frames: out, rejects } = feed([all.subarray(0, cut), all.subarray(cut)]);
      expect(out.map((f) => f.body)).toEqual(['hello', 'faceFeature', 'tamper']);
      expect(rejects).toEqual([]);
    }
  });
  it('decodes byte by byte', () => {
    const { frames: out } = feed(Array.from(all, (b) => Uint8Array.of(b)));
    expect(out.length).toBe(3);
  });
  it('skips garbage before the first delimiter', () => {
    const garbage = Buffer.from('\x13\x37noise on the line\xff\xfe', 'latin1');
    const { frames: out, rejects } = feed([garbage, Uint8Array.of(0), all]);
    expect(out.map((f) => f.body)).toEqual(['hello', 'faceFeature', 'tamper']);
    expect(rejects.length).toBe(1);
  });
  it('resyncs when garbage precedes a frame with no delimiter between', () => {
    // Garbage glued onto the first frame ruins that frame only.
    const { frames: out, rejects } = feed([Buffer.from([0x42, 0x17, 0x99]), all]);
    expect(out.map((f) => f.body)).toEqual(['faceFeature', 'tamper']);
    expect(rejects.length).toBe(1);
  });
  it('rejects a bad CRC and decodes the next good frame', () => {
    const bad = Buffer.from(frames[1]!);
    bad[100] = bad[100] === 0x55 ? 0x56 : 0x55;
    const { frames: out, rejects } = feed([bad, frames[2]!]);
    expect(out.map((f) => f.body)).toEqual(['tamper']);
    expect(rejects).toEqual([{ reason: 'crc', length: bad.length - 1 }]);
  });
  it('rejects a frame with an unknown version after a valid CRC', () => {
    const p = buildPayload({ seq: 1, heartbeat: {} });
    p[0] = 2;
    new DataView(p.buffer, p.byteOffset).setUint32(p.length - 4, crc32c(p, 0, p.length - 4), true);
    const { rejects } = feed([Buffer.concat([cobsEncode(p), Buffer.of(0)])]);
    expect(rejects[0]?.reason).toBe('version');
  });
  it('caps frame size and recovers at the next delimiter', () => {
    const big = encodeFrame(face(3));
    const { frames: out, rejects } = feed([big, frames[2]!], { maxFrame: 1024 });
    expect(rejects[0]?.reason).toBe('oversize');
    expect(out.map((f) => f.body)).toEqual(['tamper']);
    // Endless bytes without a delimiter never grow the buffer past the cap.
    const d = new BridgeDecoder({ maxFrame: 256 });
    for (let i = 0; i < 100; i++) d.write(Buffer.alloc(1000, 0x41));
    d.write(frames[2]!);
    expect(d.stats.oversize).toBe(1);
    expect(d.stats.frames).toBe(0); // the tamper frame was glued to the oversize run
    d.write(frames[2]!);
    expect(d.stats.frames).toBe(1);
  });
  it('ignores empty frames (consecutive delimiters)', () => {
    const { frames: out, rejects } = feed([Buffer.of(0, 0, 0), frames[2]!, Buffer.of(0)]);
    expect(out.length).toBe(1);
    expect(rejects).toEqual([]);
  });

  it('fuzz: random bytes and mangled frames never throw, hang or lose later good frames', () => {
    const good = encodeFrame({ seq: 9, ack: { status: 1 } });
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.uint8Array({ maxLength: 300 }),
            fc.constantFrom(...frames).map((f) => Buffer.from(f)),
            fc.tuple(fc.constantFrom(...frames), fc.nat(), fc.integer({ min: 1, max: 255 })).map(([f, i, x]) => {
              const b = Buffer.from(f);
              const at = i % b.length;
              b[at] = b[at]! ^ x;
              return b;
            }),
          ),
          { maxLength: 20 },
        ),
        fc.integer({ min: 1, max: 64 }),
        (parts, chunk) => {
          const stream = Buffer.concat([...parts, Buffer.of(0), good]);
          const chunks: Buffer[] = [];
          for (let i = 0; i < stream.length; i += chunk) chunks.push(stream.subarray(i, i + chunk));
          const { frames: out } = feed(chunks, { maxFrame: 4096 });
          const last = out[out.length - 1];
          expect(last?.body).toBe('ack');
          expect(last?.seq).toBe(9);
        },
      ),
      { numRuns: 400 },
    );
  });
});
