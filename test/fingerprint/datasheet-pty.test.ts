import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { SerialTransport } from '../../firmware-bridge/transport/serial.js';
import { startFingerprintSimulator, type FingerprintSimulator } from '../../simulators/fingerprint/simulator.js';
import { datasheetSuite } from './datasheet.js';

const dir = mkdtempSync(join(tmpdir(), 'tallybox-r30x-ds-'));
const live = new Set<FingerprintSimulator>();
let n = 0;
afterAll(async () => {
  await Promise.all([...live].map((s) => s.close()));
  rmSync(dir, { recursive: true, force: true });
});

// Host: the production SerialTransport on the pty symlink; pacing off (this suite is about bytes, not time).
datasheetSuite('a real pseudo-terminal (openpty)', async ({ seed }) => {
  const link = join(dir, `ttyR30x-${++n}`);
  const sim = await startFingerprintSimulator({ link, control: false, pacing: false, ...(seed ? { seed } : {}) });
  live.add(sim);
  const host = new SerialTransport({ path: link });
  await host.open();
  return {
    host,
    sim,
    async close() {
      await host.close();
      await sim.close();
      live.delete(sim);
    },
  };
});
