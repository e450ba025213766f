import { connect } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isDeviceError, type PrintSubmission } from '../../firmware-bridge/devices.js';
import { RawPrinter } from '../../firmware-bridge/printer/raw9100.js';
import { waitUntil } from '../helpers/ports.js';
import { document, documentHash, fileHash, type Sim, startSim } from './helpers.js';

let sim: Sim | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

function submission(seed: string, bytes: number, extra: Partial<PrintSubmission> = {}): PrintSubmission & { events: string[] } {
  const events: string[] = [];
  return {
    jobName: `job-${seed}`,
    format: 'application/octet-stream',
    copies: 1,
    document: document(seed, bytes),
    onAccepted: (ref) => events.push(`accepted:${ref ?? '-'}`),
    onProgress: () => {
      if (events.at(-1) !== 'progress') events.push('progress');
    },
    ...extra,
    events,
  };
}

async function rejection(p: Promise<unknown>): Promise<Error & { code: string; details: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    if (isDeviceError(err)) return err as Error & { code: string; details: Record<string, unknown> };
    throw err;
  }
  throw new Error('expected a rejection');
}

describe('RawPrinter against the printer simulator', () => {
  it('without PJL: streams, half-closes, accepted at the first byte, job state unknown; recorded byte for byte', async () => {
    sim = await startSim();
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port });
    const job = submission('plain', 1_000_003);
    const r = await p.send(job);
    expect(r).toEqual({ ref: undefined, bytesSent: 1_000_003, jobState: 'unknown' });
    expect(job.events[0]).toBe('accepted:-');
    const rec = await sim.ended(1);
    expect(rec).toMatchObject({ protocol: 'raw9100', bytes: 1_000_003, state: 'completed', name: undefined });
    expect(await fileHash(join(sim.recorder.dir, rec.file))).toBe(await documentHash('plain', 1_000_003));
    expect(await p.probe()).toEqual({ state: 'idle', reasons: ['none'] });
  });

  it('with PJL: accepted at USTATUS JOB START before any document byte, completed only on END for our name, pages from form feeds', async () => {
    sim = await startSim();
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, pjl: true });
    const pages = Buffer.from('page one\fpage two\fpage three\f');
    const job = submission('pjl', 0, {
      jobName: 'J-42',
      copies: 2,
      document: (async function* () {
        yield pages;
      })(),
    });
    const r = await p.send(job);
    expect(r).toEqual({ ref: 'J-42', bytesSent: pages.length, jobState: 'completed', pages: 3 });
    expect(job.events).toEqual(['accepted:J-42', 'progress']);
    expect(await p.jobState('J-42')).toBe('completed');
    expect(await p.jobState('J-other')).toBe('unknown');
    const rec = await sim.ended(1);
    expect(rec).toMatchObject({ name: 'J-42', copies: 2, bytes: pages.length, state: 'completed' });
    // the PJL wrapper is the printer's, not the document's: only the document was recorded
    expect(await fileHash(join(sim.recorder.dir, rec.file))).toBe(await fileHashOf(pages));
    expect(await p.probe()).toEqual({ state: 'idle', reasons: ['none'] });
  });

  it('sends job after job (probe in between) without finding the port still held', async () => {
    sim = await startSim();
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, pjl: true });
    const q = new RawPrinter({ host: '127.0.0.1', port: sim.port });
    for (let i = 0; i < 5; i++) {
      await p.probe();
      expect((await p.send(submission(`seq${i}`, 10_000))).jobState).toBe('completed');
      await q.probe();
      expect((await q.send(submission(`raw${i}`, 10_000))).jobState).toBe('unknown');
    }
    expect(sim.recorder.jobs().map((j) => j.state)).toEqual(Array(10).fill('completed'));
  });

  it('offline: refused → PRINTER_UNREACHABLE (send and probe); back online at run time it prints', async () => {
    sim = await startSim({ offline: true });
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, pjl: true });
    const job = submission('off', 1000);
    const err = await rejection(p.send(job));
    expect(err.code).toBe('PRINTER_UNREACHABLE');
    expect(err.details).toMatchObject({ bytesSent: 0, accepted: false });
    expect(job.events).toEqual([]);
    expect((await rejection(p.probe())).code).toBe('PRINTER_UNREACHABLE');
    sim.ctx.setFaults({ offline: false });
    await waitUntil(
      async () =>
        await p.probe().then(
          () => true,
          () => false,
        ),
      20_000,
      'the printer back online',
    );
    expect((await p.send(submission('on', 1000))).jobState).toBe('completed');
  });

  it('busy: the fault refuses; a second client while one job is open is refused too', async () => {
    sim = await startSim({ busy: true });
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port });
    expect((await rejection(p.send(submission('busy', 1000)))).code).toBe('PRINTER_UNREACHABLE');
    sim.ctx.setFaults({ busy: false });
    // another client holds the port
    const holder = connect({ host: '127.0.0.1', port: sim.port });
    await new Promise<void>((r) => holder.once('connect', () => r()));
    holder.write('held');
    await waitUntil(() => sim!.recorder.jobs().length === 1, 20_000, 'the holder job recorded');
    const err = await rejection(p.send(submission('second', 1000)));
    expect(err.code).toBe('PRINTER_UNREACHABLE');
    expect(err.details.accepted).toBe(false);
    holder.end();
    await sim.ended(1);
    await waitUntil(
      async () =>
        await p.probe().then(
          () => true,
          () => false,
        ),
      20_000,
      'the port free again',
    );
    expect((await p.send(submission('third', 1000))).bytesSent).toBe(1000);
  });

  it('slow: the printer reads at N bytes/s; the client waits on backpressure and gets there', async () => {
    sim = await startSim({ slowBytesPerSec: 200_000 });
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, pjl: true });
    const t0 = performance.now();
    const r = await p.send(submission('slow', 600_000));
    expect(r.jobState).toBe('completed');
    // at least ~2 s of reading at 200 kB/s (generous: the socket buffers absorb some)
    expect(performance.now() - t0).toBeGreaterThan(1000);
    expect(await fileHash(join(sim.recorder.dir, (await sim.ended(1)).file))).toBe(await documentHash('slow', 600_000));
  });

  it('paper-out mid-job with PJL: PRINTER_STOPPED media-empty with the bytes known; probe says stopped until resume', async () => {
    sim = await startSim({ paperOutAfterBytes: 300_000 });
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, pjl: true });
    // larger than every socket buffer between the two, so the stop comes while the client is still writing
    const job = submission('paper', 30_000_000);
    const err = await rejection(p.send(job));
    expect(err.code).toBe('PRINTER_STOPPED');
    expect(err.details).toMatchObject({ accepted: true, reasons: ['media-empty'] });
    expect(err.details.bytesSent as number).toBeGreaterThanOrEqual(300_000);
    expect(err.details.bytesSent as number).toBeLessThan(30_000_000);
    const rec = await sim.ended(1);
    expect(rec).toMatchObject({ bytes: 300_000, state: 'aborted' });
    expect(await fileHash(join(sim.recorder.dir, rec.file))).toBe(await documentHash('paper', 30_000_000, 64 * 1024, 300_000));
    expect(sim.ctx.status()).toEqual({ state: 'stopped', reasons: ['media-empty'] });
    expect(await p.probe()).toEqual({ state: 'stopped', reasons: ['media-empty'] });
    sim.ctx.resume();
    expect(await p.probe()).toEqual({ state: 'idle', reasons: ['none'] });
  });

  it('paper-out without PJL: the printer stops reading → PRINTER_STOPPED after the stall timeout; resume lets the job go on', async () => {
    sim = await startSim({ paperOutAfterBytes: 100_000 });
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, stallTimeoutMs: 1500 });
    const err = await rejection(p.send(submission('stall', 20_000_000)));
    expect(err.code).toBe('PRINTER_STOPPED');
    expect(err.details.accepted).toBe(true);
    // the simulator holds the connection (out of paper) until resumed; then sees the client gone
    sim.ctx.resume();
    const rec = await sim.ended(1);
    expect(rec.state).toBe('aborted');
    expect(rec.bytes).toBeGreaterThanOrEqual(100_000);
  });

  it('paper-out then resume while the client waits: the job completes', async () => {
    sim = await startSim({ paperOutAfterBytes: 50_000 });
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, stallTimeoutMs: 60_000 });
    const sending = p.send(submission('resume', 5_000_000));
    await waitUntil(() => sim!.ctx.status().state === 'stopped', 20_000, 'paper out');
    sim.ctx.resume();
    const r = await sending;
    expect(r.bytesSent).toBe(5_000_000);
    const rec = await sim.ended(1);
    expect(rec).toMatchObject({ bytes: 5_000_000, state: 'completed' });
    expect(await fileHash(join(sim.recorder.dir, rec.file))).toBe(await documentHash('resume', 5_000_000));
  });

  it('close-after-N: PRINTER_CLOSED with the bytes known; exactly N bytes recorded', async () => {
    sim = await startSim({ closeAfterBytes: 123_457 });
    for (const pjl of [true, false]) {
      const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, pjl });
      const err = await rejection(p.send(submission(`close${pjl}`, 3_000_000)));
      expect(err.code).toBe('PRINTER_CLOSED');
      expect(err.details.accepted).toBe(true);
      expect(err.details.bytesSent as number).toBeGreaterThanOrEqual(123_457);
      const rec = await sim.ended(pjl ? 1 : 2);
      expect(rec).toMatchObject({ bytes: 123_457, state: 'aborted' });
      expect(await fileHash(join(sim.recorder.dir, rec.file))).toBe(await documentHash(`close${pjl}`, 3_000_000, 64 * 1024, 123_457));
    }
  });

  it('never-confirm: every byte out, no END → jobState unknown (never "completed")', async () => {
    sim = await startSim({ neverConfirm: true });
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, pjl: true, confirmTimeoutMs: 30_000 });
    const job = submission('nc', 200_000);
    const r = await p.send(job);
    expect(r).toEqual({ ref: 'job-nc', bytesSent: 200_000, jobState: 'unknown' });
    expect(job.events[0]).toBe('accepted:job-nc');
    expect(await p.jobState('job-nc')).toBe('unknown');
    expect((await sim.ended(1)).state).toBe('completed');
  });

  it('cancel via AbortSignal: before connecting, and mid-job (PRINTER_CANCELLED with the bytes known)', async () => {
    sim = await startSim({ slowBytesPerSec: 100_000 });
    const p = new RawPrinter({ host: '127.0.0.1', port: sim.port, pjl: true });
    const early = new AbortController();
    early.abort();
    expect((await rejection(p.send(submission('c0', 1000, { signal: early.signal })))).details).toMatchObject({ bytesSent: 0, accepted: false });
    const ac = new AbortController();
    const job = submission('c1', 50_000_000, {
      signal: ac.signal,
      onProgress: (n) => {
        if (n >= 200_000) ac.abort();
      },
    });
    const err = await rejection(p.send(job));
    expect(err.code).toBe('PRINTER_CANCELLED');
    expect(err.details.accepted).toBe(true);
    expect(err.details.bytesSent as number).toBeGreaterThanOrEqual(200_000);
    expect(err.details.bytesSent as number).toBeLessThan(50_000_000);
    expect((await sim.ended(1)).state).toBe('aborted');
  });

  it('refuses what it cannot do: copies > 1 without PJL, a job name PJL cannot quote', async () => {
    const p = new RawPrinter({ host: '127.0.0.1', port: 9 });
    expect((await rejection(p.send(submission('x', 10, { copies: 2 })))).code).toBe('PRINTER_REJECTED');
    const q = new RawPrinter({ host: '127.0.0.1', port: 9, pjl: true });
    expect((await rejection(q.send(submission('x', 10, { jobName: 'a"b' })))).code).toBe('PRINTER_JOB_NAME_INVALID');
  });
});

async function fileHashOf(b: Buffer): Promise<string> {
  const { createHash } = await import('node:crypto');
  return createHash('sha256').update(b).digest('hex');
}
