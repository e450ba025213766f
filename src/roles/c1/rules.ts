/**
 * When a join is a punch (pure): the first join of the calendar day, or a
 * join after `rejoinAfterMin` away, and only inside the working hours, all in
 * the site's time zone. The calendar day and the hours come from the wall
 * clock (they are wall-clock notions); "away for N minutes" is measured on
 * the monotonic clock, so a clock step never makes someone "away".
 */
import type { C1Config } from './config.js';
import { loadZone } from './zoneinfo.js';

export interface SubjectHistory {
  /** Calendar day (YYYY-MM-DD, site zone) of the last punch. */
  lastPunchDay?: string;
  /** Monotonic ms when the subject was last seen leaving (no phone present). */
  leftAtMono?: number;
}

export type JoinDecision = { punch: true; why: 'first_of_day' | 'rejoin' } | { punch: false; why: 'outside_hours' | 'already_today' };

const pad = (n: number) => String(n).padStart(2, '0');

/** The site's day and minute of the day: from the system's zone file, Intl only without one (zoneinfo.ts: memory). */
export function siteClock(wallMs: number, timeZone: string): { day: string; minutes: number } {
  const zone = loadZone(timeZone);
  if (zone) {
    const local = new Date(wallMs + zone.offsetAt(wallMs));
    return { day: `${local.getUTCFullYear()}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}`, minutes: local.getUTCHours() * 60 + local.getUTCMinutes() };
  }
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).formatToParts(wallMs);
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '00';
  return { day: `${get('year')}-${get('month')}-${get('day')}`, minutes: Number(get('hour')) * 60 + Number(get('minute')) };
}

const mins = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

export function inWorkingHours(minutes: number, wh: { from: string; to: string } | undefined): boolean {
  if (!wh) return true;
  const from = mins(wh.from);
  const to = mins(wh.to);
  return from <= to ? minutes >= from && minutes < to : minutes >= from || minutes < to;
}

export function decideJoin(rules: C1Config['rules'], timeZone: string, h: SubjectHistory, wallMs: number, mono: number): JoinDecision {
  const { day, minutes } = siteClock(wallMs, timeZone);
  if (!inWorkingHours(minutes, rules.workingHours)) return { punch: false, why: 'outside_hours' };
  if (rules.firstJoinOfDay && h.lastPunchDay !== day) return { punch: true, why: 'first_of_day' };
  if (!rules.firstJoinOfDay && h.lastPunchDay === undefined) return { punch: true, why: 'first_of_day' };
  if (rules.rejoinAfterMin > 0 && h.leftAtMono !== undefined && mono - h.leftAtMono >= rules.rejoinAfterMin * 60_000) return { punch: true, why: 'rejoin' };
  return { punch: false, why: 'already_today' };
}
