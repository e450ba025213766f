/**
 * Content of each instruction's command and ack, both directions, so the host
 * driver and the simulator cannot disagree about a byte offset.
 */
import { INDEX_TABLE_BYTES, Instruction, NOTEPAD_PAGE_BYTES, PAGES_PER_INDEX_TABLE, PROD_INFO_BYTES, type InstructionCode } from './constants.js';

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
  search: (bufferId: number, startPage: number, pageCount: number) => Buffer.from([Instruction.Search, bufferId, ...u16(startPage), ...u16(pageCount)]),
  highSpeedSearch: (bufferId: number, startPage: number, pageCount: number) => Buffer.from([Instruction.HighSpeedSearch, bufferId, ...u16(startPage), ...u16(pageCount)]),
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
  upImage: () => Buffer.from([Instruction.UpImage]),
  downImage: () => Buffer.from([Instruction.DownImage]),
  getRandomCode: () => Buffer.from([Instruction.GetRandomCode]),
  setAdder: (address: number) => Buffer.from([Instruction.SetAdder, ...u32(address)]),
  writeNotepad: (page: number, data: Uint8Array) => {
    const out = Buffer.alloc(2 + NOTEPAD_PAGE_BYTES);
    out[0] = Instruction.WriteNotepad;
    out[1] = page;
    Buffer.from(data).copy(out, 2, 0, NOTEPAD_PAGE_BYTES);
    return out;
  },
  readNotepad: (page: number) => Buffer.from([Instruction.ReadNotepad, page]),
  cancel: () => Buffer.from([Instruction.Cancel]),
  /** page(2), entries(1), flags(2) — see AutoEnrollFlags. */
  autoEnroll: (page: number, entries: number, flags: number) => Buffer.from([Instruction.AutoEnroll, ...u16(page), entries, ...u16(flags)]),
  /** security level(1), page(2) (0xFFFF = the whole library), flags(2). */
  autoIdentify: (securityLevel: number, page: number, flags: number) => Buffer.from([Instruction.AutoIdentify, securityLevel, ...u16(page), ...u16(flags)]),
  checkSensor: () => Buffer.from([Instruction.CheckSensor]),
  readProdInfo: () => Buffer.from([Instruction.ReadProdInfo]),
  softRst: () => Buffer.from([Instruction.SoftRst]),
  handShake: () => Buffer.from([Instruction.HandShake]),
  getEcho: () => Buffer.from([Instruction.GetEcho]),
} as const;

/** AutoEnroll/AutoIdentify flag bits (the parameter word). */
export const AutoFlags = {
  /** bit 2 set: do not send the per-step acks, only the last one. */
  QUIET: 0b100,
  /** bit 3 set: AutoEnroll may overwrite a used page. */
  OVERWRITE: 0b1000,
  /** bit 4 set: AutoEnroll may enrol a finger already in the library. */
  ALLOW_DUPLICATE: 0b10000,
} as const;

/** Step codes in the first payload byte of AutoEnroll/AutoIdentify acks. */
export const AutoStep = {
  LEGALITY: 0x00,
  GET_IMAGE: 0x01,
  GEN_CHAR: 0x02,
  FINGER_LEAVE: 0x03,
  MERGE: 0x04,
  CHECK: 0x05,
  STORE: 0x06,
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
    case Instruction.GetRandomCode:
      return 4;
    case Instruction.ReadNotepad:
      return NOTEPAD_PAGE_BYTES;
    case Instruction.ReadProdInfo:
      return PROD_INFO_BYTES;
    case Instruction.AutoEnroll:
      // step, entry number
      return 2;
    case Instruction.AutoIdentify:
      // step, page(2), score(2)
      return 5;
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
  return Buffer.from([...u16(s.statusRegister), ...u16(s.systemId), ...u16(s.librarySize), ...u16(s.securityLevel), ...u32(s.address), ...u16(s.packetSizeCode), ...u16(s.baudN)]);
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

/** ReadProdInfo's 46 bytes (ASCII fields NUL-padded). */
export interface ProdInfo {
  /** 16 ASCII. */
  moduleType: string;
  /** 4 ASCII. */
  batchNumber: string;
  /** 8 ASCII. */
  serialNumber: string;
  hardwareVersion: { major: number; minor: number };
  /** 8 ASCII. */
  sensorType: string;
  sensorWidth: number;
  sensorHeight: number;
  templateSize: number;
  databaseSize: number;
}

function ascii(out: Buffer, at: number, len: number, text: string): void {
  Buffer.from(text, 'latin1').copy(out, at, 0, len);
}
function unascii(p: Buffer, at: number, len: number): string {
  return p
    .subarray(at, at + len)
    .toString('latin1')
    .replace(/\0+$/, '');
}

export function encodeProdInfo(i: ProdInfo): Buffer {
  const out = Buffer.alloc(PROD_INFO_BYTES);
  ascii(out, 0, 16, i.moduleType);
  ascii(out, 16, 4, i.batchNumber);
  ascii(out, 20, 8, i.serialNumber);
  out[28] = i.hardwareVersion.major;
  out[29] = i.hardwareVersion.minor;
  ascii(out, 30, 8, i.sensorType);
  out.writeUInt16BE(i.sensorWidth, 38);
  out.writeUInt16BE(i.sensorHeight, 40);
  out.writeUInt16BE(i.templateSize, 42);
  out.writeUInt16BE(i.databaseSize, 44);
  return out;
}
export function decodeProdInfo(p: Buffer): ProdInfo {
  return {
    moduleType: unascii(p, 0, 16),
    batchNumber: unascii(p, 16, 4),
    serialNumber: unascii(p, 20, 8),
    hardwareVersion: { major: p[28] as number, minor: p[29] as number },
    sensorType: unascii(p, 30, 8),
    sensorWidth: p.readUInt16BE(38),
    sensorHeight: p.readUInt16BE(40),
    templateSize: p.readUInt16BE(42),
    databaseSize: p.readUInt16BE(44),
  };
}
