/**
 * `tallybox-sim fingerprint --link PATH [--capacity 1000] [--control PORT | --control-socket PATH] [--baud N] [--no-pacing]`
 * Prints one JSON line when ready ({"event":"ready","link":…,"control":…}) and runs
 * until SIGINT/SIGTERM, then removes the pty and exits 0.
 */
import { parseArgs } from 'node:util';
import { startFingerprintSimulator } from './simulator.js';

const USAGE = `usage: tallybox-sim fingerprint --link PATH [options]

Simulates an R30x/AS608 fingerprint module on a pseudo-terminal (openpty). The agent
opens PATH with serialport exactly like /dev/ttyS1.

options:
  --link PATH            host-side pty symlink to create (required)
  --capacity N           library pages, 1..1024 (default 1000)
  --control PORT         control HTTP server on 127.0.0.1:PORT (default: a free port)
  --control-socket PATH  control HTTP server on a unix socket instead
  --no-control           no control server
  --password HEX         module password, 8 hex digits (default 00000000)
  --packet-size-code N   0..3 = 32/64/128/256-byte data packets (default 2)
  --seed TEXT            seed of the deterministic templates
  --baud N               module baud rate, 9600 × N for N 1..12 (default 57600): what ReadSysPara
                         reports, the pty's termios speed, and the pace of the replies
  --no-pacing            send replies at memory speed instead of bytes × 10 / baud (fast tests)

Control endpoints: see firmware-bridge/r30x/README.md (GET / on the server lists them).`;

export async function main(argv: string[]): Promise<number> {
  return runFingerprintCli(argv, {
    stop: new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    }),
  });
}

export interface CliIo {
  /** Resolves when the simulator should shut down (signals in main, a promise in tests). */
  stop: Promise<void>;
  out?: (line: string) => void;
  err?: (line: string) => void;
}

/** main() without process-wide side effects, so tests can run the CLI in-process. */
export async function runFingerprintCli(argv: string[], io: CliIo): Promise<number> {
  const out = io.out ?? ((l: string) => void process.stdout.write(l + '\n'));
  const err = io.err ?? ((l: string) => void process.stderr.write(l + '\n'));
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        link: { type: 'string' },
        capacity: { type: 'string' },
        control: { type: 'string' },
        'control-socket': { type: 'string' },
        'no-control': { type: 'boolean' },
        password: { type: 'string' },
        'packet-size-code': { type: 'string' },
        seed: { type: 'string' },
        baud: { type: 'string' },
        'no-pacing': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (e) {
    err(`tallybox-sim fingerprint: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    out(USAGE);
    return 0;
  }
  const bad = (msg: string) => {
    err(`tallybox-sim fingerprint: ${msg}`);
    return 2;
  };
  if (!values.link) return bad('--link PATH is required');
  const int = (name: string, raw: string | undefined, min: number, max: number): number | undefined | Error => {
    if (raw === undefined) return undefined;
    const n = Number(raw);
    return Number.isInteger(n) && n >= min && n <= max ? n : new Error(`--${name} ${raw} is not an integer ${min}..${max}`);
  };
  const capacity = int('capacity', values.capacity, 1, 1024);
  const port = int('control', values.control, 0, 65535);
  const packetSizeCode = int('packet-size-code', values['packet-size-code'], 0, 3);
  const baudRate = int('baud', values.baud, 9600, 115200);
  for (const v of [capacity, port, packetSizeCode, baudRate]) if (v instanceof Error) return bad(v.message);
  if (typeof baudRate === 'number' && (baudRate % 9600 !== 0 || baudRate > 115200)) return bad(`--baud ${baudRate} is not 9600 × N for N 1..12`);
  let password: number | undefined;
  if (values.password !== undefined) {
    if (!/^[0-9a-fA-F]{8}$/.test(values.password)) return bad(`--password ${values.password} is not 8 hex digits`);
    password = parseInt(values.password, 16);
  }
  if (values.control !== undefined && values['control-socket'] !== undefined) return bad('--control and --control-socket exclude each other');

  const sim = await startFingerprintSimulator({
    link: values.link,
    ...(capacity !== undefined ? { capacity: capacity as number } : {}),
    ...(packetSizeCode !== undefined ? { packetSizeCode: packetSizeCode as number } : {}),
    ...(baudRate !== undefined ? { baudRate: baudRate as number } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(values.seed !== undefined ? { seed: values.seed } : {}),
    // Paced by default: developers point real clients at this, and their timeouts must meet real timing.
    pacing: values['no-pacing'] !== true,
    control: values['no-control'] ? false : values['control-socket'] !== undefined ? { socketPath: values['control-socket'] } : { port: (port as number | undefined) ?? 0 },
  });
  out(JSON.stringify({ event: 'ready', link: sim.link, capacity: sim.device.capacity, baudRate: sim.device.baudRate, pacing: sim.deviceLink.pacing, control: sim.control }));
  try {
    await io.stop;
  } finally {
    await sim.close();
  }
  return 0;
}
