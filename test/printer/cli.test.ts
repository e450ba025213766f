import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { isDeviceError } from '../../firmware-bridge/devices.js';
import { RawPrinter } from '../../firmware-bridge/printer/raw9100.js';
import { waitUntil } from '../helpers/ports.js';
import { document, documentHash, fileHash } from './helpers.js';

const CLI = resolve(import.meta.dirname, '../../dist/simulators/cli.js');
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tallybox-printer-cli-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Ready {
  ready: true;
  raw: number;
  ipp: number | null;
  control: string;
  out: string;
}

async function startCli(args: string[]): Promise<{ ready: Ready; proc: ChildProcess; lines: Interface; send(line: string): Promise<Record<string, unknown>> }> {
  const proc = spawn(process.execPath, [CLI, 'printer', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => {
    stderr += String(d);
  });
  cleanups.push(() => new Promise<void>((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : (proc.once('exit', () => r()), proc.kill('SIGTERM')))));
  const lines = createInterface({ input: proc.stdout! });
  const queue: string[] = [];
  const waiters: Array<(l: string) => void> = [];
  lines.on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else queue.push(l);
  });
  const next = () =>
    new Promise<string>((res, rej) => {
      const q = queue.shift();
      if (q !== undefined) return res(q);
      waiters.push(res);
      proc.once('exit', (c) => rej(new Error(`simulator exited ${c}: ${stderr}`)));
    });
  const ready = JSON.parse(await next()) as Ready;
  return {
    ready,
    proc,
    lines,
    async send(line) {
      proc.stdin!.write(line + '\n');
      return JSON.parse(await next()) as Record<string, unknown>;
    },
  };
}

describe('tallybox-sim printer (a separate process)', () => {
  it('prints one ready line, records jobs to --out, takes faults at run time on stdin and over HTTP', async () => {
    const out = join(tempDir(), 'out');
    const sim = await startCli(['--port', '0', '--out', out]);
    expect(sim.ready).toMatchObject({ ready: true, ipp: null, out });
    expect(sim.ready.raw).toBeGreaterThan(0);
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.ready.raw, pjl: true });
    const r = await p.send({ jobName: 'cli-1', format: 'application/pdf', copies: 1, document: document('cli', 300_000) });
    expect(r.jobState).toBe('completed');
    const jobs = JSON.parse(readFileSync(join(out, 'jobs.json'), 'utf8')).jobs;
    expect(jobs).toMatchObject([{ id: 1, bytes: 300_000, state: 'completed', file: 'job-1.bin' }]);
    expect(await fileHash(join(out, 'job-1.bin'))).toBe(await documentHash('cli', 300_000));

    expect(await sim.send('fault offline on')).toMatchObject({ ok: true, faults: { offline: true } });
    await expect(p.probe()).rejects.toMatchObject({ code: 'PRINTER_UNREACHABLE' });
    expect(await sim.send('fault offline off')).toMatchObject({ ok: true, faults: { offline: false } });
    await waitUntil(
      () =>
        p.probe().then(
          () => true,
          () => false,
        ),
      20_000,
      'back online',
    );

    expect(await sim.send('fault paper-out 1000')).toMatchObject({ ok: true, faults: { paperOutAfterBytes: 1000 } });
    const stopped = await p.send({ jobName: 'cli-2', format: 'application/pdf', copies: 1, document: document('cli2', 20_000_000) }).catch((e: unknown) => e);
    expect(isDeviceError(stopped, 'PRINTER_STOPPED')).toBe(true);
    expect(await sim.send('status')).toMatchObject({ ok: true, status: { state: 'stopped', reasons: ['media-empty'] } });
    expect(await sim.send('fault paper-out x')).toMatchObject({ ok: false });
    expect(await sim.send('bogus')).toMatchObject({ ok: false });
    expect(await sim.send('clear')).toMatchObject({ ok: true, faults: { paperOutAfterBytes: 0 } });
    // paper back in: the stopped job reads on, meets the client's reset, and the printer is idle
    await waitUntil(async () => ((await sim.send('status')).status as { state: string }).state === 'idle', 20_000, 'idle after clear');

    // HTTP control: the same switches
    const bad = await fetch(`${sim.ready.control}/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"closeAfterBytes":-1}' });
    expect(bad.status).toBe(400);
    const unknown = await fetch(`${sim.ready.control}/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"fire":true}' });
    expect(unknown.status).toBe(400);
    const ok = await fetch(`${sim.ready.control}/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"neverConfirm":true}' });
    expect(await ok.json()).toMatchObject({ ok: true, faults: { neverConfirm: true, closeAfterBytes: 0 } });
    const nc = await p.send({ jobName: 'cli-3', format: 'application/pdf', copies: 1, document: document('cli3', 1000) });
    expect(nc.jobState).toBe('unknown');
    const state = (await (await fetch(`${sim.ready.control}/state`)).json()) as { jobs: Array<Record<string, unknown>> };
    expect(state.jobs.map((j) => j.state)).toEqual(['completed', 'aborted', 'completed']);
    // job names are the client's: the control never shows them
    expect(JSON.stringify(state)).not.toContain('cli-');
  });

  it('continues numbering over an earlier run, refuses a corrupt jobs.json (exit 78), --help, bad flags (exit 2)', async () => {
    const out = join(tempDir(), 'out');
    const first = await startCli(['--port', '0', '--out', out, '--never-confirm']);
    const p = new RawPrinter({ host: '127.0.0.1', port: first.ready.raw });
    await p.send({ jobName: 'x', format: 'application/octet-stream', copies: 1, document: document('a', 10) });
    await waitUntil(() => JSON.parse(readFileSync(join(out, 'jobs.json'), 'utf8')).jobs[0]?.state === 'completed', 20_000, 'job 1 recorded');
    first.proc.kill('SIGTERM');
    await new Promise((r) => first.proc.once('exit', r));
    const second = await startCli(['--port', '0', '--out', out]);
    const q = new RawPrinter({ host: '127.0.0.1', port: second.ready.raw });
    await q.send({ jobName: 'y', format: 'application/octet-stream', copies: 1, document: document('b', 10) });
    await waitUntil(() => JSON.parse(readFileSync(join(out, 'jobs.json'), 'utf8')).jobs.length === 2, 20_000, 'job 2 recorded');
    expect(JSON.parse(readFileSync(join(out, 'jobs.json'), 'utf8')).jobs.map((j: { file: string }) => j.file)).toEqual(['job-1.bin', 'job-2.bin']);

    const bad = join(tempDir(), 'bad');
    spawnSync('mkdir', [bad]);
    writeFileSync(join(bad, 'jobs.json'), '{"jobs": [');
    const r = spawnSync(process.execPath, [CLI, 'printer', '--port', '0', '--out', bad], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(78);
    expect(r.stderr).toContain('SIM_JOBS_CORRUPT');
    expect(readFileSync(join(bad, 'jobs.json'), 'utf8')).toBe('{"jobs": [');

    const help = spawnSync(process.execPath, [CLI, 'printer', '--help'], { encoding: 'utf8', timeout: 30_000 });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--paper-out-after');
    for (const args of [['--out', bad], ['--port', '70000', '--out', bad], ['--port', '0'], ['--port', '0', '--out', bad, '--slow', 'fast'], ['--nope']]) {
      const e = spawnSync(process.execPath, [CLI, 'printer', ...args], { encoding: 'utf8', timeout: 30_000 });
      expect(e.status, args.join(' ')).toBe(2);
    }
  });
});
