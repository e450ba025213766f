/**
 * A P1 print box as it runs in the field, for the end-to-end and SIGKILL suites: a real
 * `tallybox run` child (the dist binary, device.kind p1), a `tallybox-sim printer` child on raw
 * 9100 + PJL, the embedded aedes broker, and the cloud emulator's parts (CloudSink, the command
 * signer, the HTTPS document service with its own CA, the PrintCloud desk that verifies results and
 * erasure receipts against the device's identity key). Everything waits for conditions, never for
 * a fixed time: the suites run on a loaded machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import sqlite3 from 'sqlite3';
import type { ConfigInput } from '../../../src/config/schema.js';
import type { DeviceState } from '../../../src/proto/index.js';
import { scanForSamples } from '../../../src/privacy/scan.js';
import { provisionKeyFiles } from '../../../src/vault/keys.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../../simulators/cloud/broker.js';
import { makePrivateCa, PrintDocServer, type PrivateCa } from '../../../simulators/cloud/print-docs.js';
import { PrintCloud } from '../../../simulators/cloud/print-jobs.js';
import { CommandSigner } from '../../../simulators/cloud/signer.js';
import { CloudSink } from '../../../simulators/cloud/sink.js';
import type { PrinterFaults, RecordedJob } from '../../../simulators/printer/types.js';
import { CLI, writeConfig } from '../../helpers/agent-process.js';
import { sleep, waitUntil } from '../../helpers/ports.js';

export const SIM_CLI = resolve(import.meta.dirname, '../../../dist/simulators/cli.js');
export const DEVICE = 'p1-e2e';
export const ORG = 'org-a';
export const ORG_B = 'org-b';

/** `tallybox-sim printer` in its own process, driven through its HTTP control. */
export class SimPrinterProcess {
  private constructor(
    private readonly proc: ChildProcess,
    readonly raw: number,
    readonly control: string,
    readonly out: string,
  ) {}

  static async start(out: string): Promise<SimPrinterProcess> {
    const proc = spawn(process.execPath, [SIM_CLI, 'printer', '--port', '0', '--out', out], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    const ready = await new Promise<{ raw: number; control: string }>((res, rej) => {
      const rl = createInterface({ input: proc.stdout! });
      const t = setTimeout(() => rej(new Error(`printer simulator did not start: ${err}`)), 60_000);
      rl.on('line', (l) => {
        try {
          const j = JSON.parse(l) as { ready?: boolean; raw: number; control: string };
          if (j.ready) {
            clearTimeout(t);
            res(j);
          }
        } catch {
          // a control reply or a non-JSON line: not the ready line
        }
      });
      proc.once('exit', (c) => rej(new Error(`printer simulator exited ${c}: ${err}`)));
    });
    return new SimPrinterProcess(proc, ready.raw, ready.control, out);
  }

  async #post(path: string, body?: unknown): Promise<void> {
    const r = await fetch(this.control + path, { method: 'POST', ...(body ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}) });
    const j = (await r.json()) as { ok: boolean; error?: string };
    if (!j.ok) throw new Error(`printer control ${path}: ${j.error}`);
  }

  faults(f: Partial<PrinterFaults>): Promise<void> {
    return this.#post('/faults', f);
  }

  clear(): Promise<void> {
    return this.#post('/clear');
  }

  async status(): Promise<{ state: string; reasons: string[] }> {
    return ((await (await fetch(this.control + '/state')).json()) as { status: { state: string; reasons: string[] } }).status;
  }

  /** What the printer received (jobs.json, with the job names the control page hides). */
  jobs(): RecordedJob[] {
    try {
      return (JSON.parse(readFileSync(join(this.out, 'jobs.json'), 'utf8')) as { jobs: RecordedJob[] }).jobs;
    } catch {
      return []; // no job yet (or the index is being replaced: read again later)
    }
  }

  /** The documents printed to completion under a job name, byte for byte. */
  printed(jobId: string): Buffer[] {
    return this.jobs()
      .filter((j) => j.name === jobId && j.state === 'completed')
      .map((j) => readFileSync(join(this.out, j.file)));
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    await new Promise<void>((r) => {
      this.proc.once('exit', () => r());
      this.proc.kill('SIGTERM');
    });
  }
}

export interface LogLine {
  event?: string;
  jobId?: string;
  from?: string;
  to?: string;
  [k: string]: unknown;
}

/** `tallybox run` as systemd runs it; its JSON log lines are parsed as they come (kills are timed from them). */
export class AgentChild {
  proc: ChildProcess | undefined;
  readonly lines: LogLine[] = [];
  stderrTail = '';
  starts = 0;
  readonly #listeners = new Set<(l: LogLine) => void>();

  constructor(readonly configFile: string) {}

  onLine(fn: (l: LogLine) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  #killed = false;

  /**
   * Start and wait until the link is online (commands can be received): true. False when our own
   * kill() ended it first (a kill timed to land during the start); any other exit throws.
   */
  async start(timeoutMs = 90_000): Promise<boolean> {
    this.#killed = false;
    const p = spawn(process.execPath, [CLI, 'run', '--config', this.configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = p;
    this.starts++;
    let online = false;
    const rl = createInterface({ input: p.stderr! });
    rl.on('line', (text) => {
      this.stderrTail = (this.stderrTail + text + '\n').slice(-20_000);
      let l: LogLine;
      try {
        l = JSON.parse(text) as LogLine;
      } catch {
        return; // not a log line (a crash trace): kept in stderrTail
      }
      if (l.event === 'link_state' && l.to === 'online') online = true;
      if (this.lines.length > 20_000) this.lines.splice(0, 5000);
      this.lines.push(l);
      for (const fn of this.#listeners) fn(l);
    });
    const end = performance.now() + timeoutMs;
    while (!online) {
      if (this.#killed) return false;
      if (p.exitCode !== null || p.signalCode !== null) throw new Error(`agent exited with ${p.exitCode ?? p.signalCode}: ${this.stderrTail}`);
      if (performance.now() > end) throw new Error(`agent did not come online: ${this.stderrTail}`);
      await sleep(25);
    }
    return true;
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** SIGKILL (or another signal) and wait for the exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    this.#killed = true;
    await new Promise<void>((r) => {
      p.once('exit', () => r());
      p.kill(signal);
    });
  }

  stop(): Promise<void> {
    return this.kill('SIGTERM');
  }
}

export interface P1World {
  dir: string;
  dataDir: string;
  spoolDir: string;
  broker: EmbeddedBroker;
  sink: CloudSink;
  signer: CommandSigner;
  cloud: PrintCloud;
  deviceKey: KeyObject;
  ca: PrivateCa;
  docs: PrintDocServer;
  printer: SimPrinterProcess;
  agent: AgentChild;
  configInput: ConfigInput;
  /** The newest DeviceState the cloud has from the device. */
  state(): DeviceState | undefined;
  /** Wait for a job's newest status to be `state` (by name: confirmed, uncertain, ...). */
  waitJob(jobId: string, state: string | string[], timeoutMs?: number): Promise<void>;
  /** Wait for a command's first result (by counter). */
  result(counter: number, timeoutMs?: number): Promise<import('../../../src/proto/index.js').CommandResult>;
  /**
   * Wait until the agent answers print commands (its link subscribed, its print role started): a
   * CancelJob for a job that does not exist is refused as unknown_job then. False if it stopped.
   */
  commandsReady(timeoutMs?: number): Promise<boolean>;
  /** The spool files now on disk. */
  spoolFiles(): string[];
  /** Spool directory + every database file of the data dir (what may hold a document's traces). */
  dataFiles(): string[];
  /** The job's row in the spool database (read-only, from outside the agent). */
  jobRow(jobId: string): Promise<{ state: string; hasKey: boolean } | undefined>;
  cleanup(): Promise<void>;
}

export interface WorldOptions {
  /** p1 section overrides. */
  p1?: Record<string, unknown>;
  servedOrgs?: string[];
  /** The cloud's command signer (default: a new key); the agent pins its public key. */
  signer?: CommandSigner;
  /** The privacy section (e.g. a short purge retry). */
  privacy?: Record<string, unknown>;
}

/** A world whose agent is started and ready for commands (what most suites begin with). */
export async function startedP1World(opts: WorldOptions = {}): Promise<P1World> {
  const w = await p1World(opts);
  await w.agent.start();
  await w.commandsReady();
  return w;
}

export async function p1World(opts: WorldOptions = {}): Promise<P1World> {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-p1e2e-'));
  const cleanups: (() => Promise<void> | void)[] = [() => rmSync(dir, { recursive: true, force: true })];
  const undo = async () => {
    for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined); // cleanup is best effort: the next step must still run
  };
  try {
    const dataDir = join(dir, 'data');
    const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    const deviceKey = createPublicKey(keys.publicKeyPem);
    const broker = await startEmbeddedBroker();
    cleanups.push(() => broker.close());
    const sink = await CloudSink.connect({ url: broker.url });
    cleanups.push(() => sink.close());
    const signer = opts.signer ?? new CommandSigner({ keyId: 'cloud-e2e' });
    const cloud = new PrintCloud({ sink, signer, deviceId: DEVICE, deviceKey });
    const ca = await makePrivateCa();
    cleanups.push(() => ca.cleanup());
    const docs = await PrintDocServer.start({ ca });
    cleanups.push(() => docs.close());
    const printer = await SimPrinterProcess.start(join(dir, 'printer-out'));
    cleanups.push(() => printer.stop());
    const configInput = {
      version: 1,
      device: { id: DEVICE, kind: 'p1', orgId: ORG, servedOrgs: opts.servedOrgs ?? [ORG, ORG_B] },
      region: 'sg',
      dataDir,
      broker: { url: broker.url, allowLoopback: true, keepaliveSec: 5, reconnectMinMs: 50, reconnectMaxMs: 500, connectTimeoutMs: 5000 },
      vault: { kekFile: keys.kekPath },
      cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
      clock: { source: 'assume-synced' },
      outbox: { backlogRatePerSec: 0 },
      log: { level: 'info' },
      ...(opts.privacy ? { privacy: opts.privacy } : {}),
      p1: {
        printers: { front: { url: `raw://127.0.0.1:${printer.raw}?pjl=1` } },
        fetch: { caFile: ca.caFile, timeoutMs: 60_000 },
        chunkBytes: 16 * 1024,
        inlineMaxBytes: 48 * 1024,
        retry: { minMs: 100, maxMs: 1000 },
        heartbeatMs: 300,
        ...opts.p1,
      },
    } as unknown as ConfigInput;
    const agent = new AgentChild(writeConfig(dir, configInput));
    cleanups.push(() => agent.kill());
    const spoolDir = join(dataDir, 'spool');
    const w: P1World = {
      dir,
      dataDir,
      spoolDir,
      broker,
      sink,
      signer,
      cloud,
      deviceKey,
      ca,
      docs,
      printer,
      agent,
      configInput,
      state: () => sink.state(DEVICE),
      waitJob: (jobId, state, timeoutMs = 60_000) => {
        const want = Array.isArray(state) ? state : [state];
        return waitUntil(() => want.includes(cloud.job(jobId)?.stateName ?? ''), timeoutMs, `job ${jobId} ${want.join('|')} (is ${cloud.job(jobId)?.stateName})`);
      },
      result: async (counter, timeoutMs = 60_000) => {
        try {
          // The command's own answer: a job's later statuses (print_job_status) share its counter.
          const end = performance.now() + timeoutMs;
          for (;;) {
            const hit = sink.rawResults().find((x) => x.result.counter === counter && x.result.reason !== 'print_job_status');
            if (hit) return hit.result;
            if (performance.now() > end) throw new Error(`timed out waiting for the result of command ${counter}`);
            await sleep(20);
          }
        } catch (err) {
          // Say whether the agent is still there, and what it said last: a crash is not a slow machine.
          throw new Error(`${(err as Error).message} (agent running: ${agent.running}, exit ${agent.proc?.exitCode ?? agent.proc?.signalCode})\n${agent.stderrTail.slice(-3000)}`);
        }
      },
      commandsReady: async (timeoutMs = 90_000) => {
        const end = performance.now() + timeoutMs;
        while (performance.now() < end) {
          if (!agent.running) return false;
          const counter = await cloud.cancelJob(ORG, 'no-such-job');
          const r = await sink.waitForResult(counter, 3000).catch(() => undefined); // not subscribed yet: the command was dropped; again
          if (r?.result.reason === 'unknown_job') return true;
          if (r) await sleep(100); // print_role_not_started: the role is still starting
        }
        throw new Error(`the agent did not answer print commands within ${timeoutMs} ms: ${agent.stderrTail.slice(-3000)}`);
      },
      spoolFiles: () => {
        try {
          return readdirSync(spoolDir);
        } catch {
          return []; // not created yet
        }
      },
      dataFiles: () => [
        ...w.spoolFiles().map((n) => join(spoolDir, n)),
        ...readdirSync(dataDir)
          .filter((n) => /\.db(-wal|-shm|-journal)?$/.test(n))
          .map((n) => join(dataDir, n)),
      ],
      jobRow: (jobId) => readJobRow(join(dataDir, 'p1-spool.db'), jobId),
      cleanup: undo,
    };
    return w;
  } catch (err) {
    await undo();
    throw err;
  }
}

/** Read one job's row from outside the agent (a read-only connection; WAL lets it read beside the writer). */
function readJobRow(db: string, jobId: string): Promise<{ state: string; hasKey: boolean } | undefined> {
  return new Promise((res, rej) => {
    const d = new sqlite3.Database(db, sqlite3.OPEN_READONLY, (err) => {
      if (err) return rej(err);
      d.get('SELECT state, wrapped_key FROM p1_jobs WHERE job_id = ?', [jobId], (e, row: { state: string; wrapped_key: Buffer | null } | undefined) => {
        d.close();
        if (e) rej(e);
        else res(row ? { state: row.state, hasKey: !!row.wrapped_key?.length } : undefined);
      });
    });
  });
}

/** Samples of a document for the fragment scan, taken before the job is sent. */
export function samplesOf(doc: Buffer): { bytes: Buffer; label: 'ciphertext'; scope: 'all' }[] {
  return [0, Math.floor(doc.length / 3), Math.floor(doc.length / 2), doc.length - 32]
    .filter((at) => at >= 0 && at + 32 <= doc.length)
    .map((at) => ({ bytes: Buffer.from(doc.subarray(at, at + 32)), label: 'ciphertext' as const, scope: 'all' as const }));
}

/** Scan the spool directory and every database file for fragments of the documents. */
export async function fragmentHits(w: P1World, docs: readonly Buffer[]): Promise<number> {
  const samples = docs.flatMap(samplesOf);
  if (!samples.length) return 0;
  const scan = await scanForSamples(
    w.dataFiles().map((path) => ({ path, scope: 'store' as const })),
    samples,
  );
  return scan.hits;
}

/** A document of random bytes (its samples occur nowhere else by chance). */
export function document(bytes: number): Buffer {
  return randomBytes(bytes);
}
