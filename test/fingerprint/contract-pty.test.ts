import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { r30xContract } from './contract.js';
import { R30xDriver } from '../../firmware-bridge/r30x/driver.js';
import { SerialTransport } from '../../firmware-bridge/transport/serial.js';
import { startFingerprintSimulator, type FingerprintSimulator } from '../../simulators/fingerprint/simulator.js';

const dir = mkdtempSync(join(tmpdir(), 'tallybox-r30x-'));
const live = new Set<FingerprintSimulator>();
let n = 0;

// Whatever a failing test left open: no pty or symlink survives the file.
afterAll(async () => {
  await Promise.all([...live].map((s) => s.close()));
  rmSync(dir, { recursive: true, force: true });
});

// Host: the production SerialTransport on the pty symlink, as on /dev/ttyS1.
r30xContract('a real pseudo-terminal (openpty)', async ({ capacity, timeoutMs }) => {
  const link = join(dir, `ttyR30x-${++n}`);
  const sim = await startFingerprintSimulator({ link, control: false, ...(capacity ? { capacity } : {}) });
  live.add(sim);
  const driver = new R30xDriver({ transport: new SerialTransport({ path: link }), timeoutMs });
  await driver.open();
  return {
    driver,
    sim,
    async close() {
      await driver.close().catch(() => undefined);
      await sim.close();
      live.delete(sim);
    },
  };
});
