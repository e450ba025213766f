// Card end to end through the HID transport interface: simulator → reader → callback.
import { describe, expect, it } from 'vitest';
import { CardReaderSim } from '../../simulators/card/main.js';
import { HidCardReader } from './reader.js';

describe('card simulator through the HID transport interface', () => {
  it('delivers each swiped card once, with and without a report id', async () => {
    for (const reportId of [undefined, 1]) {
      const sim = new CardReaderSim(reportId === undefined ? {} : { reportId });
      const cards: string[] = [];
      const reader = new HidCardReader({ transport: sim.transport, onCard: (c) => cards.push(c) });
      await reader.start();
      sim.swipe('0004412345');
      sim.swipe('0004412345');
      sim.swipe('77');
      expect(cards).toEqual(['0004412345', '0004412345', '77']);
      await reader.stop();
    }
  });
});
