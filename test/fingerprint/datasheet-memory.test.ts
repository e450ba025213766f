import { createMemoryPair } from '../../firmware-bridge/transport/mock.js';
import { startFingerprintSimulatorOnTransport } from '../../simulators/fingerprint/simulator.js';
import { datasheetSuite } from './datasheet.js';

// Host: one end of an in-memory pair, opened before the module powers up (so it hears the first 0x55 too).
datasheetSuite('a memory transport', async ({ seed }) => {
  const { host, device } = createMemoryPair({ name: 'r30x-datasheet' });
  await host.open();
  const heard: number[] = [];
  const listen = (b: Buffer) => heard.push(...b);
  host.on('data', listen);
  const sim = await startFingerprintSimulatorOnTransport({ transport: device, control: false, ...(seed ? { seed } : {}) });
  await new Promise((r) => setTimeout(r, 20));
  host.off('data', listen);
  // Power-up: the module said it is ready with one raw 0x55 before anything was asked.
  if (heard.length !== 1 || heard[0] !== 0x55) throw new Error(`expected the power-up 0x55, heard ${Buffer.from(heard).toString('hex')}`);
  return {
    host,
    sim,
    async close() {
      await host.close();
      await sim.close();
    },
  };
});
