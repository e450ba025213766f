import { afterEach, describe, expect, it } from 'vitest';
import type { BridgeFrame } from './codec.js';
import { BridgeDevice } from './device.js';
import { BridgeDriver, type FaceCapture } from './driver.js';
import { MemoryTransport } from './memory.js';

const DIM = 8;
let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup) await c();
  cleanup = [];
});

async function setup(opts: { answer?: (f: BridgeFrame, dev: BridgeDevice) => void; timeoutMs?: number; chunkSize?: number } = {}) {
  const [host, dev] = MemoryTransport.pair({ chunkSize: opts.chunkSize ?? 5 });
  await dev.open();
  const device = new BridgeDevice({ transport: dev });
  device.on('request', (f) => {
    if (opts.answer) return opts.answer(f, device);
    if (f.body === 'hello') void device.reply(f.seq, { helloAck: { protocol: 1, model: 'test', featureDim: DIM, firmwareVersion: '1.0', featureModel: 'unit' } });
    else if (f.body === 'heartbeat') void device.reply(f.seq, { heartbeat: { uptimeMs: 1234 } });
    else if (f.body === 'relay') void device.reply(f.seq, { ack: { status: 4, detail: 'door busy' } });
    else void device.reply(f.seq, { ack: { status: 1 } });
  });
  // Generous: the memory link is fast, but the machine running the suite may be loaded.
  const driver = new BridgeDriver({ transport: host, timeoutMs: opts.timeoutMs ?? 10_000 });
  cleanup.push(() => driver.close());
  return { driver, device, host, dev };
}

describe('BridgeDriver', () => {
  it('negotiates, then sends requests one at a time and matches replies', async () => {
    const { driver } = await setup();
    const statuses: string[] = [];
    driver.on('status', (s) => statuses.push(s));
    const info = await driver.start();
    expect(info).toMatchObject({ protocol: 1, featureDim: DIM, model: 'test' });
    const [a, b] = await Promise.all([driver.ping(), driver.displayText({ line1: 'Hello' })]);
    expect(a.uptimeMs).toBe(1234);
    expect(b).toBeUndefined();
    expect(statuses).toEqual(['handshaking', 'ready']);
  });

  it('turns a non-OK ack into BRIDGE_NACK naming the status', async () => {
    const { driver } = await setup();
    await driver.start();
    await expect(driver.relay({ energised: true })).rejects.toMatchObject({ code: 'BRIDGE_NACK', message: expect.stringContaining('BRIDGE_STATUS_BUSY') });
  });

  it('times out, drops the late reply, and the next request still works', async () => {
    // The first request's reply is held until the driver has given up on it: late by construction, not by a race.
    let late: (() => void) | undefined;
    const { driver } = await setup({
      answer: (f, dev) => {
        if (f.body === 'hello') return void dev.reply(f.seq, { helloAck: { protocol: 1, featureDim: DIM } });
        if (!late) {
          late = () => void dev.reply(f.seq, { ack: { status: 1 } });
          return;
        }
        void dev.reply(f.seq, { ack: { status: 1 } });
      },
      timeoutMs: 1000,
    });
    await driver.start();
    const rejects: string[] = [];
    driver.on('reject', (r) => rejects.push(r.reason));
    await expect(driver.indicator({ beeps: 1 })).rejects.toMatchObject({ code: 'BRIDGE_TIMEOUT' });
    late!();
    for (const end = performance.now() + 20_000; rejects.length === 0 && performance.now() < end; ) await new Promise((r) => setTimeout(r, 10));
    expect(rejects).toEqual(['stale-reply']);
    await expect(driver.indicator({ beeps: 1 })).resolves.toBeUndefined();
  });

  it('refuses a module with no common protocol version', async () => {
    const { driver } = await setup({ answer: (f, dev) => void dev.reply(f.seq, { helloAck: { protocol: 7 } }) });
    await expect(driver.start()).rejects.toMatchObject({ code: 'BRIDGE_NO_COMMON_VERSION' });
    expect(driver.status).toBe('closed');
  });

  it('requests before start are BRIDGE_CLOSED; after a lost link too', async () => {
    const { driver, dev } = await setup();
    await expect(driver.ping()).rejects.toMatchObject({ code: 'BRIDGE_CLOSED' });
    await driver.start();
    const p = new Promise((r) => driver.once('status', r));
    await driver.transport.close();
    expect(await p).toBe('closed');
    await expect(driver.ping()).rejects.toMatchObject({ code: 'BRIDGE_CLOSED' });
    void dev;
  });

  it('surfaces unsolicited events, drops inconsistent features, survives garbage', async () => {
    const { driver, device, host } = await setup();
    await driver.start();
    const faces: FaceCapture[] = [];
    const rejects: string[] = [];
    driver.on('face', (f) => faces.push(f));
    driver.on('reject', (r) => rejects.push(r.reason));
    const got = new Promise<{ open: boolean }>((r) => driver.once('tamper', r));
    const keys = new Promise<{ keys: string }>((r) => driver.once('keypad', r));
    host.inject(Buffer.from([1, 2, 3, 0]));
    await device.send({ faceFeature: { vector: [1, 2, 3], dim: DIM, liveness: 1 } });
    await device.send({ faceFeature: { vector: Array(DIM).fill(0.5), dim: DIM, liveness: 0.9, quality: 0.8, purpose: 1, captureId: 5 } });
    await device.send({ tamper: { open: true } });
    await device.send({ keypad: { keys: '1234' } });
    expect(await got).toEqual({ open: true });
    expect((await keys).keys).toBe('1234');
    expect(faces.length).toBe(1);
    expect(faces[0]!.vector).toBeInstanceOf(Float32Array);
    expect(faces[0]!.captureId).toBe(5);
    expect(rejects).toEqual(['short', 'feature']);
  });

  it('collects enrolment captures; an abort is BRIDGE_ENROL_ABORTED', async () => {
    let abort = false;
    const { driver } = await setup({
      answer: (f, dev) => {
        if (f.body === 'hello') return void dev.reply(f.seq, { helloAck: { protocol: 1, featureDim: DIM } });
        if (f.body === 'enrolStart') {
          void dev.reply(f.seq, { ack: { status: 1 } }).then(async () => {
            const n = f.enrolStart!.captures!;
            for (let i = 1; i <= n; i++) {
              if (abort && i === 2) return dev.send({ enrolCapture: { index: i, total: n, aborted: true } });
              await dev.send({ enrolCapture: { index: i, total: n, feature: { vector: Array(DIM).fill(i), dim: DIM, liveness: 1, purpose: 2 } } });
            }
          });
        }
      },
    });
    await driver.start();
    const caps = await driver.enrol({ captures: 3, timeoutMs: 500 });
    expect(caps.map((c) => c.vector[0])).toEqual([1, 2, 3]);
    abort = true;
    await expect(driver.enrol({ captures: 3, timeoutMs: 500 })).rejects.toMatchObject({ code: 'BRIDGE_ENROL_ABORTED' });
  });

  it('encodes nothing larger than the module says it accepts', async () => {
    const { driver } = await setup({ answer: (f, dev) => void dev.reply(f.seq, f.body === 'hello' ? { helloAck: { protocol: 1, featureDim: DIM, maxFrame: 16 } } : { ack: { status: 1 } }) });
    await driver.start();
    await expect(driver.displayText({ line1: 'x'.repeat(40) })).rejects.toMatchObject({ code: 'BRIDGE_FRAME_OVERSIZE' });
  });
});
