import { r30xContract } from './contract.js';
import { R30xDriver } from '../../firmware-bridge/r30x/driver.js';
import { createMockSerialLink } from '../../firmware-bridge/transport/mock.js';
import { startFingerprintSimulatorOnTransport } from '../../simulators/fingerprint/simulator.js';

// Host: serialport's stream over @serialport/binding-mock; device: the simulator on the mock's device end.
r30xContract('a mock serialport binding', async ({ capacity, timeoutMs }) => {
  const link = createMockSerialLink();
  const sim = await startFingerprintSimulatorOnTransport({ transport: link.device, control: false, ...(capacity ? { capacity } : {}) });
  const driver = new R30xDriver({ transport: link.createHostTransport(), timeoutMs });
  await driver.open();
  return {
    driver,
    sim,
    async close() {
      await driver.close().catch(() => undefined);
      await sim.close();
    },
  };
});
