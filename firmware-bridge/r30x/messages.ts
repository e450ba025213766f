/**
 * Content of each instruction's command and ack, both directions, so the host
 * driver and the simulator cannot disagree about a byte offset.
 */
import { INDEX_TABLE_BYTES, Instruction, PAGES_PER_INDEX_TABLE, type InstructionCode } from './constants.js';

function u16(n: number): [number, number] {
  return [(n >> 8) & 0xff, n & 0xff];
}
function u32(n: number): [number, number, number, number] {
  return [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

/** Command content builders (first byte = instruction code). */
export const Command = {
  vfyPwd: (password: number) => Buffer.from([Instruction.VfyPwd, ...u32(password)]),
  setPwd: (password: number) => Buffer.from([Instruction.SetPwd, ...u32(password)]),
  genImg: () => Buffer.from([Instruction.GenImg]),
  img2Tz: (bufferId: number) => Buffer.from([Instruction.Img2Tz, bufferId]),
  match: () => Buffer.from([Instruction.Match]),
  search: (bufferId: number, startPage: number, pageCount: number) =>
    Buffer.from([Instruction.Search, bufferId, ...u16(startPage), ...u16(pageCount)]),
  highSpeedSearch: (bufferId: number, startPage: number, pageCount: number) =>
    Buffer.from([Instruction.HighSpeedSearch, bufferId, ...u16(startPage), ...u16(pageCount)]),
  regModel: () => Buffer.from([Instruction.RegModel]),
  store: (bufferId: number, page: number) => Buffer.from([Instruction.Store, bufferId, ...u16(page)]),
  loadChar: (bufferId: number, page: number) => Buffer.from([Instruction.LoadChar, bufferId, ...u16(page)]),
  upChar: (bufferId: number) => Buffer.from([Instruction.UpChar, bufferId]),
  downChar: (bufferId: number) => Buffer.from([Instruction.DownChar, bufferId]),
  deletChar: (page: number, count: number) => Buffer.from([Instruction.DeletChar, ...u16(page), ...u16(count)]),
  empty: () => Buffer.from([Instruction.Empty]),
  setSysPara: (parameter: number, value: number) => Buffer.from([Instruction.SetSysPara, parameter, value]),
  readSysPara: () => Buffer.from([Instruction.ReadSysPara]),
  templateNum: () => Buffer.from([Instruction.TemplateNum]),
  readIndexTable: (indexPage: number) => Buffer.from([Instruction.ReadIndexTable, indexPage]),
} as const;

/**
 * Bytes after the confirmation code in an ack, per instruction. The module
 * always sends this many, even with an error code: the CircuitPython client
 * reads fixed lengths (12 plain, 14 TemplateNum, 16 Search, 28 ReadSysPara,
 * 44 ReadIndexTable) whatever the outcome.
 */
export function ackPayloadLength(instruction: number): number {
  switch (instruction as InstructionCode) {
    case Instruction.Search:
    case Instruction.HighSpeedSearch:
      return 4;
    case Instruction.Match:
    case Instruction.TemplateNum:
      return 2;
    case Instruction.ReadSysPara:
      return 16;
    case Instruction.ReadIndexTable:
      return INDEX_TABLE_BYTES;
    default:
      return 0;
  }
}

/** Ack content: confirmation code then the payload, zero-padded to the fixed length. */
export function ackContent(instruction: number, confirmation: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(1 + ackPayloadLength(instruction));
  out[0] = confirmation;
  Buffer.from(payload).copy(out, 1, 0, out.length - 1);
  return out;
}

export interface SearchResult {
  page: number;
  score: number;
}

export function encodeSearchPayload(r: SearchResult): Buffer {
  return Buffer.from([...u16(r.page), ...u16(r.score)]);
}
export function decodeSearchPayload(p: Buffer): SearchResult {
  return { page: p.readUInt16BE(0), score: p.readUInt16BE(2) };
}

/** ReadSysPara's 16 bytes. */
export interface SysPara {
  statusRegister: number;
  /** 0x0009 on this family. */
  systemId: number;
  librarySize: number;
  securityLevel: number;
  address: number;
  /** 0..3 → 32/64/128/256 bytes per data packet. */
  packetSizeCode: number;
  /** Baud rate = 9600 × baudN. */
  baudN: number;
}

export function encodeSysPara(s: SysPara): Buffer {
  return Buffer.from([
    ...u16(s.statusRegister),
    ...u16(s.systemId),
    ...u16(s.librarySize),
    ...u16(s.securityLevel),
    ...u32(s.address),
    ...u16(s.packetSizeCode),
    ...u16(s.baudN),
  ]);
}
export function decodeSysPara(p: Buffer): SysPara {
  return {
    statusRegister: p.readUInt16BE(0),
    systemId: p.readUInt16BE(2),
    librarySize: p.readUInt16BE(4),
    securityLevel: p.readUInt16BE(6),
    address: p.readUInt32BE(8),
    packetSizeCode: p.readUInt16BE(12),
    baudN: p.readUInt16BE(14),
  };
}

/** Bitmap of index page `indexPage`: byte i bit b ↔ library page indexPage×256 + i×8 + b. */
export function encodeIndexTable(indexPage: number, used: (page: number) => boolean): Buffer {
  const out = Buffer.alloc(INDEX_TABLE_BYTES);
  for (let i = 0; i < INDEX_TABLE_BYTES; i++) {
    let byte = 0;
    for (let b = 0; b < 8; b++) if (used(indexPage * PAGES_PER_INDEX_TABLE + i * 8 + b)) byte |= 1 << b;
    out[i] = byte;
  }
  return out;
}
export function decodeIndexTable(indexPage: number, bitmap: Uint8Array): number[] {
  const pages: number[] = [];
  for (let i = 0; i < Math.min(bitmap.length, INDEX_TABLE_BYTES); i++) {
    const byte = bitmap[i] as number;
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) pages.push(indexPage * PAGES_PER_INDEX_TABLE + i * 8 + b);
  }
  return pages;
}

/** Split a payload into data packets of `packetSize` bytes: all PID 02 but the last, PID 08. */
export function splitData(data: Uint8Array, packetSize: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < data.length || out.length === 0; off += packetSize) {
    out.push(Buffer.from(data.subarray(off, Math.min(off + packetSize, data.length))));
    if (data.length === 0) break;
  }
  return out;
}
