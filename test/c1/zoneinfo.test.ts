/**
 * The site clock from the system's zone files (src/roles/c1/zoneinfo.ts: no
 * ICU data resident), checked against Intl (ICU's own tz data) as the
 * reference: across DST changes, both hemispheres, half-hour zones, the past
 * (transition tables) and the future (the TZif footer's POSIX rule).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadZone, parsePosixTz } from '../../src/roles/c1/zoneinfo.js';

const ZONES = [
  'Europe/Berlin',
  'Asia/Singapore',
  'Asia/Shanghai',
  'America/New_York',
  'America/Sao_Paulo',
  'Australia/Sydney',
  'Australia/Lord_Howe',
  'Asia/Kolkata',
  'Asia/Kathmandu',
  'Pacific/Chatham',
  'America/Nuuk',
  'Africa/Casablanca',
  'Asia/Jerusalem',
  'Europe/London',
  'America/Santiago',
  'Pacific/Auckland',
  'UTC',
];

const formats = new Map<string, Intl.DateTimeFormat>();
function intlOffsetMin(tz: string, ms: number): number {
  let f = formats.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
    formats.set(tz, f);
  }
  const p = f.formatToParts(ms);
  const g = (t: string) => Number(p.find((x) => x.type === t)!.value);
  return Math.round((Date.UTC(g('year'), g('month') - 1, g('day'), g('hour') % 24, g('minute'), g('second')) - Math.floor(ms / 1000) * 1000) / 60_000);
}

/** The first minute in (lo, hi] where `f` differs from f(lo) (one change in the interval). */
function changeAt(f: (ms: number) => number, lo: number, hi: number): number {
  const v = f(lo);
  while (hi - lo > 60_000) {
    const mid = lo + Math.floor((hi - lo) / 120_000) * 60_000;
    if (f(mid) === v) lo = mid;
    else hi = mid;
  }
  return hi;
}

describe('zone offsets from /usr/share/zoneinfo agree with Intl', () => {
  it.each(ZONES)('%s: weekly from 1995 to 2060, and the minute of each change', (tz) => {
    const zone = loadZone(tz);
    expect(zone, `${tz} in /usr/share/zoneinfo (tzdata)`).toBeDefined();
    const ours = (ms: number) => zone!.offsetAt(ms) / 60_000;
    const theirs = (ms: number) => intlOffsetMin(tz, ms);
    const bad: string[] = [];
    const step = 7 * 86_400_000;
    for (let t = Date.UTC(1995, 0, 1); t < Date.UTC(2060, 0, 1) && bad.length < 5; t += step) {
      if (ours(t) !== theirs(t)) bad.push(`${new Date(t).toISOString()}: ${ours(t)} vs ${theirs(t)}`);
      // A change in the last week: at the same minute in both (07:00 on a DST morning must be right).
      if (ours(t - step) !== ours(t) || theirs(t - step) !== theirs(t)) {
        const a = changeAt(ours, t - step, t);
        const b = changeAt(theirs, t - step, t);
        if (a !== b) bad.push(`change near ${new Date(t).toISOString()}: ${new Date(a).toISOString()} vs ${new Date(b).toISOString()}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('names that are not zones, or climb out of the directory, are no zone', () => {
    for (const n of ['Mars/Olympus', '../../etc/passwd', 'Europe/../../etc/passwd', '', '/etc/passwd', 'Europe//Berlin']) expect(loadZone(n)).toBeUndefined();
  });

  it('a file that is not TZif is no zone (the caller falls back to Intl)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbw-tz-'));
    try {
      writeFileSync(join(dir, 'Fake'), 'not a zone file');
      expect(loadZone('Fake', dir)).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('POSIX TZ strings: Julian day rules and explicit DST offsets', () => {
    // J60 is 1 March in every year; a DST offset given explicitly (+30 min here).
    const r = parsePosixTz('<-03>3<-0230>2:30,J60/0,J300/0');
    expect(r.offsetAt(Date.UTC(2023, 2, 2) / 1000) / 60).toBe(-150);
    expect(r.offsetAt(Date.UTC(2023, 0, 15) / 1000) / 60).toBe(-180);
    expect(parsePosixTz('<+08>-8').offsetAt(0)).toBe(8 * 3600);
  });
});
