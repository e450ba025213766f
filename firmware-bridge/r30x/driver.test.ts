/**
 * Driver behaviour that needs a scripted (mis)behaving device rather than the
 * simulator: link errors, argument checks, stray packets.
 */
import { describe, expect, it } from 'vitest';
import { createMemoryPair } from '../transport/mock.js';
import { decodePacket, encodePacket, type Packet } from './codec.js';
import { Confirmation, Instruction, Pid } from './constants.js';
import { R30xDriver } from './driver.js';
import { R30xError } from './errors.js';
import { TallyboxError } from '../../src/util/errors.js';
import { ackContent } from './messages.js';

async function rig(answer: (cmd: Packet, send: (b: Buffer) => void) => void, timeoutMs = 100) {
  const { host, device } = createMemoryPair();
  await device.open();
  const written: Packet[] = [];
  device.on('data', (chunk) => {
    const p = decodePacket(chunk);
    written.push(p);
    answer(p, (b) => void device.write(b));
  });
  const driver = new R30xDriver({ transport: host, timeoutMs });
  await driver.open();
  return { driver, host, device, written };
}

const ack = (ins: number, conf: number, payload?: Buffer) => encodePacket({ pid: Pid.ACK, content: ackContent(ins, conf, payload) });

describe('R30xDriver', () => {
  it('names the confirmation code in code, number and message; is a TallyboxError', async () => {
    const { driver } = await rig((_p, send) => send(ack(Instruction.Search, Confirmation.NOT_FOUND)));
    const err = await driver.highSpeedSearch(1, 0, 1000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(R30xError);
    expect(err).toBeInstanceOf(TallyboxError);
    expect(err).toMatchObject({ code: 'NOT_FOUND', confirmation: 9, instruction: 'HighSpeedSearch' });
    expect((err as Error).message).toBe('R30x HighSpeedSearch refused: NOT_FOUND (0x09)');
  });

  it('unknown confirmation codes still get a name', async () => {
    const { driver } = await rig((_p, send) => send(ack(Instruction.GenImg, 0x77)));
    await expect(driver.genImg()).rejects.toMatchObject({ code: 'UNKNOWN_0x77', confirmation: 0x77 });
  });

  it('TIMEOUT names the instruction and the wait', async () => {
    const { driver } = await rig(() => undefined, 30);
    await expect(driver.templateNum()).rejects.toMatchObject({ code: 'TIMEOUT', message: 'R30x TemplateNum: TIMEOUT, no reply within 30 ms' });
  });

  it('bad arguments are refused before anything is sent', async () => {
    const { driver, written } = await rig(() => undefined);
    await expect(driver.img2Tz(3 as 1)).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(driver.store(1, 70000)).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(driver.readIndexTable(4)).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(driver.downChar(1, new Uint8Array(0))).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(driver.vfyPwd(-1)).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    expect(written).toEqual([]);
  });

  it('a data packet where an ack belongs is PROTOCOL_ERROR; a short payload too', async () => {
    let n = 0;
    const { driver } = await rig((_p, send) => send(n++ === 0 ? encodePacket({ pid: Pid.END_DATA, content: [0] }) : encodePacket({ pid: Pid.ACK, content: [0, 1] })));
    await expect(driver.genImg()).rejects.toMatchObject({ code: 'PROTOCOL_ERROR' });
    await expect(driver.readSysPara()).rejects.toMatchObject({ code: 'PROTOCOL_ERROR' });
  });

  it('packets for other addresses and packets with nothing in flight are reported, not taken as replies', async () => {
    const { driver, device } = await rig((_p, send) => {
      send(encodePacket({ addr: 0x11111111, pid: Pid.ACK, content: [0, 0, 5] }));
      send(ack(Instruction.TemplateNum, 0, Buffer.from([0, 9])));
    });
    const stray: string[] = [];
    driver.on('unexpected-packet', (_p, why) => stray.push(why));
    expect(await driver.templateNum()).toBe(9);
    await device.write(ack(Instruction.TemplateNum, 0, Buffer.from([0, 1])));
    await new Promise((r) => setTimeout(r, 10));
    expect(stray).toEqual(['address 0x11111111', 'no command in flight']);
  });

  it('DownChar sends data packets of the learned size, last one PID 08, no ack awaited for them', async () => {
    const { driver, written } = await rig((p, send) => {
      if (p.pid !== Pid.COMMAND) return;
      const ins = p.content[0] as number;
      const payload = ins === Instruction.ReadSysPara ? Buffer.from('0000000903E80003FFFFFFFF00010006', 'hex') : undefined;
      send(ack(ins, 0, payload));
    });
    await driver.downChar(2, Buffer.alloc(512, 7));
    expect(driver.packetSize).toBe(64);
    await new Promise((r) => setTimeout(r, 10)); // the memory wire delivers on a later tick
    const data = written.filter((p) => p.pid !== Pid.COMMAND);
    expect(data.map((p) => p.pid)).toEqual([...Array(7).fill(Pid.DATA), Pid.END_DATA]);
    expect(data.every((p) => p.content.length === 64)).toBe(true);
    expect(written.slice(0, 2).map((p) => p.content[0])).toEqual([Instruction.ReadSysPara, Instruction.DownChar]);
  });

  it('UpChar refuses a runaway upload', async () => {
    const { host, device } = createMemoryPair();
    await device.open();
    device.on('data', () => {
      void device.write(ack(Instruction.UpChar, 0));
      for (let i = 0; i < 40; i++) void device.write(encodePacket({ pid: Pid.DATA, content: Buffer.alloc(128) }));
    });
    const driver = new R30xDriver({ transport: host, timeoutMs: 100, maxDataBytes: 1024 });
    await driver.open();
    await expect(driver.upChar(1)).rejects.toMatchObject({ code: 'PROTOCOL_ERROR' });
  });

  it('transport closing mid-command is DISCONNECTED; not open is NOT_OPEN; close() fails the queue with CLOSED', async () => {
    const { driver, host } = await rig(() => void setTimeout(() => void host.close(), 5), 500);
    await expect(driver.templateNum()).rejects.toMatchObject({ code: 'DISCONNECTED' });
    await expect(driver.templateNum()).rejects.toMatchObject({ code: 'NOT_OPEN' });
    await driver.open();
    const pending = [driver.genImg(), driver.genImg()];
    await driver.close();
    for (const p of pending) await expect(p).rejects.toMatchObject({ code: 'CLOSED' });
    await expect(driver.open()).rejects.toMatchObject({ code: 'CLOSED' });
  });
});
