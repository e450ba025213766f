import { BridgeDriver } from '../../firmware-bridge/bridge/driver.js';
import { MemoryTransport } from '../../firmware-bridge/bridge/memory.js';
import { Population } from '../../simulators/face/population.js';
import { FaceModuleSim } from '../../simulators/face/sim.js';
import { faceBridgeContract } from './contract.js';

// Host and module on an in-memory pair that splits every write into 7-byte chunks.
faceBridgeContract('a memory transport', async ({ timeoutMs }) => {
  const [host, dev] = MemoryTransport.pair({ chunkSize: 7 });
  await dev.open();
  const sim = new FaceModuleSim({ transport: dev, population: new Population({ size: 10, dim: 128, seed: 3 }) });
  const driver = new BridgeDriver({ transport: host, timeoutMs });
  return {
    driver,
    sim,
    deviceEnd: dev,
    // The host's port vanishing is a status change to closed, which is what an unplug is to the driver.
    unplug: () => host.close(),
    async close() {
      sim.close();
      await driver.close();
      await dev.close();
    },
  };
});
