/**
 * The module side of R30x: a pure state machine from a command packet to the
 * frames the module sends back. No I/O and no timers (link.ts does those), so
 * it is unit-testable and reusable over any transport.
 *
 * Faithfulness notes (what datasheet-written clients rely on):
 * - acks always have the fixed length of their instruction, error or not
 *   (12 plain, 14 TemplateNum/Match, 16 Search, 28 ReadSysPara, 44 ReadIndexTable);
 * - acks carry the module address (default FFFFFFFF) and PID 07;
 * - commands to another address, and non-command packets outside a DownChar/DownImage, get no reply;
 * - an instruction the module does not know is refused with 01 (the family has no separate
 *   "illegal instruction" code: 01 "error when receiving package" is what modules answer).
 * The instruction table (what is supported, how) is in firmware-bridge/r30x/README.md.
 */
import { createHash, createHmac } from 'node:crypto';
import { encodePacket, type Packet } from '../../firmware-bridge/r30x/codec.js';
import {
  BAUD_UNIT,
  Confirmation,
  DEFAULT_ADDRESS,
  HANDSHAKE_BYTE,
  IMAGE_HEIGHT,
  IMAGE_SIZE,
  IMAGE_WIDTH,
  INSTRUCTION_NAMES,
  Instruction,
  NOTEPAD_PAGES,
  NOTEPAD_PAGE_BYTES,
  Pid,
  TEMPLATE_SIZE,
  baudRateFromN,
  packetSizeFromCode,
} from '../../firmware-bridge/r30x/constants.js';
import { AutoFlags, AutoStep, ackContent, encodeIndexTable, encodeProdInfo, encodeSearchPayload, encodeSysPara, splitData } from '../../firmware-bridge/r30x/messages.js';
import { DEFAULT_SEED, MATCH_THRESHOLD, captureFor, combine, score, templateDigest, type FingerRef } from './templates.js';

export const MAX_CAPACITY = 1024;

/** How the placed finger images: 'good', or a failure Img2Tz then reports. */
export type FingerQuality = 'good' | 'messy' | 'few-features';

export interface PlacedFinger extends FingerRef {
  quality: FingerQuality;
}

export interface FingerprintDeviceOptions {
  /** Library pages, 1..1024; default 1000. */
  capacity?: number;
  /** Default FFFFFFFF. */
  address?: number;
  /** Default 0 (no password: commands work without VfyPwd). */
  password?: number;
  /** 0..3 → 32/64/128/256 bytes per data packet; default 2 (128). */
  packetSizeCode?: number;
  /** Seed of the deterministic templates. */
  seed?: string;
  /** Line speed, 9600 × N (N 1..12); default 57600. */
  baudRate?: number;
}

/** The image buffer: a capture of a placed finger, or an image the host downloaded. */
interface ImageBuffer {
  ref: FingerRef | null;
  quality: FingerQuality;
  /** For a downloaded image: its bytes' digest (what Img2Tz extracts features from). */
  digest?: string;
}

/** Images handed out by UpImage, by digest, so downloading one back images the same finger. */
const IMAGE_MEMORY = 8;

export interface LibraryEntry {
  page: number;
  /** Who this template came from, when the simulator made it; null for templates written by DownChar from elsewhere. */
  person: string | null;
  finger: number | null;
  digest: string;
}

export class FingerprintDevice {
  readonly capacity: number;
  readonly seed: string;
  #address: number;
  #password: number;
  #verified = false;
  #packetSizeCode: number;
  #securityLevel = 3;
  #baudN = 6;
  /** Notepad (flash): survives power cycles like the library. */
  readonly #notepad: Buffer[] = Array.from({ length: NOTEPAD_PAGES }, () => Buffer.alloc(NOTEPAD_PAGE_BYTES));
  #sensorOk = true;
  #randomCounter = 0;
  readonly #uploadedImages = new Map<string, FingerRef>();
  /** Instructions received (by code), answered or not: what the host asked of the module. */
  readonly #received = new Map<number, number>();
  readonly #library = new Map<number, Buffer>();
  /** Digest → finger, for labelling library dumps. */
  readonly #known = new Map<string, FingerRef>();
  #char: [Buffer, Buffer] = [Buffer.alloc(TEMPLATE_SIZE), Buffer.alloc(TEMPLATE_SIZE)];
  #finger: PlacedFinger | null = null;
  #image: ImageBuffer | null = null;
  #captures = 0;
  /** DownChar in progress: target buffer and the parts so far. */
  #receiving: { kind: 'char'; buffer: 0 | 1; parts: Buffer[]; bytes: number } | { kind: 'image'; parts: Buffer[]; bytes: number } | null = null;
  /** Counters for the control interface. */
  readonly counters = { commands: 0, ignored: 0 };
  onCommand: ((instruction: string, confirmation: number) => void) | null = null;
  /** Called after SetSysPara changed the line speed (the ack already went at the old one). */
  onBaudRate: ((baudRate: number) => void) | null = null;

  constructor(opts: FingerprintDeviceOptions = {}) {
    const capacity = opts.capacity ?? 1000;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_CAPACITY) throw new RangeError(`capacity ${capacity} is not 1..${MAX_CAPACITY}`);
    this.capacity = capacity;
    this.#address = opts.address ?? DEFAULT_ADDRESS;
    if (opts.baudRate !== undefined) {
      if (opts.baudRate % BAUD_UNIT !== 0) throw new RangeError(`baud rate ${opts.baudRate} is not 9600 × N`);
      baudRateFromN(opts.baudRate / BAUD_UNIT);
      this.#baudN = opts.baudRate / BAUD_UNIT;
    }
    this.#password = opts.password ?? 0;
    this.#packetSizeCode = opts.packetSizeCode ?? 2;
    packetSizeFromCode(this.#packetSizeCode);
    this.seed = opts.seed ?? DEFAULT_SEED;
  }

  // ---- scripting (control interface, tests) --------------------------------

  placeFinger(ref: FingerRef, quality: FingerQuality = 'good'): void {
    this.#finger = { person: ref.person, finger: ref.finger, quality };
  }
  liftFinger(): void {
    this.#finger = null;
  }
  /** Power loss: volatile state goes, the flash library stays. */
  powerCycle(): void {
    this.#verified = false;
    this.#char = [Buffer.alloc(TEMPLATE_SIZE), Buffer.alloc(TEMPLATE_SIZE)];
    this.#image = null;
    this.#receiving = null;
  }
  get finger(): PlacedFinger | null {
    return this.#finger;
  }
  /** Current module address (SetAdder changes it; frames to another address are ignored). */
  get address(): number {
    return this.#address;
  }
  /** The line speed the module is configured for (ReadSysPara's baud N × 9600). */
  get baudRate(): number {
    return baudRateFromN(this.#baudN);
  }
  /** A broken sensor: CheckSensor answers SENSOR_ABNORMAL and GenImg IMAGE_FAILED. */
  setSensorFault(broken: boolean): void {
    this.#sensorOk = !broken;
  }
  /** How many times each instruction was received, by name (or 0xNN for unknown codes). */
  instructionCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [code, n] of [...this.#received].sort((a, b) => a[0] - b[0])) out[INSTRUCTION_NAMES.get(code) ?? `0x${code.toString(16).padStart(2, '0')}`] = n;
    return out;
  }
  /** Times instruction `code` was received. */
  received(code: number): number {
    return this.#received.get(code) ?? 0;
  }
  /** What the module sends when it is ready after power-up: the handshake byte, outside any frame. */
  powerUp(): Buffer[] {
    this.powerCycle();
    return [Buffer.from([HANDSHAKE_BYTE])];
  }

  /** Put the model of `ref` at `page` directly (a module enrolled elsewhere). */
  enrolDirect(page: number, ref: FingerRef): void {
    this.#checkPage(page);
    this.#setPage(page, this.modelOf(ref));
  }
  setPage(page: number, template: Uint8Array): void {
    this.#checkPage(page);
    this.#setPage(page, Buffer.from(template));
  }
  deletePage(page: number): boolean {
    return this.#library.delete(page);
  }
  clearLibrary(): void {
    this.#library.clear();
  }
  pages(): number[] {
    return [...this.#library.keys()].sort((a, b) => a - b);
  }
  getPage(page: number): Buffer | undefined {
    const t = this.#library.get(page);
    return t ? Buffer.from(t) : undefined;
  }
  library(): LibraryEntry[] {
    return this.pages().map((page) => {
      const digest = templateDigest(this.#library.get(page) as Buffer);
      const ref = this.#known.get(digest);
      return { page, person: ref?.person ?? null, finger: ref?.finger ?? null, digest };
    });
  }
  /** The model RegModel would build for `ref` (what Store then keeps). */
  modelOf(ref: FingerRef): Buffer {
    const model = combine(captureFor(ref, 0, this.seed));
    this.#known.set(templateDigest(model), { person: ref.person, finger: ref.finger });
    return model;
  }
  get packetSize(): number {
    return packetSizeFromCode(this.#packetSizeCode);
  }

  // ---- protocol ------------------------------------------------------------

  /** Frames to send back for one received packet (possibly none). */
  handle(p: Packet): Buffer[] {
    if (p.addr !== this.#address) {
      this.counters.ignored++;
      return [];
    }
    if (p.pid === Pid.DATA || p.pid === Pid.END_DATA) return this.#receiveData(p);
    if (p.pid !== Pid.COMMAND || p.content.length === 0) {
      this.counters.ignored++;
      return [];
    }
    // A command aborts a DownChar the host gave up on.
    this.#receiving = null;
    this.counters.commands++;
    const instruction = p.content[0] as number;
    this.#received.set(instruction, (this.#received.get(instruction) ?? 0) + 1);
    return this.#command(instruction, p.content.subarray(1));
  }

  #ack(instruction: number, confirmation: number, payload?: Uint8Array): Buffer {
    this.onCommand?.(INSTRUCTION_NAMES.get(instruction) ?? `0x${instruction.toString(16)}`, confirmation);
    return encodePacket({ addr: this.#address, pid: Pid.ACK, content: ackContent(instruction, confirmation, payload) });
  }

  #command(ins: number, args: Buffer): Buffer[] {
    const ack = (c: number, payload?: Uint8Array) => [this.#ack(ins, c, payload)];
    const need = (n: number) => args.length >= n;
    if (this.#password !== 0 && !this.#verified && ins !== Instruction.VfyPwd && ins !== Instruction.GetEcho && ins !== Instruction.HandShake) {
      return ack(Confirmation.MUST_VERIFY_PASSWORD);
    }
    switch (ins) {
      case Instruction.VfyPwd: {
        if (!need(4)) return ack(Confirmation.RECEIVE_ERROR);
        this.#verified = args.readUInt32BE(0) === this.#password;
        return ack(this.#verified ? Confirmation.OK : Confirmation.WRONG_PASSWORD);
      }
      case Instruction.SetPwd: {
        if (!need(4)) return ack(Confirmation.RECEIVE_ERROR);
        this.#password = args.readUInt32BE(0);
        this.#verified = true;
        return ack(Confirmation.OK);
      }
      case Instruction.GetEcho:
        return ack(Confirmation.HANDSHAKE_OK);
      case Instruction.AuraLedConfig:
        return ack(Confirmation.OK);
      case Instruction.HandShake:
        return ack(Confirmation.OK);
      case Instruction.CheckSensor:
        return ack(this.#sensorOk ? Confirmation.OK : Confirmation.SENSOR_ABNORMAL);
      case Instruction.GenImg: {
        // A failed capture leaves no usable image: Img2Tz now fails, as on the module.
        this.#image = null;
        if (!this.#sensorOk) return ack(Confirmation.IMAGE_FAILED);
        if (!this.#finger) return ack(Confirmation.NO_FINGER);
        this.#image = { ref: { person: this.#finger.person, finger: this.#finger.finger }, quality: this.#finger.quality };
        return ack(Confirmation.OK);
      }
      case Instruction.Img2Tz: {
        const b = this.#bufferArg(args[0]);
        if (b === null) return ack(Confirmation.RECEIVE_ERROR);
        const img = this.#image;
        if (!img) return ack(Confirmation.NO_VALID_IMAGE);
        if (img.quality === 'messy') return ack(Confirmation.IMAGE_MESSY);
        if (img.quality === 'few-features') return ack(Confirmation.TOO_FEW_FEATURES);
        const ref = img.ref ?? { person: `downloaded-image:${img.digest}`, finger: 0 };
        this.#char[b] = captureFor(ref, ++this.#captures, this.seed);
        if (img.ref) this.modelOf(img.ref);
        return ack(Confirmation.OK);
      }
      case Instruction.Match: {
        const s = score(this.#char[0], this.#char[1]);
        return s >= MATCH_THRESHOLD ? ack(Confirmation.OK, u16(s)) : ack(Confirmation.NO_MATCH);
      }
      case Instruction.RegModel: {
        if (score(this.#char[0], this.#char[1]) < MATCH_THRESHOLD || isBlank(this.#char[0])) return ack(Confirmation.COMBINE_FAILED);
        const model = combine(this.#char[0]);
        this.#char = [model, Buffer.from(model)];
        return ack(Confirmation.OK);
      }
      case Instruction.Store: {
        const b = this.#bufferArg(args[0]);
        if (b === null || !need(3)) return ack(Confirmation.RECEIVE_ERROR);
        const page = args.readUInt16BE(1);
        if (page >= this.capacity) return ack(Confirmation.BAD_PAGE);
        this.#setPage(page, Buffer.from(this.#char[b]));
        return ack(Confirmation.OK);
      }
      case Instruction.LoadChar: {
        const b = this.#bufferArg(args[0]);
        if (b === null || !need(3)) return ack(Confirmation.RECEIVE_ERROR);
        const page = args.readUInt16BE(1);
        if (page >= this.capacity) return ack(Confirmation.BAD_PAGE);
        const t = this.#library.get(page);
        if (!t) return ack(Confirmation.BAD_TEMPLATE);
        this.#char[b] = Buffer.from(t);
        return ack(Confirmation.OK);
      }
      case Instruction.UpChar: {
        const b = this.#bufferArg(args[0]);
        if (b === null) return ack(Confirmation.RECEIVE_ERROR);
        const parts = splitData(this.#char[b], this.packetSize);
        return [...ack(Confirmation.OK), ...this.#dataPackets(parts)];
      }
      case Instruction.DownChar: {
        const b = this.#bufferArg(args[0]);
        if (b === null) return ack(Confirmation.RECEIVE_ERROR);
        this.#receiving = { kind: 'char', buffer: b, parts: [], bytes: 0 };
        return ack(Confirmation.OK);
      }
      case Instruction.UpImage: {
        const img = this.#image;
        if (!img) return ack(Confirmation.IMAGE_UPLOAD_ERROR);
        const bytes = this.#imageBytes(img);
        return [...ack(Confirmation.OK), ...this.#dataPackets(splitData(bytes, this.packetSize))];
      }
      case Instruction.DownImage:
        this.#receiving = { kind: 'image', parts: [], bytes: 0 };
        return ack(Confirmation.OK);
      case Instruction.GetRandomCode: {
        // Deterministic per seed (a failing run replays), different on every call.
        const r = createHmac('sha256', this.seed)
          .update(`r30x-random\0${++this.#randomCounter}`)
          .digest()
          .subarray(0, 4);
        return ack(Confirmation.OK, r);
      }
      case Instruction.SetAdder: {
        if (!need(4)) return ack(Confirmation.RECEIVE_ERROR);
        // The datasheet's ack already carries the new address; frames to the old one are ignored from now on.
        this.#address = args.readUInt32BE(0);
        return ack(Confirmation.OK);
      }
      case Instruction.WriteNotepad: {
        const page = args[0];
        if (page === undefined || !need(1 + NOTEPAD_PAGE_BYTES)) return ack(Confirmation.RECEIVE_ERROR);
        if (page >= NOTEPAD_PAGES) return ack(Confirmation.BAD_NOTEPAD_PAGE);
        this.#notepad[page] = Buffer.from(args.subarray(1, 1 + NOTEPAD_PAGE_BYTES));
        return ack(Confirmation.OK);
      }
      case Instruction.ReadNotepad: {
        const page = args[0];
        if (page === undefined) return ack(Confirmation.RECEIVE_ERROR);
        if (page >= NOTEPAD_PAGES) return ack(Confirmation.BAD_NOTEPAD_PAGE);
        return ack(Confirmation.OK, this.#notepad[page]);
      }
      case Instruction.ReadProdInfo:
        return ack(
          Confirmation.OK,
          encodeProdInfo({
            moduleType: 'TALLYBOX-SIM',
            batchNumber: 'SIM1',
            serialNumber: createHash('sha256').update(this.seed).digest('hex').slice(0, 8).toUpperCase(),
            hardwareVersion: { major: 1, minor: 0 },
            sensorType: 'SIM-OPT',
            sensorWidth: IMAGE_WIDTH,
            sensorHeight: IMAGE_HEIGHT,
            templateSize: TEMPLATE_SIZE,
            databaseSize: this.capacity,
          }),
        );
      case Instruction.SoftRst:
        // Ack first, then the module restarts (volatile state lost) and says it is ready with 0x55.
        return [...ack(Confirmation.OK), ...this.powerUp()];
      case Instruction.Cancel:
        // AutoEnroll/AutoIdentify finish within their command here, so nothing is ever left to cancel.
        return ack(Confirmation.OK);
      case Instruction.AutoEnroll:
        return this.#autoEnroll(args);
      case Instruction.AutoIdentify:
        return this.#autoIdentify(args);
      case Instruction.DeletChar: {
        if (!need(4)) return ack(Confirmation.RECEIVE_ERROR);
        const page = args.readUInt16BE(0);
        const count = args.readUInt16BE(2);
        if (count === 0 || page + count > this.capacity) return ack(Confirmation.DELETE_FAILED);
        for (let i = page; i < page + count; i++) this.#library.delete(i);
        return ack(Confirmation.OK);
      }
      case Instruction.Empty:
        this.#library.clear();
        return ack(Confirmation.OK);
      case Instruction.Search:
      case Instruction.HighSpeedSearch: {
        const b = this.#bufferArg(args[0]);
        if (b === null || !need(5)) return ack(Confirmation.RECEIVE_ERROR);
        const start = args.readUInt16BE(1);
        const end = Math.min(this.capacity, start + args.readUInt16BE(3));
        let best: { page: number; score: number } | null = null;
        for (const [page, t] of this.#library) {
          if (page < start || page >= end) continue;
          const s = score(this.#char[b], t);
          if (s >= MATCH_THRESHOLD && (!best || s > best.score || (s === best.score && page < best.page))) best = { page, score: s };
        }
        return best ? ack(Confirmation.OK, encodeSearchPayload(best)) : ack(Confirmation.NOT_FOUND);
      }
      case Instruction.TemplateNum:
        return ack(Confirmation.OK, u16(this.#library.size));
      case Instruction.ReadIndexTable: {
        const t = args[0];
        if (t === undefined || t > 3) return ack(Confirmation.INVALID_REGISTER);
        return ack(
          Confirmation.OK,
          encodeIndexTable(t, (page) => page < this.capacity && this.#library.has(page)),
        );
      }
      case Instruction.ReadSysPara:
        return ack(
          Confirmation.OK,
          encodeSysPara({
            // bit 2: password verified; bit 3: image buffer holds a valid image.
            statusRegister: (this.#verified ? 0b100 : 0) | (this.#image ? 0b1000 : 0),
            systemId: 0x0009,
            librarySize: this.capacity,
            securityLevel: this.#securityLevel,
            address: this.#address,
            packetSizeCode: this.#packetSizeCode,
            baudN: this.#baudN,
          }),
        );
      case Instruction.SetSysPara: {
        if (!need(2)) return ack(Confirmation.RECEIVE_ERROR);
        const [param, value] = [args[0] as number, args[1] as number];
        if (param === 4 && value >= 1 && value <= 12) {
          const changed = value !== this.#baudN;
          this.#baudN = value;
          if (changed) this.onBaudRate?.(this.baudRate);
        } else if (param === 5 && value >= 1 && value <= 5) this.#securityLevel = value;
        else if (param === 6 && value <= 3) this.#packetSizeCode = value;
        else return ack(Confirmation.INVALID_REGISTER);
        return ack(Confirmation.OK);
      }
      default:
        return ack(Confirmation.RECEIVE_ERROR);
    }
  }

  #dataPackets(parts: Buffer[]): Buffer[] {
    return parts.map((content, i) => encodePacket({ addr: this.#address, pid: i === parts.length - 1 ? Pid.END_DATA : Pid.DATA, content }));
  }

  /** The image buffer's bytes: a deterministic 4-bit greyscale picture of the finger. */
  #imageBytes(img: ImageBuffer): Buffer {
    const label = img.ref ? `r30x-image\0${img.ref.person}\0${img.ref.finger}\0${this.#captures}` : `r30x-image-downloaded\0${img.digest}`;
    const parts: Buffer[] = [];
    for (let i = 0; parts.length * 32 < IMAGE_SIZE; i++) parts.push(createHmac('sha256', this.seed).update(`${label}\0${i}`).digest());
    const bytes = Buffer.concat(parts).subarray(0, IMAGE_SIZE);
    if (img.ref) {
      const digest = imageDigest(bytes);
      this.#uploadedImages.delete(digest);
      this.#uploadedImages.set(digest, img.ref);
      while (this.#uploadedImages.size > IMAGE_MEMORY) this.#uploadedImages.delete(this.#uploadedImages.keys().next().value as string);
    }
    return bytes;
  }

  /**
   * AutoEnroll (R503): page(2), entries(1), flags(2). One ack per step
   * (confirmation, step, entry) unless flags has QUIET; the last ack is STORE
   * on success, or the failing step's. The finger must already be on the
   * sensor: the simulator does not wait for one (OPERATION_TIMEOUT at once).
   */
  #autoEnroll(args: Buffer): Buffer[] {
    const ins = Instruction.AutoEnroll;
    const out: Buffer[] = [];
    const step = (c: number, st: number, n: number, last = false) => {
      if (last || !quiet) out.push(this.#ack(ins, c, Buffer.from([st, n])));
      return out;
    };
    if (args.length < 5) return [this.#ack(ins, Confirmation.RECEIVE_ERROR)];
    const page = args.readUInt16BE(0);
    const entries = args[2] as number;
    const flags = args.readUInt16BE(3);
    const quiet = (flags & AutoFlags.QUIET) !== 0;
    if (page >= this.capacity) return step(Confirmation.BAD_PAGE, AutoStep.LEGALITY, 0, true);
    if (entries < 1 || entries > 6) return step(Confirmation.RECEIVE_ERROR, AutoStep.LEGALITY, 0, true);
    if (this.#library.has(page) && !(flags & AutoFlags.OVERWRITE)) return step(Confirmation.TEMPLATE_NOT_EMPTY, AutoStep.LEGALITY, 0, true);
    step(Confirmation.OK, AutoStep.LEGALITY, 0);
    let capture: Buffer | null = null;
    for (let n = 1; n <= entries; n++) {
      const f = this.#finger;
      if (!f) return step(Confirmation.OPERATION_TIMEOUT, AutoStep.GET_IMAGE, n, true);
      step(Confirmation.OK, AutoStep.GET_IMAGE, n);
      if (f.quality === 'messy') return step(Confirmation.IMAGE_MESSY, AutoStep.GEN_CHAR, n, true);
      if (f.quality === 'few-features') return step(Confirmation.TOO_FEW_FEATURES, AutoStep.GEN_CHAR, n, true);
      const c = captureFor(f, ++this.#captures, this.seed);
      if (capture && score(capture, c) < MATCH_THRESHOLD) return step(Confirmation.AUTO_ENROLL_FAILED, AutoStep.GEN_CHAR, n, true);
      capture ??= c;
      step(Confirmation.OK, AutoStep.GEN_CHAR, n);
      // The simulated finger counts as lifted and placed again between entries.
      if (n < entries) step(Confirmation.OK, AutoStep.FINGER_LEAVE, n);
    }
    const model = combine(capture as Buffer);
    step(Confirmation.OK, AutoStep.MERGE, 0xf0);
    if (!(flags & AutoFlags.ALLOW_DUPLICATE)) {
      for (const [p, t] of this.#library) if (p !== page && score(model, t) >= MATCH_THRESHOLD) return step(Confirmation.ALREADY_EXISTS, AutoStep.CHECK, 0xf1, true);
    }
    step(Confirmation.OK, AutoStep.CHECK, 0xf1);
    this.#char = [model, Buffer.from(model)];
    this.#setPage(page, Buffer.from(model));
    if (this.#finger) this.modelOf(this.#finger);
    return step(Confirmation.OK, AutoStep.STORE, 0xf2, true);
  }

  /**
   * AutoIdentify (R503): security level(1), page(2) (0xFFFF = whole library),
   * flags(2). Acks (confirmation, step, page(2), score(2)): LEGALITY, GET_IMAGE,
   * then CHECK with the result (NOT_FOUND when nobody matches). No waiting for a
   * finger, like AutoEnroll.
   */
  #autoIdentify(args: Buffer): Buffer[] {
    const ins = Instruction.AutoIdentify;
    if (args.length < 5) return [this.#ack(ins, Confirmation.RECEIVE_ERROR)];
    const page = args.readUInt16BE(1);
    const quiet = (args.readUInt16BE(3) & AutoFlags.QUIET) !== 0;
    const out: Buffer[] = [];
    const step = (c: number, st: number, result = { page: 0, score: 0 }, last = false) => {
      if (last || !quiet) out.push(this.#ack(ins, c, Buffer.from([st, ...encodeSearchPayload(result)])));
      return out;
    };
    if (page !== 0xffff && page >= this.capacity) return step(Confirmation.BAD_PAGE, AutoStep.LEGALITY, undefined, true);
    step(Confirmation.OK, AutoStep.LEGALITY);
    const f = this.#finger;
    if (!f) return step(Confirmation.OPERATION_TIMEOUT, AutoStep.GET_IMAGE, undefined, true);
    step(Confirmation.OK, AutoStep.GET_IMAGE);
    if (f.quality !== 'good') return step(f.quality === 'messy' ? Confirmation.IMAGE_MESSY : Confirmation.TOO_FEW_FEATURES, AutoStep.CHECK, undefined, true);
    const c = captureFor(f, ++this.#captures, this.seed);
    this.#char[0] = c;
    let best: { page: number; score: number } | null = null;
    for (const [p, t] of this.#library) {
      if (page !== 0xffff && p !== page) continue;
      const s = score(c, t);
      if (s >= MATCH_THRESHOLD && (!best || s > best.score || (s === best.score && p < best.page))) best = { page: p, score: s };
    }
    return best ? step(Confirmation.OK, AutoStep.CHECK, best, true) : step(Confirmation.NOT_FOUND, AutoStep.CHECK, undefined, true);
  }

  #receiveData(p: Packet): Buffer[] {
    const r = this.#receiving;
    if (!r) {
      this.counters.ignored++;
      return [];
    }
    r.parts.push(p.content);
    r.bytes += p.content.length;
    if (r.bytes > (r.kind === 'image' ? IMAGE_SIZE : TEMPLATE_SIZE * 2)) {
      // Runaway upload: drop it rather than grow without bound.
      this.#receiving = null;
      return [];
    }
    if (p.pid === Pid.END_DATA && r.kind === 'image') {
      const bytes = Buffer.alloc(IMAGE_SIZE);
      Buffer.concat(r.parts).copy(bytes, 0, 0, IMAGE_SIZE);
      const digest = imageDigest(bytes);
      // One of our own uploaded images images that finger again; anything else is a stranger's.
      const ref = this.#uploadedImages.get(digest);
      this.#image = ref ? { ref, quality: 'good' } : { ref: null, quality: 'good', digest };
      this.#receiving = null;
    } else if (p.pid === Pid.END_DATA && r.kind === 'char') {
      const t = Buffer.alloc(TEMPLATE_SIZE);
      Buffer.concat(r.parts).copy(t, 0, 0, TEMPLATE_SIZE);
      this.#char[r.buffer] = t;
      this.#receiving = null;
    }
    // Data packets are not acknowledged.
    return [];
  }

  #bufferArg(id: number | undefined): 0 | 1 | null {
    return id === 1 ? 0 : id === 2 ? 1 : null;
  }
  #checkPage(page: number): void {
    if (!Number.isInteger(page) || page < 0 || page >= this.capacity) throw new RangeError(`page ${page} is not 0..${this.capacity - 1}`);
  }
  #setPage(page: number, t: Buffer): void {
    this.#library.set(page, t);
  }
}

function u16(n: number): Buffer {
  return Buffer.from([(n >> 8) & 0xff, n & 0xff]);
}
function isBlank(b: Buffer): boolean {
  return b.every((x) => x === 0);
}

function imageDigest(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex').slice(0, 16);
}
