/**
 * `tallybox-sim printer --ipp-port 0` (the built CLI, as a separate process): IppPrinter prints to its
 * IPP port and the document lands in --out DIR byte for byte; a paper-out switched on through the HTTP
 * control stops the printer (media-empty) and holds the job, `POST /resume` lets it complete; the raw
 * port and the IPP port report one shared printer state.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IppPrinter } from '../../../firmware-bridge/printer/ipp/client.js';
import { waitUntil } from '../../helpers/ports.js';
import { once, randomDocument, tinyPdf } from './helpers.js';

const CLI = resolve(import.meta.dirname, '../../../dist/simulators/cli.js');

describe('tallybox-sim printer: the IPP port', () => {
  let out: string;
  let proc: ChildProcess;
  let ready: { ipp: number; control: string };
  let url: string;

  beforeAll(async () => {
    out = mkdtempSync(join(tmpdir(), 'tallybox-ipp-cli-'));
    proc = spawn(process.execPath, [CLI, 'printer', '--port', '0', '--ipp-port', '0', '--out', join(out, 'jobs'), '--control-port', '0'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: proc.stdout! });
    ready = await new Promise((res, rej) => {
      lines.once('line', (l) => res(JSON.parse(l) as { ipp: number; control: string }));
      proc.once('exit', (c) => rej(new Error(`tallybox-sim printer exited ${c}: ${stderr}`)));
    });
    url = `ipp://127.0.0.1:${ready.ipp}/ipp/print`;
  }, 30_000);

  afterAll(async () => {
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
    if (out) rmSync(out, { recursive: true, force: true });
  });

  const control = async (path: string, body?: unknown) => {
    const r = await fetch(`${ready.control.replace(/\/$/, '')}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
    expect(r.status).toBe(200);
    return r.json() as Promise<unknown>;
  };
  const recorded = () => (JSON.parse(readFileSync(join(out, 'jobs', 'jobs.json'), 'utf8')) as { jobs: Array<{ id: number; name: string; state: string; file: string; protocol: string }> }).jobs;

  it('prints through the IPP port into --out, byte for byte', async () => {
    const p = new IppPrinter({ url, confirmWaitMs: 5_000, pollIntervalMs: 50 });
    const pdf = tinyPdf('cli');
    const r = await p.send({ jobName: 'job-cli-1', format: 'application/pdf', copies: 1, document: once(pdf) });
    expect(r.jobState).toBe('completed');
    const job = recorded().find((j) => j.name === 'job-cli-1')!;
    expect(job).toMatchObject({ protocol: 'ipp', state: 'completed' });
    expect(readFileSync(join(out, 'jobs', job.file)).equals(pdf)).toBe(true);
  });

  it('paper-out through the control: stopped/media-empty, the job held; POST /resume completes it', async () => {
    await control('/faults', { paperOutAfterBytes: 50_000 });
    const p = new IppPrinter({ url, confirmWaitMs: 300, pollIntervalMs: 50 });
    const doc = randomDocument(200_000);
    const r = await p.send({ jobName: 'job-cli-2', format: 'application/octet-stream', copies: 1, document: doc.iterable() });
    expect(r.jobState).toBe('processing');
    expect(await p.probe()).toEqual({ state: 'stopped', reasons: ['media-empty'] });
    await control('/faults', { paperOutAfterBytes: 0 });
    await control('/resume');
    await waitUntil(async () => (await p.jobState(r.ref!)) === 'completed', 15_000, 'the held job to complete after resume');
    expect(await p.probe()).toEqual({ state: 'idle', reasons: ['none'] });
    const job = recorded().find((j) => j.name === 'job-cli-2')!;
    expect(job.state).toBe('completed');
    expect(readFileSync(join(out, 'jobs', job.file)).equals(doc.bytes)).toBe(true);
  });
});
