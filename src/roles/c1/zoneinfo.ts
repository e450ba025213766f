/**
 * The site's UTC offset from the system's time zone database
 * (/usr/share/zoneinfo, the tzdata package: TZif files as glibc reads them),
 * not from Intl: the first Intl.DateTimeFormat makes V8 load ICU's locale and
 * zone data, about 8 MB of resident memory for the life of the process on a
 * router that needs one offset (issue 11, idle RSS). Without a zone file
 * (no tzdata) the caller falls back to Intl.
 *
 * TZif (RFC 8536): the version 2+ block with 64-bit transition times when
 * present; past the last transition, the POSIX TZ string of the footer
 * ("CET-1CEST,M3.5.0,M10.5.0/3"), which slim tzdata files rely on for every
 * date after 2007.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Zone {
  /** The offset from UTC (ms) at `utcMs`: local time = utcMs + offsetAt(utcMs). */
  offsetAt(utcMs: number): number;
}

const UTC: Zone = { offsetAt: () => 0 };

/** IANA names only: letters, digits, _ + - and / between parts; nothing that climbs out of the directory. */
const ZONE_NAME = /^[A-Za-z0-9_+-]+(\/[A-Za-z0-9_+-]+)*$/;

const cache = new Map<string, Zone | undefined>();

/** The zone named `name` from `dir`; undefined: no such file there, or not a TZif file (the caller decides). */
export function loadZone(name: string, dir = '/usr/share/zoneinfo'): Zone | undefined {
  if (name === 'UTC' || name === 'Etc/UTC') return UTC;
  const key = `${dir}\u0000${name}`;
  if (cache.has(key)) return cache.get(key);
  let zone: Zone | undefined;
  if (ZONE_NAME.test(name) && !name.split('/').includes('..')) {
    try {
      zone = parseTzif(readFileSync(join(dir, name)));
    } catch {
      // Missing (no tzdata, an unknown name) or unreadable: undefined, and the caller falls back to Intl or refuses the name.
      zone = undefined;
    }
  }
  cache.set(key, zone);
  return zone;
}

// ------------------------------------------------------------------ TZif

interface Parsed {
  times: number[]; // transition times, s
  idx: number[]; // ttinfo index per transition
  offsets: number[]; // ttinfo UT offsets, s
  isDst: boolean[];
  footer: PosixRule | undefined;
}

/** Parse a TZif file; throws on anything that is not one. */
export function parseTzif(buf: Buffer): Zone {
  if (buf.toString('latin1', 0, 4) !== 'TZif') throw new Error('not a TZif file');
  const version = buf[4] ?? 0;
  const header = (at: number) => {
    const n = (i: number) => buf.readUInt32BE(at + 20 + i * 4);
    return { isut: n(0), isstd: n(1), leap: n(2), time: n(3), type: n(4), char: n(5) };
  };
  const h1 = header(0);
  const v1Len = 44 + h1.time * 5 + h1.type * 6 + h1.char + h1.leap * 8 + h1.isstd + h1.isut;
  let at = 0;
  let h = h1;
  let timeSize = 4;
  if (version >= 0x32) {
    at = v1Len;
    h = header(at);
    timeSize = 8;
    if (buf.toString('latin1', at, at + 4) !== 'TZif') throw new Error('bad TZif v2 header');
  }
  let p = at + 44;
  const times: number[] = [];
  for (let i = 0; i < h.time; i++, p += timeSize) times.push(timeSize === 8 ? Number(buf.readBigInt64BE(p)) : buf.readInt32BE(p));
  const idx: number[] = [];
  for (let i = 0; i < h.time; i++, p++) idx.push(buf[p]!);
  const offsets: number[] = [];
  const isDst: boolean[] = [];
  for (let i = 0; i < h.type; i++, p += 6) {
    offsets.push(buf.readInt32BE(p));
    isDst.push(buf[p + 4] === 1);
  }
  if (offsets.length === 0) throw new Error('TZif without local time types');
  p += h.char + h.leap * (timeSize + 4) + h.isstd + h.isut;
  let footer: PosixRule | undefined;
  if (version >= 0x32 && buf[p] === 0x0a) {
    const end = buf.indexOf(0x0a, p + 1);
    const tz = buf.toString('latin1', p + 1, end < 0 ? buf.length : end);
    if (tz) footer = parsePosixTz(tz);
  }
  return zoneOf({ times, idx, offsets, isDst, footer });
}

function zoneOf(z: Parsed): Zone {
  // Before the first transition: the first standard-time type (RFC 8536 §3.2: type 0 in practice).
  const first = z.offsets[Math.max(0, z.isDst.indexOf(false))]!;
  return {
    offsetAt(utcMs: number): number {
      const t = Math.floor(utcMs / 1000);
      const n = z.times.length;
      if (n === 0 || t >= z.times[n - 1]!) {
        if (z.footer) return z.footer.offsetAt(t) * 1000;
        if (n === 0) return first * 1000;
      }
      if (t < z.times[0]!) return first * 1000;
      let lo = 0;
      let hi = n - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (z.times[mid]! <= t) lo = mid;
        else hi = mid - 1;
      }
      return z.offsets[z.idx[lo]!]! * 1000;
    },
  };
}

// ------------------------------------------------------------------ POSIX TZ strings (the TZif footer)

interface PosixRule {
  /** UT offset (s) at UTC time t (s). */
  offsetAt(t: number): number;
}

type DateRule = { kind: 'M'; m: number; w: number; d: number } | { kind: 'J'; n: number } | { kind: 'N'; n: number };

/** "CET-1CEST,M3.5.0,M10.5.0/3", "<+08>-8", "EST5EDT,M3.2.0,M11.1.0", "IST-2IDT,M3.4.4/26,M10.5.0". */
export function parsePosixTz(s: string): PosixRule {
  let i = 0;
  const name = () => {
    if (s[i] === '<') {
      const e = s.indexOf('>', i);
      if (e < 0) throw new Error(`bad TZ string ${s}`);
      i = e + 1;
      return;
    }
    const m = /^[A-Za-z]{3,}/.exec(s.slice(i));
    if (!m) throw new Error(`bad TZ string ${s}`);
    i += m[0].length;
  };
  /** [+-]hh[:mm[:ss]] in seconds. */
  const time = (): number => {
    const m = /^([+-]?)(\d{1,3})(?::(\d{1,2}))?(?::(\d{1,2}))?/.exec(s.slice(i));
    if (!m) throw new Error(`bad TZ string ${s}`);
    i += m[0].length;
    const v = Number(m[2]) * 3600 + Number(m[3] ?? 0) * 60 + Number(m[4] ?? 0);
    return m[1] === '-' ? -v : v;
  };
  name();
  const std = -time(); // POSIX offsets are west-positive
  if (i >= s.length) return { offsetAt: () => std };
  name();
  let dst = std + 3600;
  if (s[i] !== ',' && i < s.length) dst = -time();
  if (s[i] !== ',') throw new Error(`TZ string without rules: ${s}`);
  i++;
  const dateRule = (): { date: DateRule; at: number } => {
    let date: DateRule;
    const m = /^M(\d{1,2})\.(\d)\.(\d)/.exec(s.slice(i));
    const j = /^J(\d{1,3})/.exec(s.slice(i));
    const n = /^(\d{1,3})/.exec(s.slice(i));
    if (m) date = { kind: 'M', m: Number(m[1]), w: Number(m[2]), d: Number(m[3]) };
    else if (j) date = { kind: 'J', n: Number(j[1]) };
    else if (n) date = { kind: 'N', n: Number(n[1]) };
    else throw new Error(`bad TZ rule in ${s}`);
    i += (m ?? j ?? n)![0].length;
    let at = 7200;
    if (s[i] === '/') {
      i++;
      at = time();
    }
    return { date, at };
  };
  const start = dateRule();
  if (s[i] !== ',') throw new Error(`bad TZ string ${s}`);
  i++;
  const end = dateRule();
  /** UTC seconds of a rule's moment in `year`, the local time `at` read in the offset in force before it. */
  const moment = (r: { date: DateRule; at: number }, year: number, before: number) => dayOf(r.date, year) + r.at - before;
  return {
    offsetAt(t: number): number {
      const year = new Date(t * 1000 + std * 1000).getUTCFullYear();
      const startT = moment(start, year, std);
      const endT = moment(end, year, dst);
      // Northern rules: DST between start and end; southern (start after end): outside them.
      const inDst = startT < endT ? t >= startT && t < endT : !(t >= endT && t < startT);
      return inDst ? dst : std;
    },
  };
}

/** Seconds since the epoch (UTC midnight) of a rule's day in `year`. */
function dayOf(r: DateRule, year: number): number {
  const jan1 = Date.UTC(year, 0, 1) / 1000;
  if (r.kind === 'N') return jan1 + r.n * 86400; // zero-based, counting 29 February
  if (r.kind === 'J') {
    // one-based, never counting 29 February
    const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
    return jan1 + (r.n - 1 + (leap && r.n >= 60 ? 1 : 0)) * 86400;
  }
  // Mm.w.d: day d (0 = Sunday) of week w (5 = the last) of month m.
  const first = new Date(Date.UTC(year, r.m - 1, 1));
  let day = 1 + ((r.d - first.getUTCDay() + 7) % 7) + (r.w - 1) * 7;
  const days = new Date(Date.UTC(year, r.m, 0)).getUTCDate();
  while (day > days) day -= 7;
  return Date.UTC(year, r.m - 1, day) / 1000;
}
