/**
 * PJL (HP Printer Job Language), the part a print box needs on a raw 9100 socket: the job wrapper
 * that makes a printer report completion, the status query, and a streaming parser of what the
 * printer sends back. Pure: no sockets, no clocks.
 *
 * What goes to the printer (device-protocols.md §4):
 *   ESC%-12345X @PJL USTATUS JOB=ON / @PJL USTATUS DEVICE=ON / @PJL JOB NAME="id" [/ @PJL SET COPIES=n]
 *   <document bytes>
 *   ESC%-12345X @PJL EOJ NAME="id" ESC%-12345X
 * What comes back: unsolicited and solicited messages, each a run of CRLF lines that starts with
 * an `@PJL …` line and ends with a form feed (0x0C):
 *   @PJL USTATUS JOB / START / NAME="id" / FF
 *   @PJL USTATUS JOB / END / NAME="id" / PAGES=2 / FF
 *   @PJL INFO STATUS / CODE=10001 / DISPLAY="READY" / ONLINE=TRUE / FF
 *   @PJL USTATUS DEVICE / CODE=41303 / DISPLAY="LOAD PAPER" / ONLINE=TRUE / FF
 *
 * The parser is fed TCP chunks as they arrive (a message may be torn anywhere, even inside the UEL),
 * never throws on what a printer sends, and counts what it had to skip (`malformed`).
 */
import type { PrinterState, PrinterStatus } from '../devices.js';
import { TallyboxError } from '../../src/util/errors.js';

/** Universal Exit Language: leaves the current printer language, (re)enters PJL. */
export const UEL = Buffer.from('\x1b%-12345X', 'latin1');

/** A job name we put in PJL: printable ASCII without quotes (the cloud's job id, never a file or user name). */
const JOB_NAME_RE = /^[\x20-\x21\x23-\x7e]{1,80}$/;

export function assertPjlJobName(name: string): void {
  if (!JOB_NAME_RE.test(name)) throw new TallyboxError('PRINTER_JOB_NAME_INVALID', 'a PJL job name must be 1..80 printable ASCII characters without double quotes');
}

/**
 * Bytes before the document: UEL, job and device status reporting on (before JOB, so the printer
 * reports this job's START), JOB NAME, and the job-scoped copy count when more than one.
 */
export function pjlJobHeader(name: string, opts: { copies?: number } = {}): Buffer {
  assertPjlJobName(name);
  const copies = opts.copies ?? 1;
  if (!Number.isInteger(copies) || copies < 1 || copies > 999) throw new TallyboxError('PRINTER_COPIES_INVALID', 'copies must be an integer in 1..999');
  const set = copies > 1 ? `@PJL SET COPIES=${copies}\r\n` : '';
  return Buffer.concat([UEL, Buffer.from(`@PJL\r\n@PJL USTATUS JOB=ON\r\n@PJL USTATUS DEVICE=ON\r\n@PJL JOB NAME="${name}"\r\n${set}`, 'latin1')]);
}

/** Bytes after the document: back to PJL, end of job (the printer answers with USTATUS JOB END), UEL. */
export function pjlJobFooter(name: string): Buffer {
  assertPjlJobName(name);
  return Buffer.concat([UEL, Buffer.from(`@PJL EOJ NAME="${name}"\r\n`, 'latin1'), UEL]);
}

/** A status query: the printer answers with one `@PJL INFO STATUS` message. */
export function pjlInfoStatusRequest(): Buffer {
  return Buffer.concat([UEL, Buffer.from('@PJL\r\n@PJL INFO STATUS\r\n', 'latin1'), UEL]);
}

/** One device status as PJL gives it (INFO STATUS reply or USTATUS DEVICE). */
export interface PjlDeviceStatus {
  code: number;
  display: string | undefined;
  online: boolean | undefined;
}

export type PjlMessage =
  | { kind: 'job'; event: 'START' | 'END' | 'CANCELED' | string; name: string | undefined; pages: number | undefined }
  | { kind: 'status'; source: 'info' | 'ustatus'; status: PjlDeviceStatus }
  /** A well-formed message this codec has no use for (INFO ID, ECHO, USTATUS TIMED, …): not malformed. */
  | { kind: 'other'; command: string };

/** Encode messages the way a printer sends them (the simulator uses these). */
export function encodeJobEvent(event: 'START' | 'END', name: string | undefined, pages?: number): Buffer {
  const lines = ['@PJL USTATUS JOB', event];
  if (name !== undefined) lines.push(`NAME="${name}"`);
  if (pages !== undefined) lines.push(`PAGES=${pages}`);
  return Buffer.from(lines.join('\r\n') + '\r\n\f', 'latin1');
}

export function encodeStatus(source: 'info' | 'ustatus', s: PjlDeviceStatus): Buffer {
  const lines = [source === 'info' ? '@PJL INFO STATUS' : '@PJL USTATUS DEVICE', `CODE=${s.code}`];
  if (s.display !== undefined) lines.push(`DISPLAY="${s.display}"`);
  if (s.online !== undefined) lines.push(`ONLINE=${s.online ? 'TRUE' : 'FALSE'}`);
  return Buffer.from(lines.join('\r\n') + '\r\n\f', 'latin1');
}

/** Longest message we keep waiting for a form feed; beyond it the message is dropped (counted malformed). */
const MAX_MESSAGE = 16 * 1024;
const FF = 0x0c;

function parseValue(raw: string): string {
  const v = raw.trim();
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
}

/** key=value lines after the command line; a bare word (START, END) is returned as `word`. */
function parseBody(lines: string[]): { fields: Map<string, string>; words: string[] } | null {
  const fields = new Map<string, string>();
  const words: string[] = [];
  for (const line of lines) {
    const t = line.trim();
    if (!t) continue;
    const eq = t.indexOf('=');
    if (eq > 0) {
      const key = t.slice(0, eq).trim().toUpperCase();
      if (!/^[A-Z][A-Z0-9_]*$/.test(key)) return null;
      fields.set(key, parseValue(t.slice(eq + 1)));
    } else if (/^[A-Za-z]+$/.test(t)) words.push(t.toUpperCase());
    else return null;
  }
  return { fields, words };
}

function parseStatus(fields: Map<string, string>): PjlDeviceStatus | null {
  const c = fields.get('CODE');
  if (c === undefined || !/^\d{5}$/.test(c)) return null;
  const online = fields.get('ONLINE');
  const o = online === undefined ? undefined : online.toUpperCase() === 'TRUE' ? true : online.toUpperCase() === 'FALSE' ? false : null;
  if (o === null) return null;
  return { code: Number(c), display: fields.get('DISPLAY'), online: o };
}

/** One message's text (without the form feed) → a message, or null when it is malformed. */
export function parsePjlMessage(text: string): PjlMessage | null {
  const lines = text.split(/\r?\n/);
  // Printers put stray CR/LF/NUL between messages; a message starts at its @PJL line.
  while (lines.length > 0 && lines[0]!.replace(/[\0\s]/g, '') === '') lines.shift();
  const head = lines.shift()?.trim();
  if (!head || !/^@PJL(\s|$)/i.test(head)) return null;
  const command = head.replace(/\s+/g, ' ').toUpperCase();
  // Bodies of other replies (INFO ID's quoted model name, INFO CONFIG's tables) are free-form.
  if (command !== '@PJL USTATUS JOB' && command !== '@PJL INFO STATUS' && command !== '@PJL USTATUS DEVICE') return { kind: 'other', command };
  const body = parseBody(lines);
  if (!body) return null;
  if (command === '@PJL USTATUS JOB') {
    const event = body.words[0];
    if (!event || body.words.length !== 1) return null;
    const p = body.fields.get('PAGES');
    if (p !== undefined && !/^\d{1,9}$/.test(p)) return null;
    return { kind: 'job', event, name: body.fields.get('NAME'), pages: p === undefined ? undefined : Number(p) };
  }
  const status = parseStatus(body.fields);
  return status ? { kind: 'status', source: command === '@PJL INFO STATUS' ? 'info' : 'ustatus', status } : null;
}

/**
 * Streaming parser: `push(chunk)` returns the messages completed by the chunk. UELs in the back
 * channel (some printers echo them) are removed; a message longer than 16 KiB without its form feed
 * is dropped. Memory is bounded by that limit whatever the printer sends.
 */
export class PjlParser {
  /** Messages skipped: no @PJL line, bad fields, or too long. */
  malformed = 0;
  private buf: Buffer = Buffer.alloc(0);
  /** Inside an over-long message: discard up to the next form feed. */
  private skipping = false;

  push(chunk: Uint8Array): PjlMessage[] {
    const out: PjlMessage[] = [];
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
    for (;;) {
      const ff = this.buf.indexOf(FF);
      if (ff < 0) break;
      const raw = this.buf.subarray(0, ff);
      this.buf = this.buf.subarray(ff + 1);
      if (this.skipping) {
        this.skipping = false;
        continue;
      }
      const text = stripUel(raw).toString('latin1');
      if (text.replace(/[\0\s]/g, '') === '') continue;
      const msg = parsePjlMessage(text);
      if (msg) out.push(msg);
      else this.malformed++;
    }
    if (this.buf.length > MAX_MESSAGE) {
      if (!this.skipping) this.malformed++;
      this.skipping = true;
      this.buf = Buffer.alloc(0);
    } else if (this.buf.length > 0) this.buf = Buffer.from(this.buf); // do not pin the whole chunk behind a short tail
    return out;
  }
}

function stripUel(b: Buffer): Buffer {
  let i = b.indexOf(UEL);
  if (i < 0) return b;
  const parts: Buffer[] = [];
  let from = 0;
  while (i >= 0) {
    parts.push(b.subarray(from, i));
    from = i + UEL.length;
    i = b.indexOf(UEL, from);
  }
  parts.push(b.subarray(from));
  return Buffer.concat(parts);
}

/**
 * PJL status code → IPP printer state and printer-state-reasons (RFC 8011 keywords).
 * HP's code families: 10xxx informational, 11xxx background paper (a tray empty, printing goes on),
 * 30xxx auto-continuable warnings, 35xxx/40xxx operator intervention, 41xxx "load paper"
 * (paper out), 42xxx paper jam, 44xxx jam at a location, 50xxx hardware errors.
 * ONLINE=FALSE adds 'offline-report' and makes the printer 'stopped'. Keywords that stop the printer
 * are bare ('media-empty'), as roles match on them; background conditions carry '-report'/'-warning'.
 */
export function pjlStatusToPrinterStatus(s: PjlDeviceStatus): PrinterStatus {
  const c = s.code;
  let state: PrinterState = 'idle';
  let reasons: string[];
  if (c === 10023 || c === 10024 || c === 10007) {
    state = 'processing';
    reasons = c === 10007 ? ['moving-to-paused'] : ['none'];
  } else if (c === 10006) reasons = ['toner-low-report'];
  else if (c >= 10000 && c < 11000) reasons = ['none'];
  else if (c >= 11000 && c < 12000) reasons = ['media-empty-report'];
  else if (c >= 30000 && c < 40000) reasons = ['other-warning'];
  else if (c >= 41000 && c < 42000) {
    state = 'stopped';
    reasons = ['media-empty'];
  } else if ((c >= 42000 && c < 43000) || (c >= 44000 && c < 45000) || c === 40022) {
    state = 'stopped';
    reasons = ['media-jam'];
  } else if (c === 40021) {
    state = 'stopped';
    reasons = ['door-open'];
  } else if (c === 40038 || c === 40039) {
    state = 'stopped';
    reasons = ['toner-empty'];
  } else if (c >= 40000 && c < 41000) {
    state = 'stopped';
    reasons = ['other']; // stopped is the severity
  } else if (c >= 50000 && c < 60000) {
    state = 'stopped';
    reasons = ['other']; // stopped is the severity
  } else reasons = ['other-report'];
  if (s.online === false) {
    state = 'stopped';
    reasons = reasons.filter((r) => r !== 'none');
    reasons.push('offline-report');
  }
  return { state, reasons };
}

/** The codes the simulator reports (and a test maps back). */
export const PJL_CODE = { ready: 10001, processing: 10023, paperOut: 41000, offline: 10002 } as const;
