// The shared role kit: punch gate (repeat window on the monotonic clock),
// full-jitter backoff, and the peripheral supervisor's state machine.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { PunchMethod } from '../../src/proto/index.js';
import { Backoff } from '../../src/roles/kit/backoff.js';
import { PunchGate } from '../../src/roles/kit/punch-gate.js';
import { PERIPHERAL_TRANSITIONS, PeripheralSupervisor, type PeripheralStatus, type SupervisedPeripheral } from '../../src/roles/kit/supervisor.js';
import { TallyboxError } from '../../src/util/errors.js';
import { waitUntil } from '../helpers/ports.js';

afterEach(() => {
  vi.useRealTimers();
});

const FACE = PunchMethod.PUNCH_METHOD_FACE;

function sinkWith(refuse?: () => boolean) {
  const punches: unknown[] = [];
  return {
    punches,
    async punch(p: unknown) {
      if (refuse?.()) throw new TallyboxError('DISK_FULL', 'no space');
      punches.push(p);
      return { eventId: `e${punches.length}` };
    },
  };
}

describe('punch gate', () => {
  it('repeat window runs on the monotonic clock: wall-clock steps back and forward change nothing', async () => {
    let mono = 1000;
    let wall = Date.UTC(2026, 11, 1, 9, 0, 0);
    const touched: number[] = [];
    const sink = sinkWith();
    const gate = new PunchGate({ sink, lastSeen: { touchSubject: async (_o, _s, at) => void touched.push(at) }, repeatWindowSec: 60, monotonic: () => mono, wallClock: () => wall, touchFlushMs: 10_000 });
    expect(await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).toMatchObject({ verdict: 'punch', eventId: 'e1' });
    // NTP steps the wall clock back an hour, 61 s later: a new punch (the old, wall-clock code suppressed it for an hour).
    wall -= 3_600_000;
    mono += 61_000;
    expect(await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).toMatchObject({ verdict: 'punch' });
    // The wall clock jumps a day forward, 10 s later: still the same punch.
    wall += 86_400_000;
    mono += 10_000;
    expect(await gate.submit({ orgId: 'o', subjectId: 's', method: PunchMethod.PUNCH_METHOD_CARD })).toEqual({ verdict: 'repeat' });
    // Someone else is not affected.
    expect(await gate.submit({ orgId: 'o', subjectId: 't', method: FACE })).toMatchObject({ verdict: 'punch' });
    expect(gate.stats).toEqual({ punches: 3, repeats: 1, refused: 0 });
    // Last-seen: wall-clock stamps (they are timestamps), batched into one write per person.
    expect(touched).toEqual([]);
    await gate.flushLastSeen();
    expect(touched.sort()).toEqual([wall, wall - 86_400_000 + 0].sort());
  });

  it('the default clock is monotonic: with Date stepped back by vi fake timers, the window still ends on time', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.UTC(2026, 11, 1, 12, 0, 0));
    const gate = new PunchGate({ sink: sinkWith(), repeatWindowSec: 0.05 });
    expect((await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).verdict).toBe('punch');
    vi.setSystemTime(Date.UTC(2026, 11, 1, 11, 0, 0)); // one hour back
    expect((await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).verdict).toBe('repeat');
    await new Promise((r) => setTimeout(r, 70)); // real time passes (setTimeout is not faked)
    expect((await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).verdict).toBe('punch');
    vi.setSystemTime(Date.UTC(2026, 11, 2, 12, 0, 0)); // a day forward
    expect((await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).verdict).toBe('repeat');
  });

  it('a refused punch does not start the window; forget() and a 0 window; a setting read at every identification', async () => {
    let refuse = true;
    let mono = 0;
    let windowSec = 60;
    const gate = new PunchGate({ sink: sinkWith(() => refuse), repeatWindowSec: () => windowSec, monotonic: () => mono });
    expect(await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).toEqual({ verdict: 'refused', code: 'DISK_FULL' });
    refuse = false;
    expect((await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).verdict).toBe('punch');
    expect((await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).verdict).toBe('repeat');
    gate.forget('o', ['s']);
    expect((await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).verdict).toBe('punch');
    windowSec = 0;
    expect((await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).verdict).toBe('punch');
    windowSec = 5;
    mono += 6000;
    expect((await gate.submit({ orgId: 'o', subjectId: 's', method: FACE })).verdict).toBe('punch');
    expect(gate.stats.refused).toBe(1);
  });

  it('two identifications of one person arriving together are one punch', async () => {
    const sink = sinkWith();
    const gate = new PunchGate({ sink, repeatWindowSec: 60 });
    const [a, b] = await Promise.all([gate.submit({ orgId: 'o', subjectId: 's', method: FACE }), gate.submit({ orgId: 'o', subjectId: 's', method: PunchMethod.PUNCH_METHOD_FINGERPRINT })]);
    expect([a.verdict, b.verdict].sort()).toEqual(['punch', 'repeat']);
    expect(sink.punches).toHaveLength(1);
  });
});

describe('full-jitter backoff', () => {
  it('draws from [floor, ceiling], the ceiling doubling to max; reset starts over', () => {
    let r = 0.9999999;
    const b = new Backoff({ minMs: 100, maxMs: 1000, random: () => r });
    expect([b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 800, 1000]);
    r = 0;
    expect(b.next()).toBe(50); // the floor: never a busy loop
    b.reset();
    r = 0.5;
    expect(b.next()).toBe(75);
    const real = new Backoff({ minMs: 100, maxMs: 30_000 });
    for (let i = 0; i < 50; i++) {
      const ceil = real.ceilingMs;
      const d = real.next();
      expect(d).toBeGreaterThanOrEqual(50);
      expect(d).toBeLessThanOrEqual(ceil);
    }
  });
});

/** A peripheral whose behaviour the test sets: present or not, answering or hung, lost on demand. */
class FakePeripheral implements SupervisedPeripheral {
  readonly name = 'fake';
  present = true;
  hung = false;
  opens = 0;
  probes = 0;
  #lost: ((e: Error) => void) | null = null;
  async open(): Promise<string> {
    this.opens++;
    if (!this.present) throw new TallyboxError('HID_DEVICE_NOT_FOUND', 'not there');
    if (this.hung) throw new TallyboxError('BRIDGE_TIMEOUT', 'no answer');
    return 'fake 1.0';
  }
  async probe(): Promise<void> {
    this.probes++;
    if (!this.present) throw new TallyboxError('HID_DEVICE_GONE', 'gone');
    if (this.hung) throw new TallyboxError('BRIDGE_TIMEOUT', 'no answer');
  }
  classify(err: unknown) {
    const code = (err as TallyboxError).code;
    return code === 'HID_DEVICE_NOT_FOUND' ? ('absent' as const) : code === 'BRIDGE_TIMEOUT' ? ('glitch' as const) : ('gone' as const);
  }
  watch(fn: (e: Error) => void) {
    this.#lost = fn;
    return () => void (this.#lost = null);
  }
  unplug(): void {
    this.present = false;
    this.#lost?.(new Error('unplugged'));
  }
}

function supervised(p: FakePeripheral, opts: { heartbeatMs?: number } = {}) {
  const state: Array<{ online: boolean; detail: string }> = [];
  const statuses: PeripheralStatus[] = [];
  const sup = new PeripheralSupervisor({ peripheral: p, sink: { setPeripheral: (_n, online, detail = '') => void state.push({ online, detail }) }, backoff: { minMs: 20, maxMs: 80 }, heartbeatMs: opts.heartbeatMs ?? 40 });
  sup.on('status', (s) => statuses.push(s));
  return { sup, state, statuses, online: () => state.at(-1)?.online };
}

describe('peripheral supervisor', () => {
  it('transitions are explicit and every state is reachable', () => {
    const all = Object.keys(PERIPHERAL_TRANSITIONS) as PeripheralStatus[];
    for (const s of all) for (const t of PERIPHERAL_TRANSITIONS[s]) expect(all).toContain(t);
    expect(PERIPHERAL_TRANSITIONS.stopped).toEqual(['opening']);
  });

  it('absent at start → retried with backoff → ready once plugged in; reported in the device state', async () => {
    const p = new FakePeripheral();
    p.present = false;
    const { sup, state, online } = supervised(p);
    expect(await sup.start()).toBe('absent');
    expect(state.at(-1)).toMatchObject({ online: false });
    expect(state.at(-1)!.detail).toBe('absent: HID_DEVICE_NOT_FOUND');
    await waitUntil(() => p.opens >= 3, 2000, 'retries');
    // The same fault at every retry: reported once, not once per retry.
    expect(state).toHaveLength(1);
    p.present = true;
    await waitUntil(() => sup.status === 'ready', 2000, 'ready');
    expect(online()).toBe(true);
    expect(state.at(-1)!.detail).toBe('fake 1.0');
    await sup.stop();
  });

  it('unplugged (the driver says so) → offline at once; replugged → ready', async () => {
    const p = new FakePeripheral();
    const { sup, online, statuses } = supervised(p, { heartbeatMs: 0 });
    await sup.start();
    p.unplug();
    expect(sup.status).toBe('offline');
    expect(online()).toBe(false);
    p.present = true;
    await waitUntil(() => sup.status === 'ready', 2000, 'ready again');
    expect(online()).toBe(true);
    expect(statuses).toEqual(['opening', 'ready', 'offline', 'opening', 'ready']);
    await sup.stop();
  });

  it('hung (answers nothing, nobody uses it): the heartbeat finds it, degraded then offline; answering again → ready', async () => {
    const p = new FakePeripheral();
    const { sup, online, statuses } = supervised(p, { heartbeatMs: 40 });
    await sup.start();
    p.hung = true;
    await waitUntil(() => sup.status === 'offline', 2000, 'offline after the probes');
    expect(statuses).toContain('degraded');
    expect(online()).toBe(false);
    expect(sup.detail).toMatch(/^offline: BRIDGE_TIMEOUT/);
    p.hung = false;
    await waitUntil(() => sup.status === 'ready', 2000, 'ready again');
    expect(online()).toBe(true);
    await sup.stop();
  });

  it('silently gone (no error, e.g. a reader dropped from the device list): the heartbeat finds it', async () => {
    const p = new FakePeripheral();
    const { sup, online } = supervised(p, { heartbeatMs: 30 });
    await sup.start();
    p.present = false; // no watch() event: only the probe can tell
    await waitUntil(() => online() === false, 2000, 'offline');
    await sup.stop();
  });

  it('activity postpones the probe; a glitch heals on the next success; stop() ends the retries', async () => {
    const p = new FakePeripheral();
    const { sup } = supervised(p, { heartbeatMs: 60 });
    await sup.start();
    const until = performance.now() + 200;
    while (performance.now() < until) {
      sup.alive();
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(p.probes).toBe(0);
    sup.fault(new TallyboxError('BRIDGE_TIMEOUT', 'x'));
    expect(sup.status).toBe('degraded');
    sup.alive();
    expect(sup.status).toBe('ready');
    p.present = false;
    p.unplug();
    await sup.stop();
    const opens = p.opens;
    await new Promise((r) => setTimeout(r, 150));
    expect(p.opens).toBe(opens);
    expect(sup.status).toBe('stopped');
  });
});

describe('supervisor adapters for the device kinds to come (C1 presence sources, P1 printers)', () => {
  it('a presence source whose control socket vanishes is absent, then ready when it is back', async () => {
    const { presenceSourcePeripheral } = await import('../../src/roles/kit/peripherals.js');
    let there = true;
    const source = {
      description: 'hostapd:wlan0',
      on: () => undefined,
      off: () => undefined,
      start: async () => {
        if (!there) throw Object.assign(new Error('no socket'), { code: 'ENOENT' });
      },
      stop: async () => undefined,
      probe: async () => {
        if (!there) throw Object.assign(new Error('no socket'), { code: 'ENOENT' });
      },
    };
    const states: Array<{ online: boolean; detail: string }> = [];
    const sup = new PeripheralSupervisor({
      peripheral: presenceSourcePeripheral({ source, name: 'wifi:wlan0' }),
      sink: { setPeripheral: (_n, online, detail = '') => void states.push({ online, detail }) },
      backoff: { minMs: 20, maxMs: 40 },
      heartbeatMs: 30,
    });
    expect(await sup.start()).toBe('ready');
    there = false;
    await waitUntil(() => sup.status === 'absent', 2000, 'absent');
    expect(states.at(-1)).toEqual({ online: false, detail: 'absent: ENOENT' });
    there = true;
    await waitUntil(() => sup.status === 'ready', 2000, 'ready again');
    await sup.stop();
  });

  it('a printer out of paper is degraded (still online, reasons in the detail), then offline if it stays so; unreachable is offline', async () => {
    const { printerPeripheral } = await import('../../src/roles/kit/peripherals.js');
    let st: { state: 'idle' | 'processing' | 'stopped'; reasons: string[] } = { state: 'idle', reasons: [] };
    let reachable = true;
    const printer = {
      description: 'ipp://printer',
      probe: async () => {
        if (!reachable) throw Object.assign(new Error('refused'), { code: 'ECONNRESET' });
        return st;
      },
    };
    const sup = new PeripheralSupervisor({ peripheral: printerPeripheral({ printer }), sink: { setPeripheral: () => undefined }, backoff: { minMs: 20, maxMs: 40 }, heartbeatMs: 30, failuresBeforeOffline: 3 });
    expect(await sup.start()).toBe('ready');
    expect(sup.detail).toBe('ipp://printer: idle');
    st = { state: 'stopped', reasons: ['media-empty'] };
    await waitUntil(() => sup.status === 'degraded', 2000, 'degraded');
    expect(sup.detail).toMatch(/^degraded: PRINTER_STOPPED/);
    st = { state: 'idle', reasons: [] };
    await waitUntil(() => sup.status === 'ready', 2000, 'ready');
    reachable = false;
    await waitUntil(() => sup.status === 'offline', 2000, 'offline');
    reachable = true;
    await waitUntil(() => sup.status === 'ready', 2000, 'ready again');
    await sup.stop();
  });
});

describe('peripheral supervisor: a one-off attempt before start', () => {
  it('an attempt before start (an erasure at boot) brings it up once, without retries; start() keeps it and watches', async () => {
    const p = new FakePeripheral();
    p.present = false;
    const { sup, statuses } = supervised(p, { heartbeatMs: 30 });
    expect(await sup.attempt()).toBe('absent');
    await new Promise((r) => setTimeout(r, 100));
    expect(p.opens).toBe(1); // not started: no retries
    p.present = true;
    expect(await sup.attempt()).toBe('ready');
    expect(await sup.start()).toBe('ready');
    expect(p.opens).toBe(2);
    expect(statuses).toEqual(['opening', 'absent', 'opening', 'ready']);
    p.hung = true;
    await waitUntil(() => sup.status === 'offline', 2000, 'the heartbeat runs after start()');
    await sup.stop();
  });
});
