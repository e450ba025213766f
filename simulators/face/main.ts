/**
 * `tallybox-sim face --link PATH [--people N] [--dim 512|128] [--seed S] [--control-port P]`
 *
 * Creates a pseudo-terminal (simulators/lib/pty.ts): the agent opens PATH, the
 * simulated face module holds the master end and speaks the bridge protocol. Prints one JSON
 * line {"ready": true, "link": PATH, "control": URL} on stdout when ready and
 * runs until SIGINT/SIGTERM. Control interface: see control.ts / README.
 */
import { parseArgs } from 'node:util';
import type { ByteTransport } from '../../firmware-bridge/transport/types.js';
import { startControlServer, type ControlServer } from './control.js';
import { Population } from './population.js';
import { createPtyPair, type PtyPair } from '../lib/pty.js';
import { FaceModuleSim } from './sim.js';

export interface FaceSimulatorOptions {
  link: string;
  people?: number;
  dim?: number;
  seed?: number;
  /** 0 = any free port. */
  controlPort?: number;
  /** false: no HTTP control (in-process use). */
  control?: boolean;
}

export interface FaceSimulator {
  link: string;
  controlUrl: string | null;
  sim: FaceModuleSim;
  population: Population;
  close(): Promise<void>;
}

/** Start the simulator in this process (tests and the demo use this; the CLI wraps it). */
export async function startFaceSimulator(opts: FaceSimulatorOptions): Promise<FaceSimulator> {
  const population = new Population({ size: opts.people ?? 1000, dim: opts.dim ?? 512, seed: opts.seed ?? 1 });
  let pty: PtyPair | null = null;
  let transport: ByteTransport | null = null;
  let control: ControlServer | null = null;
  let sim: FaceModuleSim | null = null;
  const close = async () => {
    sim?.close();
    await control?.close();
    await transport?.close();
    await pty?.close();
  };
  try {
    pty = await createPtyPair({ link: opts.link });
    // The module's end is the pty master (already open). A real module runs at
    // 921600 baud (a 2 KB feature frame takes ~25 ms); on a pty the rate is nominal.
    transport = pty.device;
    sim = new FaceModuleSim({ transport, population });
    if (opts.control !== false) control = await startControlServer({ sim, port: opts.controlPort ?? 0 });
    return { link: pty.link, controlUrl: control?.url ?? null, sim, population, close };
  } catch (err) {
    await close();
    throw err;
  }
}

const HELP = `usage: tallybox-sim face --link PATH [options]

  --link PATH          pseudo-terminal the agent opens (a symlink to /dev/pts/N)
  --people N           population size (default 1000)
  --dim D              feature dimension, e.g. 512 (default) or 128
  --seed S             population seed (default 1): same seed, same people
  --control-port P     HTTP control port on 127.0.0.1 (default: any free port)

control (JSON): GET /state, POST /present {"person":N}, POST /spoof {"person":N},
                POST /tamper {"open":true|false}, POST /keypad {"keys":"1234"}
`;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        link: { type: 'string' },
        people: { type: 'string' },
        dim: { type: 'string' },
        seed: { type: 'string' },
        'control-port': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`tallybox-sim face: ${(err as Error).message}\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const int = (name: string, v: string | undefined, def: number, min: number, max: number): number => {
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} ${v} is not an integer in ${min}..${max}`);
    return n;
  };
  if (!values.link) {
    process.stderr.write(`tallybox-sim face: --link PATH is required\n${HELP}`);
    return 2;
  }
  let opts: FaceSimulatorOptions;
  try {
    opts = {
      link: values.link,
      people: int('people', values.people, 1000, 1, 1_000_000),
      dim: int('dim', values.dim, 512, 16, 1024),
      seed: int('seed', values.seed, 1, 0, 2 ** 32 - 1),
      controlPort: int('control-port', values['control-port'], 0, 0, 65535),
    };
  } catch (err) {
    process.stderr.write(`tallybox-sim face: ${(err as Error).message}\n`);
    return 2;
  }
  const sim = await startFaceSimulator(opts);
  process.stdout.write(JSON.stringify({ ready: true, link: sim.link, control: sim.controlUrl, people: sim.population.size, dim: sim.population.dim }) + '\n');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await sim.close();
  return 0;
}
