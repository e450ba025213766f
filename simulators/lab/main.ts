/**
 * `tallybox-sim lab --config lab.yaml [--broker URL] [--port N] [--seed S] [--record FILE] [--replay FILE [--once]] [--dir DIR]`
 *
 * Starts the site the lab file describes (see docs/lab.md and
 * examples/lab.yaml), serves the control API and the page on 127.0.0.1:PORT,
 * prints one JSON line {"ready":true,"url":…} and runs until SIGINT/SIGTERM,
 * then stops every agent, simulator and mount it started. With --replay it
 * runs a record's actions again (same lab file and seed) and prints a summary
 * line; --once then exits.
 */
import { parseArgs } from 'node:util';
import { describeError, isTallyboxError } from '../../src/util/errors.js';
import { loadLabConfig } from './config.js';
import { Lab } from './lab.js';
import { startLabServer } from './server.js';

const HELP = `usage: tallybox-sim lab --config lab.yaml [options]

  --config FILE    the lab file (YAML; see docs/lab.md, examples/lab.yaml)
  --broker URL     use this MQTT broker instead of the embedded one
  --port N         control API and page on 127.0.0.1:N (default 8090; 0 = any free port)
  --seed S         seed of everything simulated (default: the lab file's seed)
  --record FILE    record every action (JSON lines) for --replay
  --replay FILE    run a record's actions again (same lab file and seed)
  --once           with --replay: exit when the replay is done and delivered
  --dir DIR        working directory (default a fresh temp dir, removed at exit)

API: simulators/lab/openapi.yaml (also GET /openapi.yaml); page: GET /.`;

const CONFIG_CODES = new Set(['LAB_CONFIG', 'LAB_REPLAY_INVALID', 'LAB_REPLAY_MISMATCH']);

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' },
        broker: { type: 'string' },
        port: { type: 'string', default: '8090' },
        seed: { type: 'string' },
        record: { type: 'string' },
        replay: { type: 'string' },
        once: { type: 'boolean' },
        dir: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`tallybox-sim lab: ${(err as Error).message}\n${HELP}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const usage = (m: string) => {
    process.stderr.write(`tallybox-sim lab: ${m}\n`);
    return 2;
  };
  if (!values.config) return usage('--config FILE is required');
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return usage(`--port ${values.port} is not a port number`);
  const seed = values.seed === undefined ? undefined : Number(values.seed);
  if (seed !== undefined && (!Number.isInteger(seed) || seed < 0 || seed > 2 ** 31 - 1)) return usage(`--seed ${values.seed} is not an integer 0..2147483647`);
  if (values.once && !values.replay) return usage('--once needs --replay FILE');

  let lab: Lab | undefined;
  let server: Awaited<ReturnType<typeof startLabServer>> | undefined;
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  try {
    const { config, text } = loadLabConfig(values.config);
    lab = await Lab.start({
      config,
      configText: text,
      ...(values.broker ? { brokerUrl: values.broker } : {}),
      ...(seed !== undefined ? { seed } : {}),
      ...(values.record ? { record: values.record } : {}),
      ...(values.dir ? { dir: values.dir } : {}),
      onProgress: (l) => process.stderr.write(`${l}\n`),
    });
    server = await startLabServer(lab, { port });
    process.stdout.write(`${JSON.stringify({ ready: true, url: server.url, broker: lab.brokerUrl, seed: lab.seed, devices: lab.devices().map((d) => d.name) })}\n`);
    if (values.replay) {
      const r = await lab.replay(values.replay, { onAction: (a, res) => process.stderr.write(`replay #${a.seq} ${a.action.type}: ${JSON.stringify(res).slice(0, 200)}\n`) });
      const delivered = await lab.settle();
      const perDevice: Record<string, { subject: string | null; method: string; seq: number }[]> = {};
      for (const p of lab.punches()) (perDevice[p.deviceId] ??= []).push({ subject: p.person, method: p.method, seq: p.seq });
      process.stdout.write(`${JSON.stringify({ replayed: r.actions, failed: r.failed, delivered, punches: perDevice })}\n`);
      if (values.once) return r.failed === 0 && delivered ? 0 : 1;
    }
    await stopped;
    return 0;
  } catch (err) {
    process.stderr.write(`tallybox-sim: ${describeError(err)}\n`);
    return isTallyboxError(err) && CONFIG_CODES.has(err.code) ? 78 : 1;
  } finally {
    await server?.close();
    await lab?.close();
  }
}
