/**
 * The face-module bridge contract, written once (like test/fingerprint/contract.ts):
 * the production BridgeDriver against the face simulator, run over a real pty
 * (contract-pty.test.ts) and a memory transport (contract-memory.test.ts).
 * Raw bytes are written from the module's end, so framing faults are real wire faults.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeFrame } from '../../firmware-bridge/bridge/codec.js';
import type { BridgeDriver, DriverRejectEvent } from '../../firmware-bridge/bridge/driver.js';
import type { ByteTransport } from '../../firmware-bridge/transport/types.js';
import type { FaceModuleSim } from '../../simulators/face/sim.js';

export interface FaceBridgeRig {
  driver: BridgeDriver;
  sim: FaceModuleSim;
  /** The module's end of the line: raw bytes written here reach the host. */
  deviceEnd: ByteTransport;
  /** The module vanishes (USB unplug / hangup): the host's transport closes. */
  unplug(): Promise<void>;
  close(): Promise<void>;
}
export type FaceBridgeFactory = (opts: { timeoutMs: number }) => Promise<FaceBridgeRig>;

export const FACE_CONTRACT_TIMEOUT_MS = 300;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error('condition not met in time');
    await sleep(5);
  }
}

export function faceBridgeContract(name: string, factory: FaceBridgeFactory): void {
  describe(`face bridge contract over ${name}`, () => {
    let rig: FaceBridgeRig;
    let driver: BridgeDriver;
    let rejects: DriverRejectEvent[];
    let beats: number[];
    beforeEach(async () => {
      rig = await factory({ timeoutMs: FACE_CONTRACT_TIMEOUT_MS });
      driver = rig.driver;
      rejects = [];
      beats = [];
      driver.on('reject', (r) => rejects.push(r));
      driver.on('heartbeat', (h) => beats.push(h.uptimeMs));
    });
    afterEach(async () => {
      await rig?.close();
    });

    it('hello: negotiates protocol 1 and reports the module; heartbeat round-trips', async () => {
      const info = await driver.start();
      expect(info).toMatchObject({ protocol: 1, model: 'tallybox-sim-face' });
      expect(info.featureDim).toBeGreaterThan(0);
      expect(driver.status).toBe('ready');
      const a = await driver.ping();
      await sleep(5);
      const b = await driver.ping();
      expect(b.uptimeMs).toBeGreaterThanOrEqual(a.uptimeMs);
      expect(a.rttMs).toBeLessThan(FACE_CONTRACT_TIMEOUT_MS);
    });

    it('split chunks: a frame written one byte at a time is decoded once', async () => {
      await driver.start();
      const frame = encodeFrame({ seq: 0, heartbeat: { uptimeMs: 4242 } });
      for (const b of frame) {
        await rig.deviceEnd.write(Buffer.from([b]));
        await sleep(0);
      }
      await until(() => beats.length === 1);
      expect(beats).toEqual([4242]);
      expect(rejects).toEqual([]);
    });

    it('garbage between frames is refused and the link carries on', async () => {
      await driver.start();
      const garbage = Buffer.from([0x13, 0x37, 0xfe, 0x00, 0x01, 0x02, 0x03, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
      await rig.deviceEnd.write(Buffer.concat([garbage, encodeFrame({ seq: 0, heartbeat: { uptimeMs: 7 } })]));
      await until(() => beats.length === 1);
      expect(rejects.length).toBeGreaterThan(0);
      expect((await driver.ping()).uptimeMs).toBeGreaterThanOrEqual(0);
    });

    it('a bad checksum (CRC) frame is refused, never delivered; the next good one is', async () => {
      await driver.start();
      const bad = Buffer.from(encodeFrame({ seq: 0, heartbeat: { uptimeMs: 99 } }));
      // Flip bits of a payload byte without creating a 0x00 (the frame delimiter).
      const i = Math.floor(bad.length / 2);
      bad[i] = (bad[i] as number) ^ 0x01 || 0x02;
      await rig.deviceEnd.write(bad);
      await rig.deviceEnd.write(encodeFrame({ seq: 0, heartbeat: { uptimeMs: 100 } }));
      await until(() => beats.length === 1);
      expect(beats).toEqual([100]);
      expect(rejects.map((r) => r.reason)).toContain('crc');
    });

    it('timeouts: a hung module makes a request fail BRIDGE_TIMEOUT; it answers again once it recovers', async () => {
      await driver.start();
      rig.sim.hang(true);
      const t0 = performance.now();
      await expect(driver.ping()).rejects.toMatchObject({ code: 'BRIDGE_TIMEOUT' });
      expect(performance.now() - t0).toBeGreaterThanOrEqual(FACE_CONTRACT_TIMEOUT_MS * 0.9);
      rig.sim.hang(false);
      expect((await driver.ping()).uptimeMs).toBeGreaterThanOrEqual(0);
    });

    it('unplug: a request in flight fails BRIDGE_CLOSED and the link goes closed', async () => {
      await driver.start();
      rig.sim.hang(true);
      const pending = driver.ping();
      const closed = new Promise<void>((r) => driver.on('status', (s) => s === 'closed' && r()));
      await sleep(20);
      await rig.unplug();
      await expect(pending).rejects.toMatchObject({ code: 'BRIDGE_CLOSED' });
      await closed;
      expect(driver.status).toBe('closed');
    });
  });
}
