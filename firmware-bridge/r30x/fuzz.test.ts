/**
 * Fuzz: random and mutated frames into the codec and the driver. Properties:
 * no throw, bounded memory, chunking never changes the result, and the driver
 * settles every call (resolve or typed reject) within its timeout.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMemoryPair } from '../transport/mock.js';
import { encodePacket, R30xFrameDecoder, type DecodedItem } from './codec.js';
import { Confirmation, Instruction, Pid } from './constants.js';
import { R30xDriver } from './driver.js';
import { R30xError } from './errors.js';
import { ackContent, encodeSysPara } from './messages.js';

const PIDS = [Pid.COMMAND, Pid.DATA, Pid.ACK, Pid.END_DATA];

const arbPacket = fc.record({
  addr: fc.oneof(fc.constant(0xffffffff), fc.integer({ min: 0, max: 0xffffffff })),
  pid: fc.constantFrom(...PIDS),
  content: fc.uint8Array({ minLength: 1, maxLength: 300 }),
});

/** Valid frames, with some bytes flipped, dropped or inserted, with garbage around. */
const arbStream = fc
  .array(
    fc.oneof(
      arbPacket.map((p) => encodePacket(p)),
      fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
      fc.tuple(arbPacket, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('flip', 'drop', 'insert')).map(([p, at, v, how]) => {
        const f = encodePacket(p);
        const i = at % f.length;
        if (how === 'flip') f[i] = (f[i] as number) ^ (v || 1);
        if (how === 'drop') return Buffer.concat([f.subarray(0, i), f.subarray(i + 1)]);
        if (how === 'insert') return Buffer.concat([f.subarray(0, i), Buffer.from([v]), f.subarray(i)]);
        return f;
      }),
    ),
    { maxLength: 20 },
  )
  .map((parts) => Buffer.concat(parts));

function chunked(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

function run(d: R30xFrameDecoder, chunks: Buffer[]): DecodedItem[] {
  return chunks.flatMap((c) => d.push(c));
}

describe('R30x codec fuzz', () => {
  it('never throws, never holds more than one frame, and chunking does not change the result', () => {
    fc.assert(
      fc.property(arbStream, fc.array(fc.nat(), { maxLength: 12 }), (bytes, cuts) => {
        const whole = new R30xFrameDecoder({ maxLen: 300 });
        const split = new R30xFrameDecoder({ maxLen: 300 });
        const a = run(whole, [bytes]);
        const b = run(split, chunked(bytes, cuts));
        expect(b).toEqual(a);
        expect(split.pending).toBeLessThanOrEqual(9 + 300);
        expect(whole.pending).toBe(split.pending);
      }),
      { numRuns: 400 },
    );
  });

  it('every valid frame survives arbitrary garbage without EF in front of it', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), arbPacket, (garbage, p) => {
        const noise = Buffer.from(garbage.map((b) => (b === 0xef ? 0 : b)));
        const items = new R30xFrameDecoder().push(Buffer.concat([noise, encodePacket(p)]));
        const packets = items.filter((i) => i.kind === 'packet');
        expect(packets).toEqual([{ kind: 'packet', packet: { addr: p.addr, pid: p.pid, content: Buffer.from(p.content) } }]);
      }),
      { numRuns: 300 },
    );
  });
});

describe('R30x driver fuzz', () => {
  it('random and mutated replies: every call settles in bounded time with a value or an R30xError, and a good exchange works after', async () => {
    const timeoutMs = 30;
    const plain = (conf: number) => encodePacket({ pid: Pid.ACK, content: ackContent(Instruction.TemplateNum, conf, Buffer.from([0, 7])) });
    await fc.assert(
      fc.asyncProperty(arbStream, fc.array(fc.nat(), { maxLength: 6 }), fc.constantFrom(0, 1, 2, 5, 0x09, 0x55, 0xff), async (reply, cuts, conf) => {
        const { host, device } = createMemoryPair();
        await host.open();
        await device.open();
        const driver = new R30xDriver({ transport: host, timeoutMs, packetSize: 128 });
        let mode: 'fuzz' | 'good' = 'fuzz';
        device.on('data', () => {
          if (mode === 'good') return void device.write(plain(Confirmation.OK));
          // Answer with the fuzz stream, sometimes followed by a real ack with some confirmation code.
          for (const c of chunked(Buffer.concat([reply, plain(conf)]), cuts)) void device.write(c);
        });
        const started = performance.now();
        const calls = [driver.templateNum(), driver.upChar(1), driver.readSysPara(), driver.highSpeedSearch(1, 0, 1000), driver.readIndexTable(0)];
        const outcomes = await Promise.allSettled(calls);
        for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(R30xError);
        // Each call waits at most one timeout per packet it expects; UpChar may take a few.
        expect(performance.now() - started).toBeLessThan(calls.length * timeoutMs * 6 + 500);
        mode = 'good';
        await new Promise((r) => setTimeout(r, 5));
        expect(await driver.templateNum()).toBe(7);
        await driver.close();
        await device.close();
      }),
      { numRuns: 60 },
    );
  }, 30_000);

  it('a device that floods frames and garbage cannot crash or wedge the driver', async () => {
    const { host, device } = createMemoryPair();
    await host.open();
    await device.open();
    const driver = new R30xDriver({ transport: host, timeoutMs: 40 });
    const sysPara = encodePacket({
      pid: Pid.ACK,
      content: ackContent(Instruction.ReadSysPara, 0, encodeSysPara({ statusRegister: 0, systemId: 9, librarySize: 1000, securityLevel: 3, address: 0xffffffff, packetSizeCode: 2, baudN: 6 })),
    });
    const samples = fc.sample(arbStream, 50);
    const timer = setInterval(() => void device.write(samples[Math.floor(Math.random() * samples.length)] as Buffer), 1);
    try {
      const outcomes = await Promise.allSettled(Array.from({ length: 20 }, () => driver.readSysPara()));
      for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(R30xError);
    } finally {
      clearInterval(timer);
    }
    device.on('data', () => void device.write(sysPara));
    await new Promise((r) => setTimeout(r, 10));
    expect((await driver.readSysPara()).systemId).toBe(9);
    await driver.close();
  });
});
