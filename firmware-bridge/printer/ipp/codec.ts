/**
 * IPP message encoding (RFC 8010 §3): bytes ⇄ { version, operation-id | status-code, request-id, groups }.
 * Pure functions, no I/O, shared by the IPP client (firmware-bridge/printer/ipp/client.ts) and the
 * simulator's IPP server.
 *
 * Why written here instead of taken from npm (checked 2026-12 on the registries' pages and the repos):
 * - `ipp` 2.0.1 (williamkapke/ipp) declares `engines: node <4.0.0`, builds messages with the deprecated
 *   `new Buffer(1024)` and its request function takes the whole message — document included — as one
 *   Buffer (`if(!Buffer.isBuffer(buffer)) … "Data required"`): a print box must stream documents.
 * - `ipp-encoder` 5.0.0 (watson/ipp-encoder) is a sound abstract-encoding codec, but it is unmaintained
 *   (last release years ago), decodes only a complete Buffer (`decode(buf, start, end)`) with no way to
 *   tell "truncated, wait for more" from "malformed", and throws plain Errors on bad input.
 * Neither may be added without the lead, and neither does what we need; the binary format is small and
 * fully specified, so it is written here with a property-based test (random bytes never crash; random
 * attribute sets round-trip). The document itself never passes through this codec: the encoder produces
 * the attribute part only and the transport streams the document after it.
 *
 * Decoding rejects truncated or malformed input with TallyboxError code PRINTER_PROTOCOL and
 * details.reason 'truncated' | 'malformed' (a server reading a stream waits for more bytes on
 * 'truncated'); nothing else is ever thrown.
 */
import { TallyboxError } from '../../../src/util/errors.js';

/** Delimiter (group) tags, RFC 8010 §3.5.1 and the IANA registry. */
export const GROUP_TAGS = {
  operation: 0x01,
  job: 0x02,
  printer: 0x04,
  unsupported: 0x05,
  subscription: 0x06,
  'event-notification': 0x07,
  resource: 0x08,
  document: 0x09,
  system: 0x0a,
} as const;
export type GroupName = keyof typeof GROUP_TAGS;
const END_OF_ATTRIBUTES = 0x03;

/** Value tags this codec knows (RFC 8010 §3.5.2). */
export const VALUE_TAGS = {
  unsupported: 0x10,
  unknown: 0x12,
  'no-value': 0x13,
  'not-settable': 0x15,
  'delete-attribute': 0x16,
  'admin-define': 0x17,
  integer: 0x21,
  boolean: 0x22,
  enum: 0x23,
  octetString: 0x30,
  dateTime: 0x31,
  resolution: 0x32,
  rangeOfInteger: 0x33,
  begCollection: 0x34,
  textWithLanguage: 0x35,
  nameWithLanguage: 0x36,
  endCollection: 0x37,
  text: 0x41,
  name: 0x42,
  keyword: 0x44,
  uri: 0x45,
  uriScheme: 0x46,
  charset: 0x47,
  naturalLanguage: 0x48,
  mimeMediaType: 0x49,
  memberAttrName: 0x4a,
} as const;

export type OutOfBandTag = 'unsupported' | 'unknown' | 'no-value' | 'not-settable' | 'delete-attribute' | 'admin-define';
export type StringTag = 'text' | 'name' | 'keyword' | 'uri' | 'uriScheme' | 'charset' | 'naturalLanguage' | 'mimeMediaType';

export type IppValue =
  | { tag: 'integer' | 'enum'; value: number }
  | { tag: 'boolean'; value: boolean }
  | { tag: StringTag; value: string }
  | { tag: 'textWithLanguage' | 'nameWithLanguage'; value: string; lang: string }
  | { tag: 'rangeOfInteger'; lower: number; upper: number }
  | { tag: 'resolution'; x: number; y: number; units: number }
  /** The 11 bytes of RFC 2579 DateAndTime, kept as bytes (a printer's clock is not ours to interpret). */
  | { tag: 'dateTime'; value: Uint8Array }
  | { tag: 'octetString'; value: Uint8Array }
  | { tag: 'collection'; members: IppAttribute[] }
  | { tag: OutOfBandTag }
  /** A value tag this codec does not know: kept as raw bytes, re-encoded as is. */
  | { tag: 'other'; code: number; value: Uint8Array };

export interface IppAttribute {
  name: string;
  /** One or more values (1setOf: the second and later are "additional values" on the wire). */
  values: IppValue[];
}

export interface IppGroup {
  /** Known group name, or 'other' with the raw delimiter code. */
  tag: GroupName | 'other';
  code: number;
  attributes: IppAttribute[];
}

export interface IppMessage {
  version: { major: number; minor: number };
  /** operation-id in a request, status-code in a response. */
  code: number;
  requestId: number;
  groups: IppGroup[];
}

export interface DecodedMessage {
  message: IppMessage;
  /** Offset of the first byte after end-of-attributes-tag: where the document data begins. */
  dataOffset: number;
}

export type ProtocolFault = 'truncated' | 'malformed';

export function protocolError(reason: ProtocolFault, message: string): TallyboxError {
  return new TallyboxError('PRINTER_PROTOCOL', `IPP ${reason}: ${message}`, { reason });
}

const GROUP_BY_CODE = new Map<number, GroupName>(Object.entries(GROUP_TAGS).map(([k, v]) => [v, k as GroupName]));
const STRING_TAGS = new Map<number, StringTag>([
  [0x41, 'text'],
  [0x42, 'name'],
  [0x44, 'keyword'],
  [0x45, 'uri'],
  [0x46, 'uriScheme'],
  [0x47, 'charset'],
  [0x48, 'naturalLanguage'],
  [0x49, 'mimeMediaType'],
]);
const OOB_TAGS = new Map<number, OutOfBandTag>([
  [0x10, 'unsupported'],
  [0x12, 'unknown'],
  [0x13, 'no-value'],
  [0x15, 'not-settable'],
  [0x16, 'delete-attribute'],
  [0x17, 'admin-define'],
]);
/** Deepest collection nesting accepted (media-col inside media-col-database is 2). */
const MAX_DEPTH = 16;
/** RFC 8010: name-length and value-length are SIGNED-SHORT, so at most 32767. */
const MAX_FIELD = 0x7fff;

// ---------------------------------------------------------------------------------------------
// Decoding

class Reader {
  off: number;
  constructor(
    readonly buf: Buffer,
    start: number,
  ) {
    this.off = start;
  }
  need(n: number, what: string): void {
    if (this.off + n > this.buf.length) throw protocolError('truncated', `${what} needs ${n} bytes at offset ${this.off}, only ${this.buf.length - this.off} left`);
  }
  u8(what: string): number {
    this.need(1, what);
    return this.buf[this.off++]!;
  }
  u16(what: string): number {
    this.need(2, what);
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  bytes(n: number, what: string): Buffer {
    this.need(n, what);
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  peek(): number | undefined {
    return this.buf[this.off];
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
function text(b: Uint8Array, what: string): string {
  try {
    return utf8.decode(b);
  } catch {
    throw protocolError('malformed', `${what} is not UTF-8`);
  }
}

/** One value of the given tag from its value bytes. */
function decodeValue(tag: number, v: Buffer): IppValue {
  const oob = OOB_TAGS.get(tag);
  if (oob) return { tag: oob };
  const str = STRING_TAGS.get(tag);
  if (str) return { tag: str, value: text(v, str) };
  switch (tag) {
    case 0x21:
    case 0x23:
      if (v.length !== 4) throw protocolError('malformed', `${tag === 0x21 ? 'integer' : 'enum'} value of ${v.length} bytes (must be 4)`);
      return { tag: tag === 0x21 ? 'integer' : 'enum', value: v.readInt32BE(0) };
    case 0x22:
      if (v.length !== 1 || v[0]! > 1) throw protocolError('malformed', 'boolean value must be one byte 0 or 1');
      return { tag: 'boolean', value: v[0] === 1 };
    case 0x30:
      return { tag: 'octetString', value: new Uint8Array(v) };
    case 0x31:
      if (v.length !== 11) throw protocolError('malformed', `dateTime value of ${v.length} bytes (must be 11)`);
      return { tag: 'dateTime', value: new Uint8Array(v) };
    case 0x32:
      if (v.length !== 9) throw protocolError('malformed', `resolution value of ${v.length} bytes (must be 9)`);
      return { tag: 'resolution', x: v.readInt32BE(0), y: v.readInt32BE(4), units: v[8]! };
    case 0x33:
      if (v.length !== 8) throw protocolError('malformed', `rangeOfInteger value of ${v.length} bytes (must be 8)`);
      return { tag: 'rangeOfInteger', lower: v.readInt32BE(0), upper: v.readInt32BE(4) };
    case 0x35:
    case 0x36: {
      if (v.length < 4) throw protocolError('malformed', 'textWithLanguage/nameWithLanguage value shorter than its length fields');
      const ll = v.readUInt16BE(0);
      if (2 + ll + 2 > v.length) throw protocolError('malformed', 'language length runs past the value');
      const lang = text(v.subarray(2, 2 + ll), 'language');
      const tl = v.readUInt16BE(2 + ll);
      if (2 + ll + 2 + tl !== v.length) throw protocolError('malformed', 'text length does not match the value length');
      return { tag: tag === 0x35 ? 'textWithLanguage' : 'nameWithLanguage', lang, value: text(v.subarray(4 + ll), 'text') };
    }
    case 0x7f:
      throw protocolError('malformed', 'extension value tag 0x7f is not supported');
    default:
      if (tag < 0x10 || tag > 0xff) throw protocolError('malformed', `tag 0x${tag.toString(16)} is not a value tag`);
      if (tag === 0x37 || tag === 0x4a) throw protocolError('malformed', `tag 0x${tag.toString(16)} outside a collection`);
      return { tag: 'other', code: tag, value: new Uint8Array(v) };
  }
}

/** Reads tag, name and value of one attribute-with-one-value; the tag was peeked, not consumed. */
function readField(r: Reader): { tag: number; name: string; value: Buffer } {
  const tag = r.u8('value-tag');
  const nl = r.u16('name-length');
  const name = text(r.bytes(nl, 'name'), 'attribute name');
  const vl = r.u16('value-length');
  return { tag, name, value: r.bytes(vl, 'value') };
}

/** The members of a collection; the begCollection field was read. Ends after endCollection. */
function readCollection(r: Reader, depth: number): IppValue {
  if (depth > MAX_DEPTH) throw protocolError('malformed', `collections nested deeper than ${MAX_DEPTH}`);
  const members: IppAttribute[] = [];
  let current: IppAttribute | undefined;
  for (;;) {
    const f = readField(r);
    if (f.name !== '') throw protocolError('malformed', 'a field inside a collection has a name');
    if (f.tag === 0x37) return { tag: 'collection', members };
    if (f.tag === 0x4a) {
      const name = text(f.value, 'memberAttrName');
      if (name === '') throw protocolError('malformed', 'empty memberAttrName');
      current = { name, values: [] };
      members.push(current);
      continue;
    }
    if (!current) throw protocolError('malformed', 'collection value before any memberAttrName');
    if (f.tag < 0x10) throw protocolError('malformed', 'delimiter tag inside a collection');
    current.values.push(f.tag === 0x34 ? readCollection(r, depth + 1) : decodeValue(f.tag, f.value));
  }
}

function decodeInner(buf: Buffer, start: number): DecodedMessage {
  const r = new Reader(buf, start);
  const major = r.u8('version-number');
  const minor = r.u8('version-number');
  const code = r.u16('operation-id/status-code');
  r.need(4, 'request-id');
  const requestId = buf.readInt32BE(r.off);
  r.off += 4;
  const groups: IppGroup[] = [];
  let group: IppGroup | undefined;
  let last: IppAttribute | undefined;
  for (;;) {
    const tag = r.peek();
    if (tag === undefined) throw protocolError('truncated', 'no end-of-attributes-tag');
    if (tag <= 0x0f) {
      r.off++;
      if (tag === END_OF_ATTRIBUTES) break;
      if (tag === 0x00) throw protocolError('malformed', 'reserved delimiter tag 0x00');
      group = { tag: GROUP_BY_CODE.get(tag) ?? 'other', code: tag, attributes: [] };
      groups.push(group);
      last = undefined;
      continue;
    }
    if (!group) throw protocolError('malformed', 'attribute before any group tag');
    const f = readField(r);
    const value = f.tag === 0x34 ? readCollection(r, 1) : decodeValue(f.tag, f.value);
    if (f.name === '') {
      if (!last) throw protocolError('malformed', 'additional value without an attribute');
      last.values.push(value);
    } else {
      last = { name: f.name, values: [value] };
      group.attributes.push(last);
    }
  }
  return { message: { version: { major, minor }, code, requestId, groups }, dataOffset: r.off };
}

/**
 * Decode the header and attribute part of an IPP message from `buf` (starting at `start`); the bytes
 * after end-of-attributes-tag (the document) are not looked at. Throws only PRINTER_PROTOCOL.
 */
export function decodeMessage(buf: Uint8Array, start = 0): DecodedMessage {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  try {
    return decodeInner(b, start);
  } catch (err) {
    if (err instanceof TallyboxError && err.code === 'PRINTER_PROTOCOL') throw err;
    // Anything else (a RangeError from a bad offset, say) is still bad input, never a crash.
    throw protocolError('malformed', err instanceof Error ? err.message : String(err));
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding

class Writer {
  private chunks: Buffer[] = [];
  private size = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
  }
  u8(v: number): void {
    this.push(Buffer.of(v & 0xff));
  }
  field(tag: number, name: string, value: Buffer): void {
    const n = Buffer.from(name, 'utf8');
    if (n.length > MAX_FIELD || value.length > MAX_FIELD) throw protocolError('malformed', `attribute ${name} name or value longer than ${MAX_FIELD} bytes`);
    const h = Buffer.alloc(3);
    h[0] = tag;
    h.writeUInt16BE(n.length, 1);
    this.push(h);
    this.push(n);
    const l = Buffer.alloc(2);
    l.writeUInt16BE(value.length, 0);
    this.push(l);
    this.push(value);
  }
  result(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v, 0);
  return b;
}

function withLang(lang: string, value: string): Buffer {
  const l = Buffer.from(lang, 'utf8');
  const t = Buffer.from(value, 'utf8');
  const b = Buffer.alloc(4 + l.length + t.length);
  b.writeUInt16BE(l.length, 0);
  l.copy(b, 2);
  b.writeUInt16BE(t.length, 2 + l.length);
  t.copy(b, 4 + l.length);
  return b;
}

function writeValue(w: Writer, name: string, v: IppValue): void {
  switch (v.tag) {
    case 'integer':
    case 'enum':
      return w.field(VALUE_TAGS[v.tag], name, int32(v.value));
    case 'boolean':
      return w.field(VALUE_TAGS.boolean, name, Buffer.of(v.value ? 1 : 0));
    case 'textWithLanguage':
    case 'nameWithLanguage':
      return w.field(VALUE_TAGS[v.tag], name, withLang(v.lang, v.value));
    case 'rangeOfInteger':
      return w.field(VALUE_TAGS.rangeOfInteger, name, Buffer.concat([int32(v.lower), int32(v.upper)]));
    case 'resolution':
      return w.field(VALUE_TAGS.resolution, name, Buffer.concat([int32(v.x), int32(v.y), Buffer.of(v.units & 0xff)]));
    case 'dateTime':
      if (v.value.length !== 11) throw protocolError('malformed', 'dateTime must be 11 bytes');
      return w.field(VALUE_TAGS.dateTime, name, Buffer.from(v.value));
    case 'octetString':
      return w.field(VALUE_TAGS.octetString, name, Buffer.from(v.value));
    case 'other':
      return w.field(v.code, name, Buffer.from(v.value));
    case 'collection':
      w.field(VALUE_TAGS.begCollection, name, Buffer.alloc(0));
      for (const m of v.members) {
        w.field(VALUE_TAGS.memberAttrName, '', Buffer.from(m.name, 'utf8'));
        for (const mv of m.values) writeValue(w, '', mv);
      }
      return w.field(VALUE_TAGS.endCollection, '', Buffer.alloc(0));
    case 'unsupported':
    case 'unknown':
    case 'no-value':
    case 'not-settable':
    case 'delete-attribute':
    case 'admin-define':
      return w.field(VALUE_TAGS[v.tag], name, Buffer.alloc(0));
    default:
      return w.field(VALUE_TAGS[v.tag], name, Buffer.from(v.value, 'utf8'));
  }
}

/** Encode header + attribute groups + end-of-attributes-tag. The document (if any) follows, streamed by the caller. */
export function encodeMessage(msg: IppMessage): Buffer {
  const w = new Writer();
  const h = Buffer.alloc(8);
  h[0] = msg.version.major;
  h[1] = msg.version.minor;
  h.writeUInt16BE(msg.code, 2);
  h.writeInt32BE(msg.requestId, 4);
  w.push(h);
  for (const g of msg.groups) {
    w.u8(g.code);
    for (const a of g.attributes) {
      if (a.name === '' || a.values.length === 0) throw protocolError('malformed', `attribute ${JSON.stringify(a.name)} needs a name and at least one value`);
      a.values.forEach((v, i) => writeValue(w, i === 0 ? a.name : '', v));
    }
  }
  w.u8(END_OF_ATTRIBUTES);
  return w.result();
}

// ---------------------------------------------------------------------------------------------
// Building and reading helpers

export function group(tag: GroupName, attributes: IppAttribute[]): IppGroup {
  return { tag, code: GROUP_TAGS[tag], attributes };
}

type Scalar<T> = T extends 'integer' | 'enum' ? number : T extends 'boolean' ? boolean : string;
/** attr('copies', 'integer', 2) or attr('document-format-supported', 'mimeMediaType', 'a', 'b'). */
export function attr<T extends 'integer' | 'enum' | 'boolean' | StringTag>(name: string, tag: T, ...values: Scalar<T>[]): IppAttribute {
  return { name, values: values.map((value) => ({ tag, value }) as IppValue) };
}

export function findGroup(msg: IppMessage, tag: GroupName): IppGroup | undefined {
  return msg.groups.find((g) => g.tag === tag);
}

export function findAttr(msg: IppMessage, tag: GroupName, name: string): IppAttribute | undefined {
  for (const g of msg.groups) if (g.tag === tag) for (const a of g.attributes) if (a.name === name) return a;
  return undefined;
}

/** The integer/enum values of an attribute ([] when absent or of another syntax). */
export function ints(a: IppAttribute | undefined): number[] {
  return (a?.values ?? []).flatMap((v) => (v.tag === 'integer' || v.tag === 'enum' ? [v.value] : []));
}

/** The string values of an attribute, any string syntax ([] when absent). */
export function strings(a: IppAttribute | undefined): string[] {
  return (a?.values ?? []).flatMap((v) => ('value' in v && typeof v.value === 'string' ? [v.value] : []));
}

export function bool(a: IppAttribute | undefined): boolean | undefined {
  const v = a?.values[0];
  return v?.tag === 'boolean' ? v.value : undefined;
}
