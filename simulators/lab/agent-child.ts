/**
 * One simulated device's agent: the built `tallybox run --config FILE` as a
 * child process, as systemd runs it on a device, with its stderr (JSON log
 * lines, no personal data) appended to the device's agent.log and parsed for
 * the few events the lab follows (enrolment outcomes). SIGKILL and restart
 * are the lab's faults; every child is killed when the lab's process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { TallyboxError } from '../../src/util/errors.js';
import { AGENT_CLI, CLOCK_PRELOAD } from './paths.js';

const live = new Set<ChildProcess>();
let hook = false;
function installExitHook(): void {
  if (hook) return;
  hook = true;
  process.once('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

export type AgentLogLine = Record<string, unknown> & { event?: string };

export interface AgentChildOptions {
  configFile: string;
  apiPort: number;
  logFile: string;
  clockFile: string;
}

export class AgentChild {
  readonly #o: AgentChildOptions;
  #proc: ChildProcess | undefined;
  #log: WriteStream;
  #tail = '';
  readonly #listeners = new Set<(l: AgentLogLine) => void>();
  starts = 0;
  lastExit: { code: number | null; signal: string | null } | undefined;

  constructor(o: AgentChildOptions) {
    this.#o = o;
    this.#log = createWriteStream(o.logFile, { flags: 'a', mode: 0o600 });
  }

  get apiPort(): number {
    return this.#o.apiPort;
  }
  get running(): boolean {
    const p = this.#proc;
    return !!p && p.exitCode === null && p.signalCode === null;
  }
  get pid(): number | undefined {
    return this.running ? this.#proc?.pid : undefined;
  }

  onLog(fn: (l: AgentLogLine) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Start and wait until its punch API answers (the agent is up; the link may still be connecting). */
  async start(timeoutMs = 60_000): Promise<void> {
    if (this.running) return;
    installExitHook();
    const proc = spawn(process.execPath, ['--import', CLOCK_PRELOAD, AGENT_CLI, 'run', '--config', this.#o.configFile], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, TALLYBOX_SIM_CLOCK_FILE: this.#o.clockFile, TALLYBOX_LAB_PARENT_PID: String(process.pid) },
    });
    this.#proc = proc;
    this.starts++;
    live.add(proc);
    proc.once('exit', (code, signal) => {
      live.delete(proc);
      this.lastExit = { code, signal };
    });
    proc.stderr!.on('data', (d: Buffer) => {
      this.#log.write(d);
      this.#tail += d.toString('utf8');
      let nl: number;
      while ((nl = this.#tail.indexOf('\n')) >= 0) {
        const line = this.#tail.slice(0, nl);
        this.#tail = this.#tail.slice(nl + 1);
        let parsed: AgentLogLine | undefined;
        try {
          parsed = JSON.parse(line) as AgentLogLine;
        } catch {
          continue; // not a log line (a crash trace): it is in agent.log
        }
        for (const l of this.#listeners) l(parsed);
      }
    });
    const end = performance.now() + timeoutMs;
    while (performance.now() < end) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new TallyboxError('LAB_AGENT_START_FAILED', `the agent exited (${proc.exitCode ?? proc.signalCode}) during start; see ${this.#o.logFile}`, { logFile: this.#o.logFile });
      }
      if (await this.state().then((s) => s !== undefined)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.kill();
    throw new TallyboxError('LAB_AGENT_START_FAILED', `the agent's punch API did not answer within ${timeoutMs} ms; see ${this.#o.logFile}`);
  }

  /** GET /v1/state, or undefined when the agent does not answer. */
  async state(): Promise<Record<string, unknown> | undefined> {
    try {
      const r = await fetch(`http://127.0.0.1:${this.#o.apiPort}/v1/state`, { signal: AbortSignal.timeout(2000) });
      return r.ok ? ((await r.json()) as Record<string, unknown>) : undefined;
    } catch {
      return undefined; // down, starting, or killed: the caller shows it as not answering
    }
  }

  /** SIGKILL (power cut): no clean DEATH, the broker publishes the will. */
  async kill(): Promise<void> {
    await this.#signal('SIGKILL');
  }

  /** SIGTERM (systemd stop), then SIGKILL if it does not exit within `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    const p = this.#proc;
    if (!p || !this.running) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
  }

  async #signal(sig: NodeJS.Signals): Promise<void> {
    const p = this.#proc;
    if (!p || !this.running) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill(sig);
    await exited;
  }

  async close(): Promise<void> {
    await this.stop();
    await new Promise<void>((r) => this.#log.end(() => r()));
  }
}
