/**
 * Pacing at the configured baud rate (bytes × 10 / baud), the pty's termios
 * speed following SetSysPara, the CLI's --no-pacing, and the driver-level
 * refusal of UpImage/DownImage.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { R30xDriver } from '../../firmware-bridge/r30x/driver.js';
import { isR30xError } from '../../firmware-bridge/r30x/errors.js';
import { SerialTransport } from '../../firmware-bridge/transport/serial.js';
import { runFingerprintCli } from '../../simulators/fingerprint/main.js';
import { wireTimeMs } from '../../simulators/fingerprint/link.js';
import { startFingerprintSimulator, type FingerprintSimulator } from '../../simulators/fingerprint/simulator.js';
import { readTtySpeed } from '../../simulators/fingerprint/tty-speed.js';

const dir = mkdtempSync(join(tmpdir(), 'tallybox-r30x-pace-'));
const live = new Set<{ close(): Promise<unknown> }>();
let n = 0;
afterEach(async () => {
  await Promise.all([...live].map((x) => x.close().catch(() => undefined)));
  live.clear();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function rig(opts: { pacing: boolean; baudRate?: number }): Promise<{ sim: FingerprintSimulator; driver: R30xDriver }> {
  const link = join(dir, `tty-${++n}`);
  const sim = await startFingerprintSimulator({ link, control: false, ...opts });
  live.add(sim);
  const driver = new R30xDriver({ transport: new SerialTransport({ path: link, ...(opts.baudRate ? { baudRate: opts.baudRate } : {}) }), timeoutMs: 2000 });
  live.add(driver);
  await driver.open();
  return { sim, driver };
}

/** UpChar at 128-byte packets: a 12-byte ack + 4 data packets of 11 + 128 bytes. */
const UPCHAR_BYTES = 12 + 4 * (11 + 128);

async function timeUpChar(sim: FingerprintSimulator, driver: R30xDriver): Promise<number> {
  sim.device.enrolDirect(1, { person: 'ana', finger: 1 });
  await driver.loadChar(1, 1);
  const t0 = performance.now();
  expect(await driver.upChar(1)).toHaveLength(512);
  return performance.now() - t0;
}

describe('pacing at the configured baud rate', () => {
  it('a paced UpChar takes bytes × 10 / baud (57600: ~99 ms; 115200 after SetSysPara: ~49 ms); unpaced it is much faster', async () => {
    const paced = await rig({ pacing: true });
    await paced.driver.readSysPara();
    const expected = wireTimeMs(UPCHAR_BYTES, 57600);
    expect(expected).toBeCloseTo(98.6, 0);
    const t57 = await timeUpChar(paced.sim, paced.driver);
    expect(t57).toBeGreaterThanOrEqual(expected * 0.95);
    expect(t57).toBeLessThan(expected + 150);

    await paced.driver.setSysPara(4, 12);
    expect(paced.sim.device.baudRate).toBe(115200);
    expect((await paced.driver.readSysPara()).baudN).toBe(12);
    // The pty's configured speed follows the module's (what `stty -F LINK` shows).
    expect(await paced.sim.lineSpeed()).toBe(115200);
    const t115 = await timeUpChar(paced.sim, paced.driver);
    expect(t115).toBeGreaterThanOrEqual(wireTimeMs(UPCHAR_BYTES, 115200) * 0.95);
    expect(t115).toBeLessThan(t57);

    const fast = await rig({ pacing: false });
    await fast.driver.readSysPara();
    expect(await timeUpChar(fast.sim, fast.driver)).toBeLessThan(expected * 0.5);
    // eslint-disable-next-line no-console
    console.log(`UpChar ${UPCHAR_BYTES} bytes: paced 57600 ${t57.toFixed(1)} ms (expected ${expected.toFixed(1)}), paced 115200 ${t115.toFixed(1)} ms`);
  });

  it('--baud sets ReadSysPara, the pty speed and the pacing rate', async () => {
    const { sim, driver } = await rig({ pacing: true, baudRate: 19200 });
    expect((await driver.readSysPara()).baudN).toBe(2);
    expect(await readTtySpeed(sim.pty!.slavePath)).toBe(19200);
  });

  it('the CLI paces by default; --no-pacing turns it off; --baud must be 9600 × N', async () => {
    const lines: string[] = [];
    let stop!: () => void;
    const run = runFingerprintCli(['--link', join(dir, `cli-${++n}`), '--no-control'], { stop: new Promise<void>((r) => (stop = r)), out: (l) => lines.push(l) });
    for (let i = 0; i < 100 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(JSON.parse(lines[0]!)).toMatchObject({ event: 'ready', baudRate: 57600, pacing: true });
    stop();
    expect(await run).toBe(0);
    const lines2: string[] = [];
    const run2 = runFingerprintCli(['--link', join(dir, `cli-${++n}`), '--no-control', '--no-pacing', '--baud', '115200'], { stop: new Promise<void>((r) => (stop = r)), out: (l) => lines2.push(l) });
    for (let i = 0; i < 100 && lines2.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(JSON.parse(lines2[0]!)).toMatchObject({ baudRate: 115200, pacing: false });
    stop();
    expect(await run2).toBe(0);
    const errs: string[] = [];
    expect(await runFingerprintCli(['--link', join(dir, 'x'), '--baud', '12345'], { stop: Promise.resolve(), err: (l) => errs.push(l) })).toBe(2);
    expect(errs.join('\n')).toContain('9600 × N');
  });
});

describe('the driver never moves a fingerprint image', () => {
  it('upImage()/downImage() reject IMAGE_TRANSFER_REFUSED and nothing reaches the module', async () => {
    const { sim, driver } = await rig({ pacing: false });
    for (const call of [() => driver.upImage(), () => driver.downImage()]) {
      const err = await call().catch((e: unknown) => e);
      expect(isR30xError(err, 'IMAGE_TRANSFER_REFUSED')).toBe(true);
    }
    expect(await driver.templateNum()).toBe(0);
    expect(sim.device.received(0x0a) + sim.device.received(0x0b)).toBe(0);
    expect(sim.state().instructions).toEqual({ TemplateNum: 1 });
  });
});
