import { describe, expect, it } from 'vitest';
import { sameDevice } from '../../src/roles/c1/fingerprint.js';
import { decideJoin, inWorkingHours, siteClock } from '../../src/roles/c1/rules.js';

const rules = { firstJoinOfDay: true, rejoinAfterMin: 30 };
// 2026-12-01 07:30 UTC = 15:30 in Singapore
const T = Date.UTC(2026, 11, 1, 7, 30);

describe('join rules', () => {
  it('the calendar day and hour are the site time zone', () => {
    expect(siteClock(T, 'Asia/Singapore')).toEqual({ day: '2026-12-01', minutes: 15 * 60 + 30 });
    expect(siteClock(Date.UTC(2026, 11, 1, 23, 30), 'Asia/Singapore').day).toBe('2026-12-02');
    expect(siteClock(Date.UTC(2026, 11, 1, 23, 30), 'UTC').day).toBe('2026-12-01');
  });
  it('first join of the day punches; a second one the same day does not, unless away long enough', () => {
    expect(decideJoin(rules, 'UTC', {}, T, 0)).toEqual({ punch: true, why: 'first_of_day' });
    expect(decideJoin(rules, 'UTC', { lastPunchDay: '2026-12-01', leftAtMono: 0 }, T, 29 * 60_000)).toEqual({ punch: false, why: 'already_today' });
    expect(decideJoin(rules, 'UTC', { lastPunchDay: '2026-12-01', leftAtMono: 0 }, T, 30 * 60_000)).toEqual({ punch: true, why: 'rejoin' });
    expect(decideJoin({ ...rules, rejoinAfterMin: 0 }, 'UTC', { lastPunchDay: '2026-12-01', leftAtMono: 0 }, T, 10 * 3_600_000)).toEqual({ punch: false, why: 'already_today' });
    // a new day in the site zone: first join again (Singapore is already on the 2nd)
    expect(decideJoin(rules, 'Asia/Singapore', { lastPunchDay: '2026-12-01' }, Date.UTC(2026, 11, 1, 23, 30), 0)).toEqual({ punch: true, why: 'first_of_day' });
  });
  it('working hours, in the site zone, also across midnight', () => {
    const wh = { ...rules, workingHours: { from: '07:00', to: '18:00' } };
    expect(decideJoin(wh, 'UTC', {}, T, 0).punch).toBe(true); // 07:30 UTC
    expect(decideJoin(wh, 'Asia/Singapore', {}, T, 0).punch).toBe(true); // 15:30
    expect(decideJoin(wh, 'America/New_York', {}, T, 0)).toEqual({ punch: false, why: 'outside_hours' }); // 02:30
    expect(inWorkingHours(23 * 60, { from: '22:00', to: '06:00' })).toBe(true);
    expect(inWorkingHours(5 * 60, { from: '22:00', to: '06:00' })).toBe(true);
    expect(inWorkingHours(12 * 60, { from: '22:00', to: '06:00' })).toBe(false);
  });
});

describe('same-device check for re-enrolment (never a guess)', () => {
  const old = { mac: 'da:00:00:00:00:01', fp: { clientId: '01:da:00:00:00:00:01', hostname: 'phone-3', requestedOptions: '1,121,3,6,15' } };
  it('same hostname and options under a new private MAC: the same phone', () => {
    expect(sameDevice(old, { mac: 'de:00:00:00:00:02', fp: { clientId: '01:de:00:00:00:00:02', hostname: 'phone-3', requestedOptions: '1,121,3,6,15' } })).toBe(true);
  });
  it('only the option list in common (every phone of a model has it): not enough', () => {
    expect(sameDevice(old, { mac: 'de:00:00:00:00:02', fp: { requestedOptions: '1,121,3,6,15' } })).toBe(false);
    expect(sameDevice(old, { mac: 'de:00:00:00:00:02', fp: { clientId: '01:de:00:00:00:00:02' } })).toBe(false);
  });
  it('any field that differs: not the same phone', () => {
    expect(sameDevice(old, { mac: 'de:00:00:00:00:02', fp: { hostname: 'phone-3', requestedOptions: '1,3,6' } })).toBe(false);
    expect(sameDevice(old, { mac: 'de:00:00:00:00:02', fp: { hostname: 'phone-4', requestedOptions: '1,121,3,6,15' } })).toBe(false);
  });
  it('a stable client id that is not the MAC counts', () => {
    const a = { mac: 'da:00:00:00:00:01', fp: { clientId: 'ff:12:34:56:78:00:01:00:01' } };
    expect(sameDevice(a, { mac: 'de:00:00:00:00:02', fp: { clientId: 'ff:12:34:56:78:00:01:00:01' } })).toBe(true);
  });
});
