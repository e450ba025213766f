/**
 * C1 enrolment mode and SSID scoping, end to end: the agent with its C1 role
 * (the `tallybox run` start path), the cloud emulator signing SubjectUpsert
 * commands, the simulated office (hostapd-compatible control sockets whose
 * STATUS names each interface's SSID, a dnsmasq lease file).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sleep } from '../../src/cli/demo-kit.js';
import { startC1Stack, type C1Stack } from '../../src/cli/demo-c1.js';
import { CredentialKind, ResultCode, WifiEnrolmentState, type CommandResult } from '../../src/proto/index.js';
import { wifiCredentialValue } from '../../src/roles/c1/credential.js';
import { verifyCommandResult } from '../../src/link/commands/index.js';
import { captureLogger, type Line } from '../link/capture-logger.js';

const stacks: C1Stack[] = [];
afterEach(async () => {
  for (const s of stacks.splice(0)) await s.close();
});

async function until<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, what: string, ms = 15_000): Promise<T> {
  const end = performance.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (performance.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

/** The result a window's end sends on its own (counter 0), for the SubjectUpsert with this counter. */
function windowEnd(stack: C1Stack, armedCounter: number): CommandResult | undefined {
  return stack.dev.sink.commandResults().find((r) => r.counter === 0 && r.wifiEnrolment?.armedCounter === armedCounter && r.wifiEnrolment.state !== WifiEnrolmentState.WIFI_ENROLMENT_STATE_ARMED);
}

function arm(stack: C1Stack, subjectId: string, ssid: string, windowSec: number): Promise<CommandResult> {
  return stack.command({ subjectUpsert: { subjectId, displayName: `Staff ${subjectId}`, wifiEnrol: { ssid, windowSec } } });
}

function macForms(mac: string): Buffer[] {
  const hex = mac.replace(/:/g, '');
  const forms = [mac, mac.replace(/:/g, '-'), hex];
  return [...forms, ...forms.map((f) => f.toUpperCase())].map((f) => Buffer.from(f)).concat([Buffer.from(hex, 'hex')]);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
}

describe("C1 enrolment mode: the next new phone on SSID X within N minutes is this subject's", () => {
  it('enrolled: armed result, then a signed result of its own; the log names the subject and a keyed tag, never the MAC', async () => {
    const lines: Line[] = [];
    const stack = await startC1Stack({ logger: captureLogger(lines), c1: { enrolment: { ambiguityGuardSec: 0.3 } } });
    stacks.push(stack);
    const { office, role, dev } = stack;
    await until(() => role.ssidOf('wlan0') === 'Office' && role.ssidOf('wlan1') === 'Office', 'SSIDs learnt from hostapd STATUS');
    const colleague = office.addPhone({ id: 'colleague' });
    expect(await stack.enrol('sub-colleague', colleague.mac)).toBe(ResultCode.RESULT_CODE_OK);

    const armed = await arm(stack, 'sub-dana', 'Office', 120);
    expect(armed.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(armed.reason).toBe('wifi_enrolment_armed');
    expect(armed.wifiEnrolment).toMatchObject({ state: WifiEnrolmentState.WIFI_ENROLMENT_STATE_ARMED, subjectId: 'sub-dana', ssid: 'Office' });
    // One window per SSID at a time.
    const second = await arm(stack, 'sub-erin', 'Office', 120);
    expect(second.code).toBe(ResultCode.RESULT_CODE_REFUSED);
    expect(second.reason).toBe('wifi_enrolment_conflict');
    expect(second.wifiEnrolment?.state).toBe(WifiEnrolmentState.WIFI_ENROLMENT_STATE_CONFLICT);

    // An enrolled colleague joining is not "a new phone".
    office.join('colleague', 'wlan0');
    await until(() => dev.sink.punches().length === 1, 'the colleague punches');
    await sleep(500);
    expect(windowEnd(stack, armed.counter)).toBeUndefined();

    const dana = office.addPhone({ id: 'dana', randomised: true });
    office.join('dana', 'wlan1');
    const end = await until(() => windowEnd(stack, armed.counter), 'the window ends');
    expect(end.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(end.reason).toBe('wifi_enrolled');
    expect(end.wifiEnrolment).toMatchObject({ state: WifiEnrolmentState.WIFI_ENROLMENT_STATE_ENROLLED, subjectId: 'sub-dana', ssid: 'Office', armedCounter: armed.counter });
    const tag = end.wifiEnrolment!.phoneTag!;
    expect(tag).toMatch(/^[0-9a-f]{8}$/);
    // Signed by the device like every result.
    const raw = dev.sink.rawResults().find((r) => r.result === end)!;
    expect(verifyCommandResult(raw.raw, dev.vault!.identity.publicKey)).toBe(true);

    // Stored only as the org-keyed HMAC, scoped to the SSID: the plain MAC identifies nobody.
    expect(await dev.vault!.lookupCredential(stack.orgId, 'wifi_mac', wifiCredentialValue(dana.mac, 'Office'))).toBe('sub-dana');
    expect(await dev.vault!.lookupCredential(stack.orgId, 'wifi_mac', dana.mac)).toBeUndefined();
    // The joining phone is now Dana's: it is her arrival.
    await until(() => dev.sink.punches().some((p) => p.subjectId === 'sub-dana'), 'a punch for the enrolled subject');

    // The device log confirms it with the subject and the tag; no line carries the MAC.
    const confirm = lines.find((l) => l.fields.event === 'wifi_enrolment_enrolled');
    expect(confirm?.fields).toMatchObject({ subjectId: 'sub-dana', ssid: 'Office', phone: tag });
    const text = JSON.stringify(lines);
    for (const n of macForms(dana.mac)) expect(text.includes(n.toString('latin1'))).toBe(false);
    for (const f of filesUnder(dev.dataDir).filter((x) => statSync(x).size > 0)) {
      const bytes = readFileSync(f);
      for (const n of macForms(dana.mac)) expect(bytes.includes(n), `MAC in ${f}`).toBe(false);
    }
    for (const r of dev.sink.rawResults()) for (const n of macForms(dana.mac)) expect(r.raw.includes(n)).toBe(false);

    // The SSID is free again.
    expect((await arm(stack, 'sub-erin', 'Office', 60)).reason).toBe('wifi_enrolment_armed');
  });

  it('expired: nobody new joins within the window (monotonic timer); the SSID is free again', async () => {
    const stack = await startC1Stack({});
    stacks.push(stack);
    const armed = await arm(stack, 'sub-fay', 'Office', 1);
    expect(armed.reason).toBe('wifi_enrolment_armed');
    const end = await until(() => windowEnd(stack, armed.counter), 'expiry');
    expect(end.code).toBe(ResultCode.RESULT_CODE_FAILED);
    expect(end.reason).toBe('wifi_enrolment_expired');
    expect(end.wifiEnrolment).toMatchObject({ state: WifiEnrolmentState.WIFI_ENROLMENT_STATE_EXPIRED, subjectId: 'sub-fay', ssid: 'Office' });
    expect(end.wifiEnrolment?.phoneTag ?? '').toBe('');
    // A phone arriving after the end enrols nobody.
    const late = stack.office.addPhone({ id: 'late' });
    stack.office.join('late', 'wlan0');
    await sleep(500);
    await stack.role.settled();
    expect(await stack.dev.vault!.lookupCredential(stack.orgId, 'wifi_mac', wifiCredentialValue(late.mac, 'Office'))).toBeUndefined();
    expect(stack.role.stats.enrolled).toBe(0);
    expect((await arm(stack, 'sub-fay', 'Office', 60)).reason).toBe('wifi_enrolment_armed');
  });

  it('conflict: two new phones join together, so nobody is enrolled (never a guess)', async () => {
    const stack = await startC1Stack({ c1: { enrolment: { ambiguityGuardSec: 2 } } });
    stacks.push(stack);
    const armed = await arm(stack, 'sub-gus', 'Office', 60);
    const a = stack.office.addPhone({ id: 'a' });
    const b = stack.office.addPhone({ id: 'b', randomised: true });
    stack.office.join('a', 'wlan0');
    stack.office.join('b', 'wlan1');
    const end = await until(() => windowEnd(stack, armed.counter), 'the window ends');
    expect(end.code).toBe(ResultCode.RESULT_CODE_REFUSED);
    expect(end.reason).toBe('wifi_enrolment_conflict');
    expect(end.wifiEnrolment?.state).toBe(WifiEnrolmentState.WIFI_ENROLMENT_STATE_CONFLICT);
    for (const p of [a, b]) for (const v of [p.mac, wifiCredentialValue(p.mac, 'Office')]) expect(await stack.dev.vault!.lookupCredential(stack.orgId, 'wifi_mac', v)).toBeUndefined();
    expect(stack.dev.sink.punches()).toHaveLength(0);
  });

  it("a join on another SSID does not arm-match, and an erased subject's window ends cancelled", async () => {
    const stack = await startC1Stack({ office: { ifaces: ['wlan0', 'wlan2'], ssids: { wlan2: 'Guest' } }, c1: { enrolment: { ambiguityGuardSec: 0.2 } } });
    stacks.push(stack);
    await until(() => stack.role.ssidOf('wlan2') === 'Guest', 'SSID of wlan2');
    const armed = await arm(stack, 'sub-hal', 'Office', 60);
    stack.office.addPhone({ id: 'guest' });
    stack.office.join('guest', 'wlan2'); // the Guest network: not the armed SSID
    await sleep(600);
    await stack.role.settled();
    expect(windowEnd(stack, armed.counter)).toBeUndefined();
    const erased = await stack.command({ subjectErase: { subjectId: 'sub-hal' } });
    expect(erased.code).toBe(ResultCode.RESULT_CODE_OK);
    const end = await until(() => windowEnd(stack, armed.counter), 'cancelled');
    expect(end.reason).toBe('wifi_enrolment_cancelled');
    expect(end.wifiEnrolment?.state).toBe(WifiEnrolmentState.WIFI_ENROLMENT_STATE_CANCELLED);
  });

  it('bad input is refused and changes nothing', async () => {
    const stack = await startC1Stack({});
    stacks.push(stack);
    const r1 = await arm(stack, 'sub-ivy', '', 60);
    expect([r1.code, r1.reason]).toEqual([ResultCode.RESULT_CODE_REFUSED, 'bad_wifi_enrolment']);
    const r2 = await arm(stack, 'sub-ivy', 'Office', 0);
    expect([r2.code, r2.reason]).toEqual([ResultCode.RESULT_CODE_REFUSED, 'bad_wifi_enrolment']);
    const r3 = await stack.command({ subjectUpsert: { subjectId: 'sub-ivy', displayName: 'Ivy', credentials: [{ kind: CredentialKind.CREDENTIAL_KIND_WIFI_MAC, value: 'not-a-mac', ssids: ['Office'] }] } });
    expect(r3.code).not.toBe(ResultCode.RESULT_CODE_OK);
    const r4 = await stack.command({ subjectUpsert: { subjectId: 'sub-ivy', displayName: 'Ivy', credentials: [{ kind: CredentialKind.CREDENTIAL_KIND_CARD, value: '1234', ssids: ['Office'] }] } });
    expect([r4.code, r4.reason]).toEqual([ResultCode.RESULT_CODE_REFUSED, 'bad_credential']);
    expect(await stack.dev.vault!.subjectIds(stack.orgId)).toEqual([]);
    expect(stack.role.windows.armed).toBe(0);
  });
});

describe('C1 SSID scoping: an enrolled MAC punches only on its SSIDs', () => {
  it('Guest join: no punch; Office join: a punch; roaming between the Office bands: no new punch', async () => {
    // wlan0/wlan1: Office (2.4 and 5 GHz, from hostapd STATUS); wlan2: Guest, mapped in the config (wins over STATUS).
    const stack = await startC1Stack({ office: { ifaces: ['wlan0', 'wlan1', 'wlan2'], ssids: { wlan2: 'Lobby' } }, c1: { ssids: { wlan2: 'Guest' } } });
    stacks.push(stack);
    const { office, role, dev } = stack;
    await until(() => role.ssidOf('wlan0') === 'Office' && role.ssidOf('wlan1') === 'Office', 'Office SSIDs from STATUS');
    expect(role.ssidOf('wlan2')).toBe('Guest');
    const kim = office.addPhone({ id: 'kim' });
    const lee = office.addPhone({ id: 'lee' });
    expect(await stack.enrol('sub-kim', kim.mac, ['Office'])).toBe(ResultCode.RESULT_CODE_OK);
    expect(await stack.enrol('sub-lee', lee.mac)).toBe(ResultCode.RESULT_CODE_OK); // no SSIDs: every SSID
    office.join('kim', 'wlan2');
    office.join('lee', 'wlan2');
    await until(() => dev.sink.punches().length === 1, 'the unscoped phone punches on Guest');
    await sleep(300);
    await role.settled();
    expect(dev.sink.punches().map((p) => p.subjectId)).toEqual(['sub-lee']);
    expect(role.stats.otherSsid).toBe(1);
    // Kim leaves the Guest network for the Office one: a join on Office, a punch.
    office.roam('kim', 'wlan0', 'disconnect-first');
    await until(() => dev.sink.punches().some((p) => p.subjectId === 'sub-kim'), 'kim punches on Office');
    // 2.4 → 5 GHz of the same SSID: the same visit.
    office.roam('kim', 'wlan1');
    await sleep(400);
    await role.settled();
    expect(dev.sink.punches().filter((p) => p.subjectId === 'sub-kim')).toHaveLength(1);
    // Stored scoped: the plain MAC and the Guest-scoped value identify nobody.
    expect(await dev.vault!.lookupCredential(stack.orgId, 'wifi_mac', kim.mac)).toBeUndefined();
    expect(await dev.vault!.lookupCredential(stack.orgId, 'wifi_mac', wifiCredentialValue(kim.mac, 'Guest'))).toBeUndefined();
  });
});
