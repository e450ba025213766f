/**
 * A real Mosquitto broker on loopback, started on a free port with its own
 * config and process, stopped and restarted at will: for integration tests,
 * benchmarks, and developers who want the production broker locally.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, sleep } from '../lib/ports.js';

export function mosquittoPath(): string | undefined {
  for (const p of ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto']) if (existsSync(p)) return p;
  const r = spawnSync('sh', ['-c', 'command -v mosquitto'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

/** Broker dirs of this process: removed when it exits (stop() is also an outage, followed by resume(), so it cannot remove them). */
const brokerDirs = new Set<string>();
process.once('exit', () => {
  for (const d of brokerDirs) rmSync(d, { recursive: true, force: true });
});

export class Mosquitto {
  private proc: ChildProcess | undefined;
  private constructor(
    readonly port: number,
    private readonly conf: string,
    private readonly bin: string,
  ) {}

  /** The broker's process id while it runs (the fleet report reads its CPU time). */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** `extraConfig`: more mosquitto.conf lines (e.g. a TLS listener). */
  static async start(opts: { extraConfig?: string[] } = {}): Promise<Mosquitto> {
    const bin = mosquittoPath();
    if (!bin) throw new Error('mosquitto is not installed (apt-get install mosquitto); .ci/run installs it');
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'tbx-mosq-'));
    // Started as root, mosquitto drops to its own user: it must be able to write its
    // persistence file here (a private temp dir, removed with the machine's tmp).
    chmodSync(dir, 0o777);
    brokerDirs.add(dir);
    const conf = join(dir, 'mosquitto.conf');
    // Persistence on (saved at a clean stop): a cloud subscriber's persistent session and its
    // queued QoS 1 messages survive a broker restart, as on a production broker.
    writeFileSync(
      conf,
      [
        `listener ${port} 127.0.0.1`,
        'allow_anonymous true',
        'persistence true',
        `persistence_location ${dir}/`,
        'autosave_interval 0',
        'max_inflight_messages 0',
        'max_queued_messages 0',
        'log_dest none',
        ...(opts.extraConfig ?? []),
        '',
      ].join('\n'),
    );
    const m = new Mosquitto(port, conf, bin);
    await m.resume();
    return m;
  }

  /** (Re)start the broker process on the same port. */
  async resume(): Promise<void> {
    if (this.proc) return;
    this.proc = spawn(this.bin, ['-c', this.conf], { stdio: 'ignore' });
    for (let i = 0; i < 200; i++) {
      if (await portOpen(this.port)) return;
      await sleep(25);
    }
    throw new Error(`mosquitto did not open port ${this.port}`);
  }

  /** Stop the broker (an outage: every connection drops). SIGTERM saves persistent sessions. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill(signal);
    });
  }
}
