/**
 * M2: a terminal with a face module (bridge protocol on a pseudo-terminal),
 * optionally a keyboard-wedge card reader (HID reports on a Unix socket the
 * agent opens as `m2.cardReader.device`) and a fingerprint module.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { CredentialKind } from '../../../src/proto/index.js';
import { CardReaderServer } from '../../card/server.js';
import { startFaceSimulator, type FaceSimulator } from '../../face/main.js';
import { methodUnavailable, traitMissing, unknownPeripheral, waitFor } from './errors.js';
import { FingerprintPart } from './fingerprint-part.js';
import { FingerprintPeripheral } from './m1.js';
import type { KindHardware, LabDeviceKind, LabMethod, PeripheralView } from './types.js';

const Peripherals = z
  .object({
    face: z
      .object({ people: z.number().int().min(10).max(100_000).default(500) })
      .strict()
      .default({ people: 500 }),
    card: z.union([z.boolean(), z.object({}).strict()]).default(true),
    fingerprint: FingerprintPeripheral.optional(),
  })
  .strict();

export const m2Kind: LabDeviceKind = {
  kind: 'm2',
  description: 'face terminal: face module on a pseudo-terminal, card reader on a HID report socket, optional fingerprint module',
  peripheralsSchema: Peripherals,
  async start({ device, dir, seed }): Promise<KindHardware> {
    const p = Peripherals.parse(device.peripherals);
    const faceLink = join(dir, 'ttyFace');
    const startFace = () => startFaceSimulator({ link: faceLink, control: false, people: p.face.people, dim: 512, seed });
    let face: FaceSimulator | null = await startFace();
    const parts: { close(): Promise<void> }[] = [];
    const cardPath = join(dir, 'card.sock');
    const card = p.card === false ? undefined : await CardReaderServer.start({ path: cardPath });
    const fp = p.fingerprint ? await FingerprintPart.start({ dir, seed, capacity: p.fingerprint.capacity }) : undefined;
    if (card) parts.push(card);
    if (fp) parts.push(fp);
    const methods: LabMethod[] = ['face', ...(card ? (['card'] as const) : []), ...(fp ? (['finger'] as const) : [])];
    const names = ['face', ...(card ? ['card-reader'] : []), ...(fp ? ['fingerprint'] : [])];
    return {
      agentConfig: {
        m2: {
          bridge: { port: faceLink, baudRate: 921600, timeoutMs: 2000 },
          cardReader: card ? { device: cardPath } : null,
          repeatWindowSec: device.repeatWindowSec,
          heartbeatMs: 2000,
          backoff: { minMs: 100, maxMs: 1000 },
          enrolOnUpsert: true,
        },
        ...(fp ? { m1: fp.agentConfig(device.repeatWindowSec) } : {}),
      },
      methods,
      peripherals: () => {
        const out: PeripheralView[] = [{ name: 'face', plugged: face !== null, detail: face ? `face sim, ${face.sim.state().counters.presented} presented` : 'unplugged' }];
        if (card) out.push({ name: 'card-reader', plugged: card.state().plug === 'plugged', detail: `${card.state().swipes} swipes` });
        if (fp) out.push(fp.view());
        return out;
      },
      async present(person, method) {
        if (!methods.includes(method)) throw methodUnavailable(device.name, method, methods);
        if (method === 'finger') return fp!.present(person);
        if (method === 'card') {
          if (!person.card) throw traitMissing(person.id, 'card');
          card!.swipe(person.card);
          return 'sent';
        }
        if (!person.face) throw traitMissing(person.id, 'face');
        if (face) await face.sim.present(person.facePerson);
        return 'sent';
      },
      credentials: (person) => (card && person.card ? [{ kind: CredentialKind.CREDENTIAL_KIND_CARD, value: person.card }] : []),
      modalities: (person) => [...(person.face ? (['face'] as const) : []), ...(fp && person.finger !== undefined ? (['fingerprint'] as const) : [])],
      async enrol(person, modality, done) {
        if (modality === 'fingerprint') return fp!.enrol(person, done);
        let settled = false;
        void done.finally(() => (settled = true));
        // The person looks at the camera once per capture the module asks for.
        while (!settled) {
          const f = face;
          if (!f) break;
          const asked = await waitFor(() => settled || f.sim.state().enrolling !== null, 30_000);
          if (!asked || settled) break;
          const want = f.sim.state().enrolling;
          if (want) for (let i = want.done; i < want.total && !settled; i++) await f.sim.present(person.facePerson);
          await waitFor(() => settled || f.sim.state().enrolling === null, 5000);
        }
        await done;
      },
      async setPlugged(name, plugged) {
        if (!names.includes(name)) throw unknownPeripheral(device.name, name, names);
        if (name === 'fingerprint') return fp!.setPlugged(plugged);
        if (name === 'card-reader') return plugged ? card!.replug() : card!.unplug();
        if (plugged && !face) face = await startFace();
        else if (!plugged && face) {
          const f = face;
          face = null;
          await f.close();
        }
      },
      async close() {
        await face?.close();
        for (const part of parts) await part.close();
      },
    };
  },
};
