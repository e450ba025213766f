/**
 * The datasheet instructions beyond the identification path, byte for byte,
 * written once and run over a real pty and a memory transport (datasheet-*.test.ts).
 * The host here is a raw byte client (encodePacket + the frame decoder), not
 * R30xDriver: these tests are about what the module puts on the wire.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { R30xFrameDecoder, encodePacket, type Packet } from '../../firmware-bridge/r30x/codec.js';
import { HANDSHAKE_BYTE, IMAGE_SIZE, Pid } from '../../firmware-bridge/r30x/constants.js';
import { AutoFlags, AutoStep, Command, decodeProdInfo, decodeSysPara } from '../../firmware-bridge/r30x/messages.js';
import type { ByteTransport } from '../../firmware-bridge/transport/types.js';
import type { FingerprintSimulator } from '../../simulators/fingerprint/simulator.js';
import { fingerMean, MATCH_THRESHOLD } from '../../simulators/fingerprint/templates.js';

export interface DatasheetRig {
  /** Host end, already open. */
  host: ByteTransport;
  sim: FingerprintSimulator;
  close(): Promise<void>;
}
export type DatasheetFactory = (opts: { seed?: string }) => Promise<DatasheetRig>;

/** Raw host: sends command packets, collects every byte and every decoded packet. */
export class RawHost {
  readonly raw: number[] = [];
  readonly packets: Packet[] = [];
  readonly #decoder = new R30xFrameDecoder();
  #wake: (() => void) | null = null;
  constructor(readonly transport: ByteTransport) {
    transport.on('data', (chunk: Buffer) => {
      this.raw.push(...chunk);
      for (const item of this.#decoder.push(chunk)) if (item.kind === 'packet') this.packets.push(item.packet);
      this.#wake?.();
    });
  }
  async send(content: Uint8Array, addr = 0xffffffff, pid: number = Pid.COMMAND): Promise<void> {
    await this.transport.write(encodePacket({ addr, pid, content }));
  }
  /** Wait until `n` packets are queued (or fail after `ms`), then take them. */
  async take(n: number, ms = 2000): Promise<Packet[]> {
    const deadline = performance.now() + ms;
    while (this.packets.length < n) {
      if (performance.now() > deadline) throw new Error(`wanted ${n} packets, have ${this.packets.length}`);
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 10);
      });
    }
    return this.packets.splice(0, n);
  }
  async exchange(content: Uint8Array, replies = 1, addr?: number): Promise<Packet[]> {
    this.packets.length = 0;
    this.raw.length = 0;
    await this.send(content, addr);
    return this.take(replies);
  }
  /** The single ack's content (confirmation + payload). */
  async ack(content: Uint8Array, addr?: number): Promise<Buffer> {
    const [p] = await this.exchange(content, 1, addr);
    expect(p!.pid).toBe(Pid.ACK);
    return p!.content;
  }
  /** The exact bytes the module put on the wire for the last exchange. */
  wire(): Buffer {
    return Buffer.from(this.raw);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

export function datasheetSuite(name: string, factory: DatasheetFactory): void {
  describe(`R30x datasheet instructions over ${name}`, () => {
    let rig: DatasheetRig;
    let host: RawHost;
    let sim: FingerprintSimulator;
    beforeEach(async () => {
      rig = await factory({});
      sim = rig.sim;
      host = new RawHost(rig.host);
    });
    afterEach(async () => {
      await rig?.close();
    });

    it('HandShake (0x40) acks 00 byte for byte; GetEcho (0x53) answers 55; an unknown code answers 01, not OK', async () => {
      await host.ack(Command.handShake());
      expect(hex(host.wire())).toBe('ef01ffffffff07000300000a');
      expect([...(await host.ack(Command.getEcho()))]).toEqual([0x55]);
      for (const code of [0x7e, 0x20, 0x41]) {
        await host.ack(Buffer.from([code]));
        // 01 = "error when receiving package", the family's answer to an instruction it does not have.
        expect(hex(host.wire())).toBe('ef01ffffffff07000301000b');
      }
    });

    it('the 0x55 handshake byte after power-up (replug) and after SoftRst; SoftRst loses the image and char buffers', async () => {
      host.raw.length = 0;
      await sim.unplug('silent');
      await sim.replug();
      await sleep(50);
      expect(host.raw).toEqual([HANDSHAKE_BYTE]);

      sim.device.placeFinger({ person: 'ana', finger: 1 });
      await host.ack(Command.genImg());
      await host.exchange(Command.softRst());
      await sleep(50);
      // Ack (OK) first, then the raw 0x55 outside any frame.
      expect(hex(host.wire())).toBe('ef01ffffffff07000300000a55');
      // The image buffer did not survive the reset: Img2Tz finds no valid image.
      expect((await host.ack(Command.img2Tz(1)))[0]).toBe(0x15);
    });

    it('GenImg with no finger leaves no usable image: Img2Tz after it fails (0x15)', async () => {
      sim.device.placeFinger({ person: 'bo', finger: 2 });
      expect((await host.ack(Command.genImg()))[0]).toBe(0x00);
      sim.device.liftFinger();
      expect((await host.ack(Command.genImg()))[0]).toBe(0x02);
      expect((await host.ack(Command.img2Tz(1)))[0]).toBe(0x15);
    });

    it('CheckSensor 00, or 29 with a broken sensor (GenImg then 03)', async () => {
      expect(hex(await host.ack(Command.checkSensor()))).toBe('00');
      sim.device.setSensorFault(true);
      expect(hex(await host.ack(Command.checkSensor()))).toBe('29');
      sim.device.placeFinger({ person: 'ana', finger: 1 });
      expect(hex(await host.ack(Command.genImg()))).toBe('03');
    });

    it('GetRandomCode: a 16-byte ack with 4 bytes, different each call', async () => {
      const a = await host.ack(Command.getRandomCode());
      expect(host.wire()).toHaveLength(16);
      expect(a[0]).toBe(0);
      const b = await host.ack(Command.getRandomCode());
      expect(hex(a.subarray(1))).not.toBe(hex(b.subarray(1)));
    });

    it('SetAdder: the ack comes from the new address, frames to the old one are ignored, ReadSysPara reports it', async () => {
      const [ack] = await host.exchange(Command.setAdder(0x12345678));
      expect(ack).toMatchObject({ addr: 0x12345678, pid: Pid.ACK });
      expect(hex(host.wire())).toBe('ef011234567807000300000a');
      host.packets.length = 0;
      await host.send(Command.templateNum());
      await sleep(150);
      expect(host.packets).toHaveLength(0);
      const para = decodeSysPara((await host.ack(Command.readSysPara(), 0x12345678)).subarray(1));
      expect(para.address).toBe(0x12345678);
      expect(sim.state().address).toBe('12345678');
    });

    it('notepad: 16 pages × 32 bytes, written and read back (44-byte ack); page 16 is 1C', async () => {
      const data = Buffer.from(Array.from({ length: 32 }, (_, i) => i * 7));
      expect(hex(await host.ack(Command.writeNotepad(15, data)))).toBe('00');
      const read = await host.ack(Command.readNotepad(15));
      expect(host.wire()).toHaveLength(44);
      expect(hex(read)).toBe('00' + hex(data));
      expect(hex((await host.ack(Command.readNotepad(0))).subarray(1))).toBe('00'.repeat(32));
      expect(hex((await host.ack(Command.readNotepad(16))).subarray(0, 1))).toBe('1c');
      expect(hex(await host.ack(Command.writeNotepad(16, data)))).toBe('1c');
      // Flash: survives a power cycle.
      await sim.unplug('silent');
      await sim.replug();
      expect(hex((await host.ack(Command.readNotepad(15))).subarray(1))).toBe(hex(data));
    });

    it('ReadProdInfo: 58 bytes, 46 of product information', async () => {
      const info = await host.ack(Command.readProdInfo());
      expect(host.wire()).toHaveLength(58);
      expect(decodeProdInfo(info.subarray(1))).toMatchObject({ moduleType: 'TALLYBOX-SIM', sensorWidth: 256, sensorHeight: 288, templateSize: 512, databaseSize: 1000 });
    });

    it('Cancel acks 00', async () => {
      expect(hex(await host.ack(Command.cancel()))).toBe('00');
    });

    it('UpImage: ack then 288 data packets of 128 bytes (02 …, last 08); DownImage of that image identifies the same finger', async () => {
      expect(hex(await host.ack(Command.upImage()))).toBe('0f'); // no image yet
      sim.device.enrolDirect(4, { person: 'chen', finger: 3 });
      sim.device.placeFinger({ person: 'chen', finger: 3 });
      await host.ack(Command.genImg());
      const packets = await host.exchange(Command.upImage(), 1 + IMAGE_SIZE / 128, undefined);
      expect(packets[0]).toMatchObject({ pid: Pid.ACK, content: Buffer.from([0]) });
      const data = packets.slice(1);
      expect(data.every((p) => p.content.length === 128)).toBe(true);
      expect(data.slice(0, -1).every((p) => p.pid === Pid.DATA)).toBe(true);
      expect(data.at(-1)!.pid).toBe(Pid.END_DATA);
      const image = Buffer.concat(data.map((p) => p.content));
      expect(image).toHaveLength(IMAGE_SIZE);

      sim.device.liftFinger();
      await host.ack(Command.genImg()); // no finger: the image buffer is empty now
      expect(hex(await host.ack(Command.downImage()))).toBe('00');
      const parts: Buffer[] = [];
      for (let off = 0; off < image.length; off += 128) parts.push(image.subarray(off, off + 128));
      for (let i = 0; i < parts.length; i++) await host.send(parts[i]!, 0xffffffff, i === parts.length - 1 ? Pid.END_DATA : Pid.DATA);
      await sleep(20);
      expect(hex(await host.ack(Command.img2Tz(1)))).toBe('00');
      const hit = await host.ack(Command.search(1, 0, 1000));
      expect(hit.readUInt16BE(1)).toBe(4);
      expect(sim.state().instructions).toMatchObject({ UpImage: 2, DownImage: 1 });
    });

    it('AutoEnroll: one ack per step (legality, image/feature/leave per entry, merge, check, store); AutoIdentify finds the page', async () => {
      sim.device.placeFinger({ person: 'dev', finger: 0 });
      const acks = await host.exchange(Command.autoEnroll(7, 2, 0), 1 + 3 + 2 + 3);
      const steps = acks.map((p) => hex(p.content));
      expect(steps).toEqual(['000000', '000101', '000201', '000301', '000102', '000202', '0004f0', '0005f1', '0006f2']);
      expect(sim.device.pages()).toEqual([7]);
      // The page is used: without OVERWRITE the legality check refuses (22); the same finger elsewhere is a duplicate (27).
      expect((await host.exchange(Command.autoEnroll(7, 2, AutoFlags.QUIET), 1)).map((p) => hex(p.content))).toEqual(['220000']);
      expect((await host.exchange(Command.autoEnroll(8, 2, AutoFlags.QUIET), 1)).map((p) => hex(p.content))).toEqual(['2705f1']);
      sim.device.liftFinger();
      expect((await host.exchange(Command.autoEnroll(9, 1, AutoFlags.QUIET), 1)).map((p) => hex(p.content))).toEqual(['260101']);

      sim.device.placeFinger({ person: 'dev', finger: 0 });
      const id = await host.exchange(Command.autoIdentify(3, 0xffff, 0), 3);
      expect(id.map((p) => p.content[1])).toEqual([AutoStep.LEGALITY, AutoStep.GET_IMAGE, AutoStep.CHECK]);
      const last = id[2]!.content;
      expect(last[0]).toBe(0);
      expect(last.readUInt16BE(2)).toBe(7);
      expect(last.readUInt16BE(4)).toBeGreaterThanOrEqual(MATCH_THRESHOLD);
      sim.device.placeFinger({ person: 'stranger', finger: 0 });
      expect((await host.exchange(Command.autoIdentify(3, 0xffff, AutoFlags.QUIET), 1)).map((p) => hex(p.content))).toEqual(['090500000000']);
    });

    it('match scores vary around a per-finger mean (never a constant), always at or above the threshold for the right finger', async () => {
      sim.device.enrolDirect(0, { person: 'erin', finger: 4 });
      const scores: number[] = [];
      for (let i = 0; i < 20; i++) {
        sim.device.placeFinger({ person: 'erin', finger: 4 });
        await host.ack(Command.genImg());
        await host.ack(Command.img2Tz(1));
        const hit = await host.ack(Command.highSpeedSearch(1, 0, 1000));
        expect(hit[0]).toBe(0);
        scores.push(hit.readUInt16BE(3));
      }
      expect(new Set(scores).size).toBeGreaterThan(5);
      expect(Math.min(...scores)).toBeGreaterThanOrEqual(MATCH_THRESHOLD);
      const mean = scores.reduce((a, b) => a + b, 0) / scores.length;
      expect(Math.abs(mean - fingerMean(sim.device.getPage(0)!))).toBeLessThan(15);
    });

    it('SetSysPara of the baud rate: ReadSysPara reports it (N), and the module paces at it', async () => {
      expect(decodeSysPara((await host.ack(Command.readSysPara())).subarray(1)).baudN).toBe(6);
      expect(sim.device.baudRate).toBe(57600);
      expect(hex(await host.ack(Command.setSysPara(4, 12)))).toBe('00');
      expect(decodeSysPara((await host.ack(Command.readSysPara())).subarray(1)).baudN).toBe(12);
      expect(sim.state()).toMatchObject({ baudRate: 115200 });
      expect(hex(await host.ack(Command.setSysPara(4, 13)))).toBe('1a');
    });
  });
}
