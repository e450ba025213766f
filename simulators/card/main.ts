/**
 * `tallybox-sim card`: a keyboard-wedge USB card reader.
 *
 *   --serve PATH   serve the reader's HID reports on a Unix socket (server.ts),
 *                  which a `tallybox run` in another process opens as
 *                  `m2.cardReader.device: PATH`; controlled over HTTP on
 *                  127.0.0.1 (control.ts): swipe, unplug, hang, replug.
 *   --card N ...   print the HID boot-keyboard reports for each card (hex, one
 *                  report per line), for firmware and driver work.
 *
 * In-process (demo, tests) `CardReaderSim.swipe` injects the same reports
 * through the HID transport interface the agent's reader uses.
 */
import { parseArgs } from 'node:util';
import { cardToReports } from '../../firmware-bridge/hid/keyboard.js';
import { SimHidTransport } from '../../firmware-bridge/hid/transport.js';
import { startCardControl } from './control.js';
import { CardReaderServer } from './server.js';

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

  /** The reader is pulled out (the HID layer reports a read error); open fails until replug(). */
  unplug(): void {
    this.transport.unplug();
  }
  /** The reader vanishes without an error: only a presence probe notices. */
  hang(): void {
    this.transport.hang(true);
  }
  replug(): void {
    this.transport.replug();
  }
}

export { CardReaderServer } from './server.js';

const HELP = `usage: tallybox-sim card --serve PATH [--control-port P] [--report-id N]
       tallybox-sim card --card NUMBER [--card NUMBER ...] [--report-id N]

--serve PATH: a reader another process opens as m2.cardReader.device: PATH
(a Unix socket, 0600); prints {"ready":true,"socket":PATH,"control":URL} and
runs until SIGINT/SIGTERM. Control (JSON, 127.0.0.1 only): GET /state,
POST /swipe {"card":"0004211234"}, POST /unplug, POST /hang, POST /replug.

--card: prints the HID boot-keyboard reports a keyboard-wedge reader sends for
each card (hex, one report per line).
`;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { card: { type: 'string', multiple: true }, serve: { type: 'string' }, 'control-port': { type: 'string' }, 'report-id': { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
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
  if (values.serve !== undefined) {
    const port = values['control-port'] === undefined ? 0 : Number(values['control-port']);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      process.stderr.write(`tallybox-sim card: --control-port ${values['control-port']} is not a port number\n`);
      return 2;
    }
    const reader = await CardReaderServer.start({ path: values.serve, ...(rid === undefined ? {} : { reportId: rid }) });
    const control = await startCardControl({ reader, port });
    process.stdout.write(JSON.stringify({ ready: true, socket: reader.path, control: control.url }) + '\n');
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await control.close();
    await reader.close();
    return 0;
  }
  const cards = values.card ?? [];
  if (cards.length === 0 || cards.some((c) => !/^[0-9A-Za-z]{1,32}$/.test(c))) {
    process.stderr.write(`tallybox-sim card: give --serve PATH, or --card with 1..32 digits or letters\n${HELP}`);
    return 2;
  }
  for (const c of cards) for (const r of cardToReports(c, rid === undefined ? {} : { reportId: rid })) process.stdout.write(r.toString('hex') + '\n');
  return 0;
}
