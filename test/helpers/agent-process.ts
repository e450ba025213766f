/**
 * Runs the built agent (`node dist/src/cli/tallybox.js run`) as a separate
 * process, as systemd would, so tests can SIGKILL it and start it again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { dump as stringify } from 'js-yaml';
import type { ConfigInput } from '../../src/config/schema.js';
import { uuidv7 } from '../../src/util/uuidv7.js';
import { sleep } from './ports.js';

export const CLI = resolve(import.meta.dirname, '../../dist/src/cli/tallybox.js');

export function writeConfig(dir: string, config: ConfigInput): string {
  const file = join(dir, 'tallybox.yaml');
  writeFileSync(file, stringify(config));
  return file;
}

export class AgentProcess {
  private proc: ChildProcess | undefined;
  stderr = '';

  constructor(
    private readonly configFile: string,
    readonly apiPort: number,
  ) {}

  async start(): Promise<void> {
    this.proc = spawn(process.execPath, [CLI, 'run', '--config', this.configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-20_000);
    });
    // Ready when the punch API answers.
    for (let i = 0; i < 400; i++) {
      if (this.proc.exitCode !== null) throw new Error(`agent exited with ${this.proc.exitCode}: ${this.stderr}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.apiPort}/v1/state`);
        if (r.ok) return;
      } catch {
        // not up yet
      }
      await sleep(25);
    }
    throw new Error(`agent did not start: ${this.stderr}`);
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null;
    return new Promise((resolve) => {
      p.once('exit', (code) => resolve(code));
      p.kill(signal);
    });
  }
}

export type PunchOutcome = { status: 'accepted'; eventId: string; seq: number } | { status: 'refused'; eventId: string; code: string } | { status: 'unknown'; eventId: string };

/** POST one punch with a client-chosen event id, so an unknown outcome can still be traced. */
export async function postPunch(port: number, body: { orgId: string; subjectId: string; method: string; eventId?: string }): Promise<PunchOutcome> {
  const eventId = body.eventId ?? uuidv7();
  try {
    const r = await fetch(`http://127.0.0.1:${port}/v1/punch`, { method: 'POST', body: JSON.stringify({ ...body, eventId }), headers: { 'content-type': 'application/json' } });
    const j = (await r.json()) as { seq?: number; error?: { code: string } };
    if (r.status === 201) return { status: 'accepted', eventId, seq: j.seq! };
    return { status: 'refused', eventId, code: j.error?.code ?? String(r.status) };
  } catch {
    return { status: 'unknown', eventId };
  }
}
