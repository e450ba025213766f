import { describe, expect, it } from 'vitest';
import {
  Command,
  Confirmation,
  Instruction,
  Pid,
  R30xFrameDecoder,
  R30xParser,
  ackContent,
  decodeIndexTable,
  decodePacket,
  decodeSearchPayload,
  decodeSysPara,
  encodeIndexTable,
  encodePacket,
  encodeSearchPayload,
  encodeSysPara,
  splitData,
  type FrameReject,
  type Packet,
} from './index.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const cmd = (content: Buffer) => encodePacket({ pid: Pid.COMMAND, content });
const ack = (instruction: number, confirmation: number, payload?: Buffer) => encodePacket({ pid: Pid.ACK, content: ackContent(instruction, confirmation, payload) });

function feed(chunks: Uint8Array[], maxLen?: number): { packets: Packet[]; rejects: FrameReject[] } {
  const d = new R30xFrameDecoder(maxLen === undefined ? {} : { maxLen });
  const packets: Packet[] = [];
  const rejects: FrameReject[] = [];
  for (const c of chunks) for (const item of d.push(c)) item.kind === 'packet' ? packets.push(item.packet) : rejects.push(item.reject);
  return { packets, rejects };
}

describe('R30x codec: reference worked examples', () => {
  it('GenImg encodes to EF01 FFFFFFFF 01 0003 01 0005', () => {
    expect(cmd(Command.genImg())).toEqual(hex('EF01 FFFFFFFF 01 0003 01 0005'));
  });
  it('"no finger" reply is EF01 FFFFFFFF 07 0003 02 000C and decodes', () => {
    const bytes = ack(Instruction.GenImg, Confirmation.NO_FINGER);
    expect(bytes).toEqual(hex('EF01 FFFFFFFF 07 0003 02 000C'));
    expect(decodePacket(bytes)).toEqual({ addr: 0xffffffff, pid: Pid.ACK, content: Buffer.from([0x02]) });
  });
});

describe('R30x codec: every instruction request, byte for byte', () => {
  const cases: [string, Buffer, string][] = [
    ['VfyPwd 0', Command.vfyPwd(0), '01 0007 13 00000000 001B'],
    ['SetPwd 12345678h', Command.setPwd(0x12345678), '01 0007 12 12345678 012E'],
    ['GenImg', Command.genImg(), '01 0003 01 0005'],
    ['Img2Tz 1', Command.img2Tz(1), '01 0004 02 01 0008'],
    ['Img2Tz 2', Command.img2Tz(2), '01 0004 02 02 0009'],
    ['Match', Command.match(), '01 0003 03 0007'],
    ['Search 1 0..1000', Command.search(1, 0, 1000), '01 0008 04 01 0000 03E8 00F9'],
    ['HighSpeedSearch 1 0..1000', Command.highSpeedSearch(1, 0, 1000), '01 0008 1B 01 0000 03E8 0110'],
    ['RegModel', Command.regModel(), '01 0003 05 0009'],
    ['Store 1 @ 300', Command.store(1, 300), '01 0006 06 01 012C 003B'],
    ['LoadChar 2 @ 7', Command.loadChar(2, 7), '01 0006 07 02 0007 0017'],
    ['UpChar 1', Command.upChar(1), '01 0004 08 01 000E'],
    ['DownChar 2', Command.downChar(2), '01 0004 09 02 0010'],
    ['DeletChar 5 x1', Command.deletChar(5, 1), '01 0007 0C 0005 0001 001A'],
    ['Empty', Command.empty(), '01 0003 0D 0011'],
    ['SetSysPara 6=3', Command.setSysPara(6, 3), '01 0005 0E 06 03 001D'],
    ['ReadSysPara', Command.readSysPara(), '01 0003 0F 0013'],
    ['TemplateNum', Command.templateNum(), '01 0003 1D 0021'],
    ['ReadIndexTable 1', Command.readIndexTable(1), '01 0004 1F 01 0025'],
  ];
  for (const [name, content, tail] of cases) {
    it(name, () => {
      const bytes = cmd(content);
      expect(bytes.toString('hex').toUpperCase()).toBe(('EF01FFFFFFFF' + tail.replace(/\s+/g, '')).toUpperCase());
      expect(decodePacket(bytes)).toEqual({ addr: 0xffffffff, pid: Pid.COMMAND, content });
    });
  }
});

describe('R30x codec: replies and their fixed lengths', () => {
  it('plain ack is 12 bytes for every plain instruction', () => {
    for (const i of [
      Instruction.VfyPwd,
      Instruction.GenImg,
      Instruction.Img2Tz,
      Instruction.RegModel,
      Instruction.Store,
      Instruction.LoadChar,
      Instruction.UpChar,
      Instruction.DownChar,
      Instruction.DeletChar,
      Instruction.Empty,
      Instruction.SetSysPara,
    ]) {
      expect(ack(i, Confirmation.OK)).toHaveLength(12);
    }
    expect(ack(Instruction.VfyPwd, Confirmation.OK)).toEqual(hex('EF01 FFFFFFFF 07 0003 00 000A'));
    expect(ack(Instruction.VfyPwd, Confirmation.WRONG_PASSWORD)).toEqual(hex('EF01 FFFFFFFF 07 0003 13 001D'));
  });
  it('TemplateNum ack is 14 bytes: count', () => {
    const bytes = ack(Instruction.TemplateNum, Confirmation.OK, Buffer.from([0x01, 0x2c]));
    expect(bytes).toEqual(hex('EF01 FFFFFFFF 07 0005 00 012C 0039'));
    expect(decodePacket(bytes).content.readUInt16BE(1)).toBe(300);
  });
  it('Search ack is 16 bytes: page and score, also when NOT_FOUND', () => {
    const found = ack(Instruction.Search, Confirmation.OK, encodeSearchPayload({ page: 3, score: 180 }));
    expect(found).toEqual(hex('EF01 FFFFFFFF 07 0007 00 0003 00B4 00C5'));
    expect(decodeSearchPayload(decodePacket(found).content.subarray(1))).toEqual({ page: 3, score: 180 });
    const missing = ack(Instruction.HighSpeedSearch, Confirmation.NOT_FOUND);
    expect(missing).toEqual(hex('EF01 FFFFFFFF 07 0007 09 0000 0000 0017'));
  });
  it('Match ack is 14 bytes', () => {
    expect(ack(Instruction.Match, Confirmation.NO_MATCH)).toHaveLength(14);
  });
  it('ReadSysPara ack is 28 bytes and round-trips', () => {
    const para = { statusRegister: 0, systemId: 0x0009, librarySize: 1000, securityLevel: 3, address: 0xffffffff, packetSizeCode: 2, baudN: 6 };
    const bytes = ack(Instruction.ReadSysPara, Confirmation.OK, encodeSysPara(para));
    expect(bytes).toHaveLength(28);
    expect(bytes).toEqual(hex('EF01 FFFFFFFF 07 0013 00 0000 0009 03E8 0003 FFFFFFFF 0002 0006 0515'));
    expect(decodeSysPara(decodePacket(bytes).content.subarray(1))).toEqual(para);
  });
  it('ReadIndexTable ack is 44 bytes; bit b of byte i is page 256×t + 8i + b', () => {
    const used = new Set([256, 257, 263, 264, 511]);
    const bitmap = encodeIndexTable(1, (p) => used.has(p));
    expect(bitmap[0]).toBe(0b1000_0011);
    expect(bitmap[1]).toBe(0b0000_0001);
    expect(bitmap[31]).toBe(0b1000_0000);
    const bytes = ack(Instruction.ReadIndexTable, Confirmation.OK, bitmap);
    expect(bytes).toHaveLength(44);
    expect(decodeIndexTable(1, decodePacket(bytes).content.subarray(1))).toEqual([...used]);
  });
  it('data packets: PID 02 then a last PID 08, sized by the packet size', () => {
    const template = Buffer.alloc(512, 0xab);
    const parts = splitData(template, 128);
    expect(parts.map((p) => p.length)).toEqual([128, 128, 128, 128]);
    const frames = parts.map((p, i) => encodePacket({ pid: i === 3 ? Pid.END_DATA : Pid.DATA, content: p }));
    expect(frames[0]!.subarray(0, 9)).toEqual(hex('EF01 FFFFFFFF 02 0082'));
    expect(frames[3]!.subarray(0, 9)).toEqual(hex('EF01 FFFFFFFF 08 0082'));
    const { packets } = feed([Buffer.concat(frames)]);
    expect(Buffer.concat(packets.map((p) => p.content))).toEqual(template);
  });
  it('non-default address is carried', () => {
    const bytes = encodePacket({ addr: 0x12345678, pid: Pid.COMMAND, content: Command.genImg() });
    expect(bytes).toEqual(hex('EF01 12345678 01 0003 01 0005'));
    expect(decodePacket(bytes).addr).toBe(0x12345678);
  });
  it('refuses to encode impossible packets', () => {
    expect(() => encodePacket({ pid: 0x05, content: [1] })).toThrow(RangeError);
    expect(() => encodePacket({ addr: -1, pid: 1, content: [1] })).toThrow(RangeError);
  });
});

describe('R30x stream decoding', () => {
  const genImg = cmd(Command.genImg());
  const noFinger = hex('EF01 FFFFFFFF 07 0003 02 000C');
  const search = ack(Instruction.Search, Confirmation.OK, encodeSearchPayload({ page: 9, score: 99 }));

  it('frames split at every possible byte boundary', () => {
    const all = Buffer.concat([genImg, search]);
    for (let cut = 1; cut < all.length; cut++) {
      const { packets, rejects } = feed([all.subarray(0, cut), all.subarray(cut)]);
      expect(rejects).toEqual([]);
      expect(packets.map((p) => p.pid)).toEqual([Pid.COMMAND, Pid.ACK]);
    }
  });
  it('one byte per chunk', () => {
    const all = Buffer.concat([noFinger, search, noFinger]);
    const { packets } = feed([...all].map((b) => Buffer.from([b])));
    expect(packets).toHaveLength(3);
  });
  it('garbage before the start code is skipped (including lone EF and 01 bytes)', () => {
    const d = new R30xFrameDecoder();
    const items = d.push(Buffer.concat([hex('00 01 EF EF 02 FF 01 EF'), noFinger]));
    expect(items).toEqual([{ kind: 'packet', packet: decodePacket(noFinger) }]);
    expect(d.stats.garbageBytes).toBe(8);
  });
  it('a start code split after garbage', () => {
    const { packets } = feed([hex('1234EF'), Buffer.concat([hex('01'), noFinger.subarray(2)])]);
    expect(packets).toHaveLength(1);
  });
  it('bad checksum then a good frame: rejects one, keeps going', () => {
    const bad = Buffer.from(noFinger);
    bad[11] = (bad[11] as number) ^ 0x01;
    const { packets, rejects } = feed([Buffer.concat([bad, search])]);
    expect(rejects).toEqual([{ reason: 'bad-checksum', bytes: bad }]);
    expect(packets).toEqual([decodePacket(search)]);
  });
  it('a dropped byte: the short frame swallows the next one’s start, which is still found', () => {
    // Drop the confirmation byte: LEN still says 3, so the frame takes the next frame's EF.
    const short = Buffer.concat([noFinger.subarray(0, 9), noFinger.subarray(10)]);
    const { packets, rejects } = feed([short, search]);
    expect(rejects.map((r) => r.reason)).toContain('bad-checksum');
    expect(packets).toEqual([decodePacket(search)]);
  });
  it('LEN above the cap and impossible PIDs are refused from the header alone', () => {
    const huge = hex('EF01 FFFFFFFF 07 FFFF 00');
    const badPid = hex('EF01 FFFFFFFF 05 0003 00 0008');
    const tiny = hex('EF01 FFFFFFFF 07 0001');
    const d = new R30xFrameDecoder({ maxLen: 300 });
    const items = d.push(Buffer.concat([huge, badPid, tiny, noFinger]));
    const rejects = items.filter((i) => i.kind === 'reject').map((i) => (i.kind === 'reject' ? i.reject.reason : ''));
    expect(rejects).toEqual(['bad-length', 'bad-pid', 'bad-length']);
    expect(items.filter((i) => i.kind === 'packet')).toHaveLength(1);
    expect(d.pending).toBe(0);
  });
  it('holds at most one frame of bytes while waiting', () => {
    const d = new R30xFrameDecoder({ maxLen: 300 });
    d.push(hex('EF01 FFFFFFFF 02 012C'));
    for (let i = 0; i < 10; i++) d.push(Buffer.alloc(100, 0x55));
    // The 300-byte frame completed with a bad checksum and everything after it is garbage.
    expect(d.pending).toBeLessThanOrEqual(9 + 300);
    expect(d.stats.rejects).toBe(1);
  });
  it('reset() forgets a partial frame', () => {
    const d = new R30xFrameDecoder();
    d.push(noFinger.subarray(0, 7));
    d.reset();
    expect(d.push(noFinger)).toHaveLength(1);
  });
  it('the Transform emits packets and error-frame events, never stream errors', async () => {
    const parser = new R30xParser();
    const packets: Packet[] = [];
    const rejects: FrameReject[] = [];
    let streamError: unknown = null;
    parser.on('data', (p: Packet) => packets.push(p));
    parser.on('error-frame', (r: FrameReject) => rejects.push(r));
    parser.on('error', (e) => (streamError = e));
    const bad = Buffer.from(search);
    bad[10] = (bad[10] as number) ^ 0xff;
    parser.write(Buffer.concat([hex('DEADBEEF'), bad.subarray(0, 6)]));
    parser.write(Buffer.concat([bad.subarray(6), noFinger.subarray(0, 3)]));
    parser.write(noFinger.subarray(3));
    await new Promise((r) => setImmediate(r));
    expect(streamError).toBeNull();
    expect(rejects).toHaveLength(1);
    expect(packets).toEqual([decodePacket(noFinger)]);
  });
});
