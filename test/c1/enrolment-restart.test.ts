/**
 * Enrolment windows survive a restart (issue 11): the agent with its C1 role
 * (the `tallybox run` start path) stopped and started again on the same data
 * directory, against the cloud emulator and the simulated office. A restored
 * window enrols the next phone that arrives, never one that was already
 * associated when the agent came back; a window whose time ran out while the
 * agent was down ends EXPIRED; a corrupt window file restores nothing and
 * says so in the log.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sleep } from '../../src/cli/demo-kit.js';
import { startC1Stack, type C1Stack, type C1StackOptions } from '../../src/cli/demo-c1.js';
import { purgeOrg } from '../../src/cli/purge.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { filesUnder } from '../../src/decommission/engine.js';
import { ResultCode, WifiEnrolmentState, type CommandResult } from '../../src/proto/index.js';
import { wifiCredentialValue } from '../../src/roles/c1/credential.js';
import { windowFile } from '../../src/roles/c1/window-store.js';
import type { WifiOffice } from '../../simulators/wifi/office.js';
import { writeConfig } from '../helpers/agent-process.js';
import { captureLogger, type Line } from '../link/capture-logger.js';

const stacks: C1Stack[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const s of stacks.splice(0)) await s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function until<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, what: string, ms = 20_000): Promise<T> {
  const end = performance.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (performance.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

const windowEnd = (stack: C1Stack, armedCounter: number): CommandResult | undefined =>
  stack.dev.sink.commandResults().find((r) => r.counter === 0 && r.wifiEnrolment?.armedCounter === armedCounter && r.wifiEnrolment.state !== WifiEnrolmentState.WIFI_ENROLMENT_STATE_ARMED);

async function start(dir: string, more: Partial<C1StackOptions> = {}): Promise<C1Stack> {
  const s = await startC1Stack({ dir, c1: { enrolment: { ambiguityGuardSec: 0.3 } }, ...more });
  stacks.push(s);
  return s;
}

/** First run: arm a window on "Office" for sub-ana and stop the agent (the role saves the window). */
async function armAndStop(windowSec: number, more?: (first: C1Stack) => Promise<void>): Promise<{ dir: string; dataDir: string; counter: number; armedAt: number; config: ConfigInput }> {
  const dir = mkdtempSync(join(tmpdir(), 'tbw-restart-'));
  dirs.push(dir);
  const first = await start(dir);
  await more?.(first);
  const armed = await first.command({ subjectUpsert: { subjectId: 'sub-ana', displayName: 'Ana', wifiEnrol: { ssid: 'Office', windowSec } } });
  const armedAt = performance.now();
  expect(armed.reason).toBe('wifi_enrolment_armed');
  const dataDir = first.dev.dataDir;
  const config = structuredClone(first.dev.agent.config) as ConfigInput;
  expect(existsSync(windowFile(dataDir))).toBe(true);
  stacks.splice(stacks.indexOf(first), 1);
  await first.close();
  // The window outlives the stop: still in the file, and no CANCELLED result was sent for it.
  expect(existsSync(windowFile(dataDir))).toBe(true);
  expect(windowEnd(first, armed.counter)).toBeUndefined();
  return { dir, dataDir, counter: armed.counter, armedAt, config };
}

/** A phone that was on the Wi-Fi when the agent came back: listed by hostapd at attach, not a new arrival. */
const strangerAlreadyThere = (office: WifiOffice) => {
  office.addPhone({ id: 'stranger' });
  office.join('stranger', 'wlan0');
};

describe('enrolment windows across a restart', () => {
  it('restart mid-window: still armed, a phone already associated is not taken, the next new phone is enrolled (ENROLLED result as usual)', async () => {
    const { dir, counter } = await armAndStop(300);
    const lines: Line[] = [];
    const second = await start(dir, { logger: captureLogger(lines), beforeRole: strangerAlreadyThere });
    const { office, role, dev } = second;
    const stranger = office.phone('stranger');
    expect(role.windows.armed).toBe(1);
    const restored = lines.find((l) => l.fields.event === 'wifi_enrolment_restored');
    expect(restored?.fields).toMatchObject({ subjectId: 'sub-ana', ssid: 'Office' });
    expect(Number(restored?.fields.remainingSec)).toBeLessThanOrEqual(300);
    // The stranger is learnt from hostapd's station list (the catch-up after the attach) …
    await until(() => role.tracker.isPresent(stranger.mac), 'the stranger is known to be present');
    await role.settled();
    await sleep(600); // past the ambiguity guard: had the stranger counted, the window would have closed by now
    await role.settled();
    expect(windowEnd(second, counter)).toBeUndefined();
    expect(role.windows.armed).toBe(1);

    // … the next phone that arrives is Ana's.
    const ana = office.addPhone({ id: 'ana' });
    office.join('ana', 'wlan1');
    const end = await until(() => windowEnd(second, counter), 'the restored window ends');
    expect(end.reason).toBe('wifi_enrolled');
    expect(end.wifiEnrolment).toMatchObject({ state: WifiEnrolmentState.WIFI_ENROLMENT_STATE_ENROLLED, subjectId: 'sub-ana', ssid: 'Office', armedCounter: counter });
    expect(await dev.vault!.lookupCredential(second.orgId, 'wifi_mac', wifiCredentialValue(ana.mac, 'Office'))).toBe('sub-ana');
    for (const v of [stranger.mac, wifiCredentialValue(stranger.mac, 'Office')]) expect(await dev.vault!.lookupCredential(second.orgId, 'wifi_mac', v)).toBeUndefined();
    // Ended: the file is gone (nothing to restore next time); it never held a MAC.
    expect(existsSync(windowFile(dev.dataDir))).toBe(false);
  });

  it('restart after the deadline: EXPIRED at start, nothing enrolled (not even a phone arriving at once)', async () => {
    const { dir, counter, armedAt } = await armAndStop(2);
    await until(() => performance.now() - armedAt > 2_500, 'the window would have ended');
    const lines: Line[] = [];
    const second = await start(dir, { logger: captureLogger(lines), beforeRole: strangerAlreadyThere });
    expect(second.role.windows.armed).toBe(0);
    const late = second.office.addPhone({ id: 'late' });
    second.office.join('late', 'wlan0');
    const end = await until(() => windowEnd(second, counter), 'the EXPIRED result');
    expect(end.code).toBe(ResultCode.RESULT_CODE_FAILED);
    expect(end.reason).toBe('wifi_enrolment_expired');
    expect(end.detail).toBe('the window ended while the agent was stopped');
    expect(end.wifiEnrolment).toMatchObject({ state: WifiEnrolmentState.WIFI_ENROLMENT_STATE_EXPIRED, subjectId: 'sub-ana', ssid: 'Office' });
    await sleep(600);
    await second.role.settled();
    for (const p of [late, second.office.phone('stranger')]) expect(await second.dev.vault!.lookupCredential(second.orgId, 'wifi_mac', wifiCredentialValue(p.mac, 'Office'))).toBeUndefined();
    expect(second.role.stats.enrolled).toBe(0);
    expect(lines.find((l) => l.fields.event === 'wifi_enrolment_expired')?.fields).toMatchObject({ subjectId: 'sub-ana', why: 'the window ended while the agent was stopped' });
  });

  it('restart after a reboot without a synchronised clock: EXPIRED (the downtime is unknown), nothing enrolled', async () => {
    const { dir, counter } = await armAndStop(300);
    const second = await start(dir, { role: { clockSynced: () => false, checkpointClock: (wallSynced) => ({ bootId: 'another-boot', monoMs: 1_000, wallMs: Date.now(), wallSynced }) } });
    expect(second.role.windows.armed).toBe(0);
    const end = await until(() => windowEnd(second, counter), 'the EXPIRED result');
    expect(end.wifiEnrolment?.state).toBe(WifiEnrolmentState.WIFI_ENROLMENT_STATE_EXPIRED);
    expect(end.detail).toMatch(/without a synchronised clock/);
  });

  it.each([
    ['truncated', (text: string) => text.slice(0, Math.floor(text.length / 2))],
    ['zero length', () => ''],
  ])('a %s window file: a clear error in the log, no window restored, nobody enrolled', async (_name, damage) => {
    const { dir, dataDir, counter } = await armAndStop(300);
    const file = windowFile(dataDir);
    const text = readFileSync(file, 'utf8');
    writeFileSync(file, damage(text));
    const lines: Line[] = [];
    const second = await start(dir, { logger: captureLogger(lines) });
    const err = lines.find((l) => l.fields.event === 'wifi_enrolment_windows_unreadable');
    expect(err?.level).toBe('error');
    expect(err?.fields.code).toBe('C1_WINDOWS_CORRUPT');
    expect(err?.msg).toMatch(/^tallybox: C1_WINDOWS_CORRUPT: .*no enrolment window restored/);
    expect(second.role.windows.armed).toBe(0);
    expect(existsSync(`${file}.corrupt`)).toBe(true);
    const newcomer = second.office.addPhone({ id: 'newcomer' });
    second.office.join('newcomer', 'wlan0');
    await until(() => second.role.tracker.isPresent(newcomer.mac), 'the newcomer is present');
    await sleep(600);
    await second.role.settled();
    expect(await second.dev.vault!.lookupCredential(second.orgId, 'wifi_mac', wifiCredentialValue(newcomer.mac, 'Office'))).toBeUndefined();
    expect(second.role.stats.enrolled).toBe(0);
    expect(windowEnd(second, counter)).toBeUndefined();
  });
});

describe('an organisation purged while the device is offline', () => {
  it('`tallybox purge --org` with the agent stopped: the armed window goes with the org (not in the file, nothing enrolled after the restart, no trace of the subject in the data directory)', async () => {
    // Bo's phone is enrolled too, so the org has credentials (HMACs) to erase besides Ana's window.
    const bo = { mac: '' };
    const { dir, dataDir, counter, config } = await armAndStop(300, async (first) => {
      bo.mac = first.office.addPhone({ id: 'bo' }).mac;
      expect(await first.enrol('sub-bo', bo.mac)).toBe(ResultCode.RESULT_CODE_OK);
    });
    const before = readFileSync(windowFile(dataDir));
    expect(before.toString('utf8')).toContain('sub-ana');
    // The scan below finds a subject id where there is one (a check that cannot fail proves nothing).
    expect(filesUnder(dataDir).some((f) => readFileSync(f).includes(Buffer.from('sub-ana')))).toBe(true);

    const out: string[] = [];
    const code = await purgeOrg({ configFile: writeConfig(dir, config), orgId: 'acme', yes: true, out: (l) => out.push(l), err: (l) => out.push(l) });
    expect(code, out.join('\n')).toBe(0);
    expect(JSON.parse(out.at(-1)!)).toMatchObject({ purged: true, verification: 'verified' });

    // The saved window is gone with the organisation, and no file in the data directory names its subjects.
    expect(existsSync(windowFile(dataDir)) && readFileSync(windowFile(dataDir), 'utf8').includes('sub-ana')).toBe(false);
    // The command journal included: the result that armed the window named its subject (src/link/commands/erasure.ts).
    const scanned = filesUnder(dataDir).filter((f) => statSync(f).size > 0);
    expect(scanned.some((f) => f.endsWith('vault.db'))).toBe(true);
    expect(scanned.some((f) => f.endsWith('commands.db'))).toBe(true);
    for (const f of scanned) {
      const bytes = readFileSync(f);
      for (const id of ['sub-ana', 'sub-bo']) expect(bytes.includes(Buffer.from(id)), `${id} in ${f}`).toBe(false);
    }

    // The second lock: the file put back as it was before the purge (a backup restored). Back online,
    // nothing is restored (the organisation has no data key), and the next new phone on "Office" is nobody's.
    writeFileSync(windowFile(dataDir), before, { mode: 0o600 });
    const lines: Line[] = [];
    const second = await start(dir, { logger: captureLogger(lines) });
    expect(second.role.windows.armed).toBe(0);
    expect(lines.some((l) => l.fields.event === 'wifi_enrolment_restored')).toBe(false);
    expect(lines.find((l) => l.fields.event === 'wifi_enrolment_window_dropped')?.fields).toMatchObject({ orgId: 'acme' });
    expect(existsSync(windowFile(dataDir))).toBe(false);
    const newcomer = second.office.addPhone({ id: 'newcomer' });
    second.office.join('newcomer', 'wlan0');
    await until(() => second.role.tracker.isPresent(newcomer.mac), 'the newcomer is present');
    await sleep(600); // past the ambiguity guard: a restored window would have taken the newcomer by now
    await second.role.settled();
    expect(second.role.stats.enrolled).toBe(0);
    expect(second.dev.sink.commandResults().some((r) => r.wifiEnrolment?.armedCounter === counter && r.wifiEnrolment.state === WifiEnrolmentState.WIFI_ENROLMENT_STATE_ENROLLED)).toBe(false);
    // The purged organisation got no data key back (an enrolment would have made one).
    expect(await second.dev.vault!.orgs()).not.toContain('acme');
  });
});
