/**
 * `tallybox-sim printer`: an office printer for a P1 print box in another process (or for CUPS's
 * own tools): raw TCP 9100 with PJL status (raw-server.ts), IPP on another port (ipp-server.ts),
 * each job's bytes recorded to DIR (recorder.ts), faults on the command line and at run time
 * (control.ts: stdin lines or HTTP on 127.0.0.1).
 *
 * Prints one line {"ready":true,"raw":PORT,"ipp":PORT|null,"control":URL,"out":DIR} and runs until
 * SIGINT/SIGTERM (or stdin closes, when --stdin-control is not turned off).
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { describeError } from '../../src/util/errors.js';
import { SimPrinterContext } from './context.js';
import { attachStdinControl, startPrinterControl } from './control.js';
import { startIppServer } from './ipp-server.js';
import { startRawServer } from './raw-server.js';
import { DirJobRecorder } from './recorder.js';
import type { PrinterFaults, StartedServer } from './types.js';

export { SimPrinterContext } from './context.js';
export { DirJobRecorder } from './recorder.js';
export { startRawServer } from './raw-server.js';

const HELP = `usage: tallybox-sim printer --port N --out DIR [--ipp-port M] [--host H] [--control-port P]
                             [--offline] [--busy] [--slow BPS] [--paper-out-after BYTES]
                             [--close-after BYTES] [--never-confirm]

A simulated office printer. Raw TCP 9100 (AppSocket) on --port, PJL-aware (INFO STATUS,
USTATUS JOB START/END with PAGES, USTATUS DEVICE); IPP on --ipp-port. Each job's document
bytes go to DIR/job-N.bin, listed in DIR/jobs.json (numbering continues over an earlier run).
Port 0 picks a free port. --host defaults to 127.0.0.1.

Faults: --offline (connections refused), --busy (refused, as while another job prints),
--slow BPS (reads BPS bytes/s), --paper-out-after BYTES (stops reading after BYTES of a job:
state stopped, media-empty, until "resume"), --close-after BYTES (closes the connection after
BYTES of a job), --never-confirm (no USTATUS JOB END; IPP jobs stay processing).

Prints {"ready":true,"raw":PORT,"ipp":PORT|null,"control":URL,"out":DIR} once listening.
Run-time control, one JSON reply line each:
  stdin:  fault offline|busy|never-confirm on|off, fault slow|paper-out|close-after N (0 = off),
          resume, clear, status, jobs
  HTTP (127.0.0.1, URL above): GET /state, POST /faults {"paperOutAfterBytes":1000,...},
          POST /resume, POST /clear
`;

function portArg(v: string | undefined, what: string, required: boolean): number | undefined {
  if (v === undefined) {
    if (required) throw new Error(`${what} is required`);
    return undefined;
  }
  const n = Number(v);
  if (!/^\d{1,5}$/.test(v) || n > 65535) throw new Error(`${what} ${v} is not a port number (0..65535)`);
  return n;
}

function countArg(v: string | undefined, what: string): number {
  if (v === undefined) return 0;
  if (!/^\d{1,15}$/.test(v)) throw new Error(`${what} ${v} is not a whole number of bytes`);
  return Number(v);
}

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        port: { type: 'string' },
        'ipp-port': { type: 'string' },
        host: { type: 'string' },
        'control-port': { type: 'string' },
        out: { type: 'string' },
        offline: { type: 'boolean' },
        busy: { type: 'boolean' },
        slow: { type: 'string' },
        'paper-out-after': { type: 'string' },
        'close-after': { type: 'string' },
        'never-confirm': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`tallybox-sim printer: ${(err as Error).message}\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let port: number;
  let ippPort: number | undefined;
  let controlPort: number;
  let faults: Partial<PrinterFaults>;
  try {
    port = portArg(values.port, '--port', true)!;
    ippPort = portArg(values['ipp-port'], '--ipp-port', false);
    controlPort = portArg(values['control-port'], '--control-port', false) ?? 0;
    if (!values.out) throw new Error('--out DIR is required');
    faults = {
      offline: values.offline ?? false,
      busy: values.busy ?? false,
      neverConfirm: values['never-confirm'] ?? false,
      slowBytesPerSec: countArg(values.slow, '--slow'),
      paperOutAfterBytes: countArg(values['paper-out-after'], '--paper-out-after'),
      closeAfterBytes: countArg(values['close-after'], '--close-after'),
    };
  } catch (err) {
    process.stderr.write(`tallybox-sim printer: ${(err as Error).message}\n${HELP}`);
    return 2;
  }
  const host = values.host ?? '127.0.0.1';
  let ctx: SimPrinterContext;
  try {
    const recorder = new DirJobRecorder(values.out!);
    if (recorder.recovered.length) process.stderr.write(`tallybox-sim printer: ${recorder.recovered.length} job(s) an earlier run left half-received are now marked aborted in jobs.json\n`);
    ctx = new SimPrinterContext(recorder, faults);
  } catch (err) {
    process.stderr.write(`tallybox: ${describeError(err)}\n`);
    return 78;
  }
  const servers: StartedServer[] = [];
  let control: Awaited<ReturnType<typeof startPrinterControl>> | undefined;
  try {
    const raw = await startRawServer(ctx, { host, port });
    servers.push(raw);
    let ipp: StartedServer | undefined;
    if (ippPort !== undefined) {
      ipp = await startIppServer(ctx, { host, port: ippPort });
      servers.push(ipp);
    }
    control = await startPrinterControl(ctx, controlPort);
    process.stdout.write(JSON.stringify({ ready: true, raw: raw.port, ipp: ipp?.port ?? null, control: control.url, out: values.out }) + '\n');
  } catch (err) {
    process.stderr.write(`tallybox: ${describeError(err)}\n`);
    for (const s of servers) await s.close();
    await control?.close();
    return 1;
  }
  const rl = createInterface({ input: process.stdin, terminal: false });
  attachStdinControl(ctx, rl, (line) => process.stdout.write(line + '\n'));
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  rl.close();
  await control.close();
  for (const s of servers) await s.close();
  return 0;
}
