/**
 * The module side of R30x: a pure state machine from a command packet to the
 * frames the module sends back. No I/O and no timers (link.ts does those), so
 * it is unit-testable and reusable over any transport.
 *
 * Faithfulness notes (what datasheet-written clients rely on):
 * - acks always have the fixed length of their instruction, error or not
 *   (12 plain, 14 TemplateNum/Match, 16 Search, 28 ReadSysPara, 44 ReadIndexTable);
 * - acks carry the module address (default FFFFFFFF) and PID 07;
 * - commands to another address, and non-command packets outside a DownChar, get no reply.
 */
import { encodePacket, type Packet } from '../../firmware-bridge/r30x/codec.js';
import { Confirmation, DEFAULT_ADDRESS, INSTRUCTION_NAMES, Instruction, Pid, TEMPLATE_SIZE, packetSizeFromCode } from '../../firmware-bridge/r30x/constants.js';
import { ackContent, encodeIndexTable, encodeSearchPayload, encodeSysPara, splitData } from '../../firmware-bridge/r30x/messages.js';
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
}

export interface LibraryEntry {
  page: number;
  /** Who this template came from, when the simulator made it; null for templates written by DownChar from elsewhere. */
  person: string | null;
  finger: number | null;
  digest: string;
}

export class FingerprintDevice {
  readonly capacity: number;
  readonly address: number;
  readonly seed: string;
  #password: number;
  #verified = false;
  #packetSizeCode: number;
  #securityLevel = 3;
  #baudN = 6;
  readonly #library = new Map<number, Buffer>();
  /** Digest → finger, for labelling library dumps. */
  readonly #known = new Map<string, FingerRef>();
  #char: [Buffer, Buffer] = [Buffer.alloc(TEMPLATE_SIZE), Buffer.alloc(TEMPLATE_SIZE)];
  #finger: PlacedFinger | null = null;
  #image: PlacedFinger | null = null;
  #captures = 0;
  /** DownChar in progress: target buffer and the parts so far. */
  #receiving: { buffer: 0 | 1; parts: Buffer[]; bytes: number } | null = null;
  /** Counters for the control interface. */
  readonly counters = { commands: 0, ignored: 0 };
  onCommand: ((instruction: string, confirmation: number) => void) | null = null;

  constructor(opts: FingerprintDeviceOptions = {}) {
    const capacity = opts.capacity ?? 1000;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_CAPACITY) throw new RangeError(`capacity ${capacity} is not 1..${MAX_CAPACITY}`);
    this.capacity = capacity;
    this.address = opts.address ?? DEFAULT_ADDRESS;
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
    if (p.addr !== this.address) {
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
    const out = this.#command(instruction, p.content.subarray(1));
    return out;
  }

  #ack(instruction: number, confirmation: number, payload?: Uint8Array): Buffer {
    this.onCommand?.(INSTRUCTION_NAMES.get(instruction) ?? `0x${instruction.toString(16)}`, confirmation);
    return encodePacket({ addr: this.address, pid: Pid.ACK, content: ackContent(instruction, confirmation, payload) });
  }

  #command(ins: number, args: Buffer): Buffer[] {
    const ack = (c: number, payload?: Uint8Array) => [this.#ack(ins, c, payload)];
    const need = (n: number) => args.length >= n;
    if (this.#password !== 0 && !this.#verified && ins !== Instruction.VfyPwd && ins !== Instruction.GetEcho) {
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
      case Instruction.GenImg: {
        if (!this.#finger) return ack(Confirmation.NO_FINGER);
        this.#image = { ...this.#finger };
        return ack(Confirmation.OK);
      }
      case Instruction.Img2Tz: {
        const b = this.#bufferArg(args[0]);
        if (b === null) return ack(Confirmation.RECEIVE_ERROR);
        const img = this.#image;
        if (!img) return ack(Confirmation.NO_VALID_IMAGE);
        if (img.quality === 'messy') return ack(Confirmation.IMAGE_MESSY);
        if (img.quality === 'few-features') return ack(Confirmation.TOO_FEW_FEATURES);
        this.#char[b] = captureFor(img, ++this.#captures, this.seed);
        this.modelOf(img);
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
        return [
          ...ack(Confirmation.OK),
          ...parts.map((content, i) => encodePacket({ addr: this.address, pid: i === parts.length - 1 ? Pid.END_DATA : Pid.DATA, content })),
        ];
      }
      case Instruction.DownChar: {
        const b = this.#bufferArg(args[0]);
        if (b === null) return ack(Confirmation.RECEIVE_ERROR);
        this.#receiving = { buffer: b, parts: [], bytes: 0 };
        return ack(Confirmation.OK);
      }
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
        return ack(Confirmation.OK, encodeIndexTable(t, (page) => page < this.capacity && this.#library.has(page)));
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
            address: this.address,
            packetSizeCode: this.#packetSizeCode,
            baudN: this.#baudN,
          }),
        );
      case Instruction.SetSysPara: {
        if (!need(2)) return ack(Confirmation.RECEIVE_ERROR);
        const [param, value] = [args[0] as number, args[1] as number];
        if (param === 4 && value >= 1 && value <= 12) this.#baudN = value;
        else if (param === 5 && value >= 1 && value <= 5) this.#securityLevel = value;
        else if (param === 6 && value <= 3) this.#packetSizeCode = value;
        else return ack(Confirmation.INVALID_REGISTER);
        return ack(Confirmation.OK);
      }
      default:
        return ack(Confirmation.RECEIVE_ERROR);
    }
  }

  #receiveData(p: Packet): Buffer[] {
    const r = this.#receiving;
    if (!r) {
      this.counters.ignored++;
      return [];
    }
    r.parts.push(p.content);
    r.bytes += p.content.length;
    if (r.bytes > TEMPLATE_SIZE * 2) {
      // Runaway upload: drop it rather than grow without bound.
      this.#receiving = null;
      return [];
    }
    if (p.pid === Pid.END_DATA) {
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
