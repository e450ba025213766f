// Face end to end over a REAL pseudo-terminal (socat): simulator on one end,
// the host bridge driver (SerialTransport) on the other, the matcher behind it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BridgeDriver, type FaceCapture } from '../../firmware-bridge/bridge/driver.js';
import { SerialTransport } from '../../firmware-bridge/transport/serial.js';
import { startFaceSimulator, type FaceSimulator } from '../../simulators/face/main.js';
import { CancelableTransform } from '../../src/identify/face/transform.js';
import { FaceMatcher } from '../../src/identify/face/matcher.js';

let dir: string;
let sim: FaceSimulator;
let driver: BridgeDriver;
const matcher = new FaceMatcher({ dim: 512, transform: new CancelableTransform({ orgKey: new Uint8Array(32).fill(5), dim: 512 }) });

async function control(path: string, body?: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(sim.controlUrl + path, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  const json = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(String(json.error));
  return json;
}

function nextFace(): Promise<FaceCapture> {
  return new Promise((resolve) => driver.once('face', resolve));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tallybox-face-'));
  sim = await startFaceSimulator({ link: join(dir, 'face'), people: 50, seed: 7 });
  driver = new BridgeDriver({ transport: new SerialTransport({ path: sim.link, baudRate: 921600 }), timeoutMs: 2000 });
}, 20_000);

afterAll(async () => {
  await driver?.close().catch(() => undefined);
  await sim?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('face over a real pseudo-terminal', () => {
  it('handshakes: version, model, feature dimension', async () => {
    const info = await driver.start();
    expect(info).toMatchObject({ protocol: 1, model: 'tallybox-sim-face', featureDim: 512 });
    expect((await driver.ping()).uptimeMs).toBeGreaterThan(0);
  });

  it('enrols people from module captures, then a presentation identifies the right subject', async () => {
    for (const p of [3, 8, 21]) {
      const captures = driver.enrol({ captures: 3, timeoutMs: 5000 });
      // The control interface is what a developer would script. Present only once the
      // module is in enrolment mode: a presentation before that is an identification.
      for (let t = 0; !(await control('/state')).enrolling && t < 250; t++) await new Promise((r) => setTimeout(r, 20));
      for (let i = 0; i < 3; i++) await control('/present', { person: p });
      const caps = await captures;
      expect(caps.map((c) => c.purpose)).toEqual([2, 2, 2]);
      matcher.enrol(`subject-${p}`, caps);
    }
    expect(matcher.size).toBe(3);
    for (const p of [8, 3, 21]) {
      const face = nextFace();
      await control('/present', { person: p });
      const c = await face;
      expect(c.vector.length).toBe(512);
      expect(c.purpose).toBe(1);
      expect(matcher.identify(c)).toMatchObject({ decision: 'match', subjectId: `subject-${p}` });
    }
    const stranger = nextFace();
    await control('/present', { person: 40 });
    expect(matcher.identify(await stranger).decision).toBe('no-match');
  });

  it('a spoof of an enrolled person is rejected on liveness', async () => {
    const face = nextFace();
    await control('/spoof', { person: 8 });
    expect(matcher.identify(await face).decision).toBe('spoof');
  });

  it('erasure takes the person out of the in-memory index', async () => {
    expect(matcher.remove('subject-8')).toBe(1);
    const face = nextFace();
    await control('/present', { person: 8 });
    expect(matcher.identify(await face).decision).toBe('no-match');
  });

  it('carries tamper, keypad and feedback both ways', async () => {
    const tamper = new Promise<{ open: boolean }>((r) => driver.once('tamper', r));
    await control('/tamper', { open: true });
    expect(await tamper).toEqual({ open: true });
    const keys = new Promise<{ keys: string }>((r) => driver.once('keypad', r));
    await control('/keypad', { keys: '4711' });
    expect((await keys).keys).toBe('4711');
    await driver.displayText({ line1: 'Welcome', line2: 'subject-3' });
    await driver.indicator({ led: 1, ledMs: 500, beeps: 1 });
    await driver.relay({ energised: true, pulseMs: 3000 });
    const state = await control('/state');
    expect(state).toMatchObject({ display: { line1: 'Welcome' }, led: 'green', relay: true, tamperOpen: true });
    await expect(control('/present', { person: 999 })).rejects.toThrow(/0\.\.49/);
  });
});
