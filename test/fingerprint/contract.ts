/**
 * The R30x contract, written once: what a host driver and a module must agree
 * on. Run against every way of connecting them (real pty, mock binding).
 * Each test gets a fresh simulator and driver from the factory.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { R30xDriver } from '../../firmware-bridge/r30x/driver.js';
import { isR30xError, type R30xErrorCode } from '../../firmware-bridge/r30x/errors.js';
import type { FingerprintSimulator } from '../../simulators/fingerprint/simulator.js';

export interface ContractRig {
  driver: R30xDriver;
  sim: FingerprintSimulator;
  /** Close driver and simulator; must not throw. */
  close(): Promise<void>;
}

export type ContractFactory = (opts: { capacity?: number; timeoutMs: number }) => Promise<ContractRig>;

// Generous enough for a loaded 2-core CI box; the fault tests wait this long per TIMEOUT.
export const CONTRACT_TIMEOUT_MS = 400;

async function rejectsWith(p: Promise<unknown>, code: R30xErrorCode): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  if (!isR30xError(err, code)) throw new Error(`expected R30xError ${code}, got ${err instanceof Error ? `${(err as { code?: string }).code} ${err.message}` : String(err)}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function r30xContract(name: string, factory: ContractFactory): void {
  describe(`R30x contract over ${name}`, () => {
    let rig: ContractRig;
    let driver: R30xDriver;
    let sim: FingerprintSimulator;

    beforeEach(async () => {
      rig = await factory({ timeoutMs: CONTRACT_TIMEOUT_MS });
      ({ driver, sim } = rig);
    });
    afterEach(async () => {
      await rig?.close();
    });

    async function enrol(person: string, finger: number, page: number): Promise<void> {
      sim.device.placeFinger({ person, finger });
      await driver.genImg();
      await driver.img2Tz(1);
      sim.device.liftFinger();
      sim.device.placeFinger({ person, finger });
      await driver.genImg();
      await driver.img2Tz(2);
      await driver.regModel();
      await driver.store(1, page);
      sim.device.liftFinger();
    }

    async function identify(person: string, finger: number) {
      sim.device.placeFinger({ person, finger });
      await driver.genImg();
      await driver.img2Tz(1);
      sim.device.liftFinger();
      return driver.highSpeedSearch(1, 0, sim.device.capacity);
    }

    it('handshake: VfyPwd then ReadSysPara as the datasheet says', async () => {
      await driver.vfyPwd();
      const para = await driver.readSysPara();
      expect(para).toMatchObject({ systemId: 0x0009, librarySize: 1000, address: 0xffffffff, packetSizeCode: 2, baudN: 6 });
      expect(driver.packetSize).toBe(128);
      await rejectsWith(driver.vfyPwd(0x12345678), 'WRONG_PASSWORD');
    });

    it('GenImg without a finger is NO_FINGER with the numeric code', async () => {
      const err = await driver.genImg().catch((e: unknown) => e);
      expect(isR30xError(err, 'NO_FINGER')).toBe(true);
      expect((err as { confirmation: number }).confirmation).toBe(0x02);
      expect((err as Error).message).toContain('NO_FINGER');
    });

    it('enrol (two captures, RegModel, Store) then identify with Search and HighSpeedSearch', async () => {
      await enrol('alice', 1, 5);
      expect(await driver.templateNum()).toBe(1);
      expect(await driver.readIndexTable(0)).toEqual([5]);
      const hit = await identify('alice', 1);
      expect(hit.page).toBe(5);
      expect(hit.score).toBeGreaterThanOrEqual(50);
      sim.device.placeFinger({ person: 'alice', finger: 1 });
      await driver.genImg();
      await driver.img2Tz(2);
      expect((await driver.search(2, 0, 1000)).page).toBe(5);
      await rejectsWith(identify('bob', 1), 'NOT_FOUND');
      await rejectsWith(identify('alice', 2), 'NOT_FOUND');
      // A search window that excludes the page does not find it.
      await rejectsWith(driver.search(1, 6, 100), 'NOT_FOUND');
    });

    it('RegModel of two different fingers is COMBINE_FAILED; Img2Tz reports bad images', async () => {
      sim.device.placeFinger({ person: 'alice', finger: 0 });
      await driver.genImg();
      await driver.img2Tz(1);
      sim.device.placeFinger({ person: 'bob', finger: 0 });
      await driver.genImg();
      await driver.img2Tz(2);
      await rejectsWith(driver.regModel(), 'COMBINE_FAILED');
      await rejectsWith(driver.match(), 'NO_MATCH');
      sim.device.placeFinger({ person: 'carol', finger: 0 }, 'messy');
      await driver.genImg();
      await rejectsWith(driver.img2Tz(1), 'IMAGE_MESSY');
    });

    it('Store outside the library is BAD_PAGE; LoadChar of an empty page is BAD_TEMPLATE', async () => {
      await rejectsWith(driver.store(1, 1000), 'BAD_PAGE');
      await rejectsWith(driver.loadChar(1, 3), 'BAD_TEMPLATE');
      await rejectsWith(driver.deletChar(999, 2), 'DELETE_FAILED');
    });

    it('UpChar returns the 512-byte template; DownChar + Store writes it back and it still matches', async () => {
      await enrol('dave', 3, 42);
      await driver.loadChar(1, 42);
      const template = await driver.upChar(1);
      expect(template).toHaveLength(512);
      expect(template).toEqual(sim.device.getPage(42));
      await driver.deletChar(42);
      expect(await driver.templateNum()).toBe(0);
      await driver.downChar(2, template);
      await driver.store(2, 777);
      expect(sim.device.getPage(777)).toEqual(template);
      expect((await identify('dave', 3)).page).toBe(777);
    });

    it('data transfer works with every packet size (32 → 16 packets, 256 → 2)', async () => {
      await enrol('erin', 0, 1);
      await driver.loadChar(1, 1);
      const original = await driver.upChar(1);
      for (const code of [0, 1, 3]) {
        await driver.setSysPara(6, code);
        expect(driver.packetSize).toBe([32, 64, 128, 256][code]);
        await driver.loadChar(2, 1);
        expect(await driver.upChar(2)).toEqual(original);
        await driver.downChar(1, original);
        await driver.store(1, 10 + code);
        expect(sim.device.getPage(10 + code)).toEqual(original);
      }
    });

    it('ReadIndexTable bitmaps across index pages, DeletChar ranges and Empty', async () => {
      const pages = [0, 7, 8, 255, 256, 511, 512, 999];
      for (const p of pages) sim.device.enrolDirect(p, { person: `p${p}`, finger: 0 });
      expect(await driver.readIndexTable(0)).toEqual([0, 7, 8, 255]);
      expect(await driver.readIndexTable(1)).toEqual([256, 511]);
      expect(await driver.readIndexTable(3)).toEqual([999]);
      expect(await driver.listPages()).toEqual(pages);
      expect(await driver.templateNum()).toBe(pages.length);
      await driver.deletChar(0, 256);
      expect(await driver.listPages()).toEqual([256, 511, 512, 999]);
      await driver.empty();
      expect(await driver.templateNum()).toBe(0);
      expect(await driver.listPages()).toEqual([]);
    });

    it('one command in flight: concurrent calls are queued and each gets its own reply', async () => {
      sim.device.enrolDirect(3, { person: 'x', finger: 0 });
      const results = await Promise.all([
        driver.templateNum(),
        driver.readSysPara(),
        driver.readIndexTable(0),
        driver.genImg().catch((e: unknown) => (e as { code: string }).code),
        driver.templateNum(),
        ...Array.from({ length: 10 }, () => driver.vfyPwd()),
      ]);
      expect(results.slice(0, 5)).toEqual([1, expect.objectContaining({ systemId: 9 }), [3], 'NO_FINGER', 1]);
    });

    it('faults: noise before a reply and noise bursts are skipped', async () => {
      sim.deviceLink.setFaults({ noise: 40 });
      expect(await driver.templateNum()).toBe(0);
      await sim.deviceLink.injectNoise(100);
      await sleep(20);
      expect(await driver.templateNum()).toBe(0);
      expect(driver.stats.garbageBytes).toBeGreaterThanOrEqual(140);
    });

    it('faults: a corrupt checksum or a dropped byte is a TIMEOUT, and the next command works', async () => {
      const rejects: string[] = [];
      driver.on('error-frame', (r) => rejects.push(r.reason));
      sim.deviceLink.setFaults({ corruptChecksum: 1 });
      await rejectsWith(driver.templateNum(), 'TIMEOUT');
      expect(rejects).toContain('bad-checksum');
      expect(await driver.templateNum()).toBe(0);
      sim.deviceLink.setFaults({ dropByte: 1 });
      await rejectsWith(driver.readSysPara(), 'TIMEOUT');
      expect((await driver.readSysPara()).systemId).toBe(9);
    });

    it('faults: slow replies within the timeout succeed, beyond it TIMEOUT', async () => {
      sim.deviceLink.setFaults({ delayMs: 100 });
      expect(await driver.templateNum()).toBe(0);
      sim.deviceLink.setFaults({ delayMs: CONTRACT_TIMEOUT_MS + 100 });
      await rejectsWith(driver.templateNum(), 'TIMEOUT');
      sim.deviceLink.clearFaults();
      // The late ack arrives while nothing is in flight and is dropped.
      await sleep(400);
      expect(await driver.readIndexTable(0)).toEqual([]);
    });

    it('unplug (silent) is TIMEOUT; replug answers again and the library survived', async () => {
      sim.device.enrolDirect(9, { person: 'y', finger: 0 });
      await sim.unplug('silent');
      await rejectsWith(driver.templateNum(), 'TIMEOUT');
      await sim.replug();
      expect(await driver.templateNum()).toBe(1);
    });
  });
}
