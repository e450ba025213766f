/** M1: an attendance terminal with a fingerprint module (R30x on a pseudo-terminal). */
import { z } from 'zod';
import { FingerprintPart } from './fingerprint-part.js';
import { methodUnavailable, unknownPeripheral } from './errors.js';
import type { LabDeviceKind } from './types.js';

export const FingerprintPeripheral = z.object({ capacity: z.number().int().min(1).max(1024).default(1000) }).strict();

const Peripherals = z.object({ fingerprint: FingerprintPeripheral.default({ capacity: 1000 }) }).strict();

export const m1Kind: LabDeviceKind = {
  kind: 'm1',
  description: 'fingerprint terminal: R30x module on a pseudo-terminal',
  peripheralsSchema: Peripherals,
  async start({ device, dir, seed }) {
    const p = Peripherals.parse(device.peripherals);
    const fp = await FingerprintPart.start({ dir, seed, capacity: p.fingerprint.capacity });
    return {
      agentConfig: { m1: fp.agentConfig(device.repeatWindowSec) },
      methods: ['finger'],
      peripherals: () => [fp.view()],
      async present(person, method) {
        if (method !== 'finger') throw methodUnavailable(device.name, method, ['finger']);
        return fp.present(person);
      },
      credentials: () => [],
      modalities: (person) => (person.finger !== undefined ? ['fingerprint'] : []),
      enrol: (person, _modality, done) => fp.enrol(person, done),
      async setPlugged(name, plugged) {
        if (name !== 'fingerprint') throw unknownPeripheral(device.name, name, ['fingerprint']);
        await fp.setPlugged(plugged);
      },
      close: () => fp.close(),
    };
  },
};
