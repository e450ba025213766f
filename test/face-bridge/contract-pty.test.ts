import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { BridgeDriver } from '../../firmware-bridge/bridge/driver.js';
import { SerialTransport } from '../../firmware-bridge/transport/serial.js';
import { startFaceSimulator, type FaceSimulator } from '../../simulators/face/main.js';
import { faceBridgeContract } from './contract.js';

const dir = mkdtempSync(join(tmpdir(), 'tallybox-face-contract-'));
const live = new Set<FaceSimulator>();
let n = 0;
afterAll(async () => {
  await Promise.all([...live].map((s) => s.close()));
  rmSync(dir, { recursive: true, force: true });
});

// Host: the production SerialTransport on the simulator's pty symlink, as on /dev/ttyS2.
faceBridgeContract('a real pseudo-terminal (openpty)', async ({ timeoutMs }) => {
  const link = join(dir, `face-${++n}`);
  const face = await startFaceSimulator({ link, people: 10, dim: 128, seed: 3, control: false });
  live.add(face);
  const driver = new BridgeDriver({ transport: new SerialTransport({ path: link }), timeoutMs });
  return {
    driver,
    sim: face.sim,
    deviceEnd: face.sim.device.transport,
    // A hangup of the pty: the host read gets EIO and serialport closes the port, as when a USB adapter is pulled.
    unplug: async () => face.sim.device.transport.close(),
    async close() {
      await driver.close().catch(() => undefined);
      await face.close();
      live.delete(face);
    },
  };
});
