/**
 * `tallybox-sim card`: a keyboard-wedge USB card reader. In-process (demo,
 * tests) `CardReaderSim.swipe` injects the reports a real reader sends through
 * the HID transport interface the agent's reader uses. From the command line
 * it prints those reports as hex, one per line, for firmware and driver work.
 */
import { parseArgs } from 'node:util';
import { cardToReports } from '../../firmware-bridge/hid/keyboard.js';
import { SimHidTransport } from '../../firmware-bridge/hid/transport.js';

export class CardReaderSim {
  readonly transport: SimHidTransport;
  private readonly reportId: number | undefined;

  constructor(opts: { reportId?: number } = {}) {
    this.transport = new SimHidTransport({ description: 'hid:sim-card-reader' });
    this.reportId = opts.reportId;
  }

  /** Present a card: its number typed as press/release reports, then Enter. */
  swipe(card: string): void {
    for (const r of cardToReports(card, this.reportId === undefined ? {} : { reportId: this.reportId })) this.transport.inject(r);
  }
}

const HELP = `usage: tallybox-sim card --card NUMBER [--card NUMBER ...] [--report-id N]

Prints the HID boot-keyboard reports a keyboard-wedge reader sends for each card
(hex, one report per line). In-process, CardReaderSim injects them into the
agent's HID transport.
`;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { card: { type: 'string', multiple: true }, 'report-id': { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    process.stderr.write(`tallybox-sim card: ${(err as Error).message}\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const rid = values['report-id'] === undefined ? undefined : Number(values['report-id']);
  if (rid !== undefined && (!Number.isInteger(rid) || rid < 0 || rid > 255)) {
    process.stderr.write(`tallybox-sim card: --report-id ${values['report-id']} is not an integer in 0..255\n`);
    return 2;
  }
  const cards = values.card ?? [];
  if (cards.length === 0 || cards.some((c) => !/^[0-9A-Za-z]{1,32}$/.test(c))) {
    process.stderr.write(`tallybox-sim card: give --card with 1..32 digits or letters\n${HELP}`);
    return 2;
  }
  for (const c of cards) for (const r of cardToReports(c, rid === undefined ? {} : { reportId: rid })) process.stdout.write(r.toString('hex') + '\n');
  return 0;
}
