/**
 * Keyboard-wedge card readers: a USB HID boot keyboard that "types" the card
 * number followed by Enter. Pure decoding, no I/O.
 *
 * Boot report: [modifiers, reserved, key1..key6] (8 bytes), optionally
 * preceded by a report id (9 bytes). Every press is followed by a release
 * report (no keys down). A key counts when it appears in a report and was not
 * down in the previous one, so a digit held across reports counts once and
 * "11" (press, release, press, release) counts twice.
 */
import { EventEmitter } from 'node:events';

export const USAGE_ENTER = 0x28;
export const USAGE_KEYPAD_ENTER = 0x58;
const LEFT_SHIFT = 0x02,
  RIGHT_SHIFT = 0x20;

/** Character for a usage code (digits, letters, keypad digits); null for anything else. */
export function usageToChar(usage: number, shift = false): string | null {
  if (usage >= 0x1e && usage <= 0x26) return String(usage - 0x1d); // 1..9
  if (usage === 0x27) return '0';
  if (usage >= 0x59 && usage <= 0x61) return String(usage - 0x58); // keypad 1..9
  if (usage === 0x62) return '0'; // keypad 0
  if (usage >= 0x04 && usage <= 0x1d) {
    const c = String.fromCharCode(0x61 + usage - 0x04);
    return shift ? c.toUpperCase() : c;
  }
  return null;
}

export interface BootReport {
  modifiers: number;
  /** Usage codes of the keys down, zeros dropped. */
  keys: number[];
}

/**
 * Decode one boot keyboard report. `reportId`: 'auto' (default) strips the
 * first byte of a 9-byte report; a number strips it only when it equals that
 * id; 'none' never strips. Returns null for reports of another shape.
 */
export function decodeBootReport(report: Uint8Array, reportId: 'auto' | 'none' | number = 'auto'): BootReport | null {
  let r = report;
  if (r.length === 9 && (reportId === 'auto' || (typeof reportId === 'number' && r[0] === reportId))) r = r.subarray(1);
  if (r.length !== 8) return null;
  // Keyboard rollover error (all keys 0x01): no key information.
  if (r[2] === 0x01) return { modifiers: r[0]!, keys: [] };
  const keys: number[] = [];
  for (let i = 2; i < 8; i++) if (r[i]! !== 0) keys.push(r[i]!);
  return { modifiers: r[0]!, keys };
}

export interface WedgeDecoderOptions {
  reportId?: 'auto' | 'none' | number;
  /** A partial number idle longer than this is dropped (a truncated read). Default 1000 ms. */
  interKeyTimeoutMs?: number;
  /** Longer input is not a card number; dropped at Enter. Default 32. */
  maxLength?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export interface WedgeDecoderEvents {
  /** A complete card number. Personal data: never log it. */
  card: [card: string];
  /** Input dropped (too long, timed out, empty); for counters only, no content. */
  discard: [reason: 'too-long' | 'timeout' | 'empty' | 'bad-report'];
}

export class WedgeDecoder extends EventEmitter<WedgeDecoderEvents> {
  private readonly reportId: 'auto' | 'none' | number;
  private readonly interKeyTimeoutMs: number;
  private readonly maxLength: number;
  private readonly now: () => number;
  private down = new Set<number>();
  private buf = '';
  private overflow = false;
  private lastKeyAt = 0;

  constructor(opts: WedgeDecoderOptions = {}) {
    super();
    this.reportId = opts.reportId ?? 'auto';
    this.interKeyTimeoutMs = opts.interKeyTimeoutMs ?? 1000;
    this.maxLength = opts.maxLength ?? 32;
    this.now = opts.now ?? Date.now;
  }

  push(report: Uint8Array): void {
    const r = decodeBootReport(report, this.reportId);
    if (!r) return void this.emit('discard', 'bad-report');
    const shift = (r.modifiers & (LEFT_SHIFT | RIGHT_SHIFT)) !== 0;
    const pressed = r.keys.filter((k) => !this.down.has(k));
    this.down = new Set(r.keys);
    for (const k of pressed) this.key(k, shift);
  }

  private key(usage: number, shift: boolean): void {
    const t = this.now();
    if (this.buf && t - this.lastKeyAt > this.interKeyTimeoutMs) {
      this.reset();
      this.emit('discard', 'timeout');
    }
    this.lastKeyAt = t;
    if (usage === USAGE_ENTER || usage === USAGE_KEYPAD_ENTER) {
      const card = this.buf;
      const overflow = this.overflow;
      this.reset();
      if (overflow) return void this.emit('discard', 'too-long');
      if (!card) return void this.emit('discard', 'empty');
      this.emit('card', card);
      return;
    }
    const c = usageToChar(usage, shift);
    if (c === null) return;
    if (this.buf.length >= this.maxLength) this.overflow = true;
    else this.buf += c;
  }

  private reset(): void {
    this.buf = '';
    this.overflow = false;
  }
}

/** Encode a card number as the reports a reader sends: press/release per character, then Enter. For simulators and tests. */
export function cardToReports(card: string, opts: { reportId?: number } = {}): Buffer[] {
  const out: Buffer[] = [];
  const report = (mod: number, key: number) => {
    const r = Buffer.alloc(8);
    r[0] = mod;
    r[2] = key;
    return opts.reportId === undefined ? r : Buffer.concat([Buffer.of(opts.reportId), r]);
  };
  for (const ch of card) {
    let usage: number;
    let mod = 0;
    if (ch >= '1' && ch <= '9') usage = 0x1e + ch.charCodeAt(0) - 0x31;
    else if (ch === '0') usage = 0x27;
    else if (/[a-z]/.test(ch)) usage = 0x04 + ch.charCodeAt(0) - 0x61;
    else if (/[A-Z]/.test(ch)) {
      usage = 0x04 + ch.charCodeAt(0) - 0x41;
      mod = LEFT_SHIFT;
    } else throw new RangeError('card numbers are digits and letters only');
    out.push(report(mod, usage), report(0, 0));
  }
  out.push(report(0, USAGE_ENTER), report(0, 0));
  return out;
}
