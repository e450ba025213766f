/**
 * A real IPP printer: Debian's `ippeveprinter` (package cups-ipp-utils; CUPS's IPP Everywhere printer),
 * started by the test on a free port with `-k` (keep every received document in its spool directory)
 * and a print command that finishes at once (or after a few seconds for jobs named slow-…, to cancel
 * one in progress). IppPrinter probes it, prints through Create-Job + Send-Document and through
 * Print-Job, follows job-state to completed, cancels, and the kept documents are compared byte for byte
 * with what was sent.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IppPrinter } from '../../../firmware-bridge/printer/ipp/client.js';
import { freePort, waitUntil } from '../../helpers/ports.js';
import { describeWithPeer, systemPeer } from '../../helpers/system-peer.js';
import { ensureDnsSdDaemons } from './daemons.js';
import { once, tinyPdf } from './helpers.js';

const eve = systemPeer('ippeveprinter', { pkg: 'cups-ipp-utils' });
const peers = [eve, systemPeer('avahi-daemon', { pkg: 'avahi-daemon' }), systemPeer('dbus-daemon', { pkg: 'dbus' })];

/** A PDF of about `size` bytes: the tiny PDF with a long comment of varied bytes (ippeveprinter only sniffs the header). */
function bigPdf(size: number, seed: number): Buffer {
  const head = tinyPdf(`seed ${seed}`);
  const body = Buffer.alloc(size);
  for (let i = 0; i < size; i++) body[i] = 0x20 + (((i + seed) * 2654435761) >>> 25) % 90;
  return Buffer.concat([head, Buffer.from('%'), body, Buffer.from('\n%%EOF\n')]);
}

async function* chunks(b: Buffer, size: number): AsyncIterable<Uint8Array> {
  for (let o = 0; o < b.length; o += size) yield b.subarray(o, Math.min(b.length, o + size));
}

describeWithPeer(peers, 'IppPrinter against a real ippeveprinter', () => {
  let dir: string;
  let spool: string;
  let proc: ChildProcess | undefined;
  let url: string;
  let log = '';

  beforeAll(async () => {
    ensureDnsSdDaemons();
    dir = mkdtempSync(join(tmpdir(), 'tallybox-ippeve-'));
    spool = join(dir, 'spool');
    mkdirSync(spool);
    const cmd = join(dir, 'print.sh');
    writeFileSync(cmd, '#!/bin/sh\n# ippeveprinter runs this with the spooled file; "slow" jobs stay processing a while so a test can cancel one.\ncase "$1" in *slow*) sleep 4;; esac\nexit 0\n');
    chmodSync(cmd, 0o700);
    const port = await freePort();
    proc = spawn(eve.path!, ['-k', '-c', cmd, '-p', String(port), '-d', spool, '-n', 'localhost', '-f', 'application/pdf,image/pwg-raster,application/octet-stream', `tallybox-test-${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    url = `ipp://127.0.0.1:${port}/ipp/print`;
    const p = new IppPrinter({ url, timeoutMs: 5_000 });
    await waitUntil(async () => (await p.probe().catch(() => undefined)) !== undefined || proc!.exitCode !== null, 30_000, 'ippeveprinter to answer');
    if (proc.exitCode !== null) throw new Error(`ippeveprinter exited ${proc.exitCode}: ${log}`);
  }, 60_000);

  afterAll(async () => {
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc!.once('exit', r));
      proc.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const client = (more: Partial<ConstructorParameters<typeof IppPrinter>[0]> = {}) => new IppPrinter({ url, timeoutMs: 20_000, confirmWaitMs: 20_000, pollIntervalMs: 100, ...more });
  /** ippeveprinter answers server-error-busy while it prints: wait for idle as a print box's spool would. */
  const idle = (p: IppPrinter) => waitUntil(async () => (await p.probe()).state === 'idle', 30_000, 'ippeveprinter to be idle');
  const kept = (ref: string, jobName: string) => {
    const f = readdirSync(spool).find((n) => n === `${ref}-${jobName}.pdf`);
    if (!f) throw new Error(`no kept file for job ${ref} in ${readdirSync(spool).join(', ')}`);
    return readFileSync(join(spool, f));
  };

  it('probe: printer-state and the operations it lists (Create-Job among them)', async () => {
    const p = client();
    const info = await p.info();
    expect(['idle', 'processing']).toContain(info.state);
    expect(info.operations).toEqual(expect.arrayContaining([0x0002, 0x0005, 0x0006, 0x0008, 0x0009, 0x000b]));
    expect(info.formats).toContain('application/pdf');
  });

  it('Create-Job + Send-Document: a 2 MB PDF streamed in 64 KiB chunks, onAccepted first, job-state completed, kept bytes identical', async () => {
    const p = client();
    await idle(p);
    const doc = bigPdf(2 * 1024 * 1024, 1);
    const order: string[] = [];
    const r = await p.send({
      jobName: 'job-0001',
      format: 'application/pdf',
      copies: 1,
      document: (async function* () {
        for await (const c of chunks(doc, 64 * 1024)) {
          if (order.length === 1) order.push('first-byte');
          yield c;
        }
      })(),
      onAccepted: (ref) => order.push(`accepted:${ref}`),
    });
    expect(order).toEqual([`accepted:${r.ref}`, 'first-byte']);
    expect(r).toMatchObject({ bytesSent: doc.length, jobState: 'completed' });
    expect(kept(r.ref!, 'job-0001').equals(doc)).toBe(true);
    expect(await p.jobState(r.ref!)).toBe('completed');
  }, 90_000);

  it('Print-Job (copies 2): completed, kept bytes identical', async () => {
    const p = client({ submit: 'print-job' });
    await idle(p);
    const doc = bigPdf(300_000, 2);
    let accepted: string | undefined;
    const r = await p.send({ jobName: 'job-0002', format: 'application/pdf', copies: 2, document: chunks(doc, 16 * 1024), onAccepted: (ref) => (accepted = ref) });
    expect(accepted).toBe(r.ref);
    expect(r).toMatchObject({ bytesSent: doc.length, jobState: 'completed' });
    expect(kept(r.ref!, 'job-0002').equals(doc)).toBe(true);
  }, 90_000);

  it('cancel(ref): a job still processing is canceled at the printer', async () => {
    const p = client({ confirmWaitMs: 300 });
    await idle(p);
    const pdf = tinyPdf('slow');
    const r = await p.send({ jobName: 'slow-0003', format: 'application/pdf', copies: 1, document: once(pdf) });
    expect(r.jobState).toBe('processing');
    await p.cancel(r.ref!);
    await waitUntil(async () => (await p.jobState(r.ref!)) === 'canceled', 30_000, 'the job to be canceled');
    expect(kept(r.ref!, 'slow-0003').equals(pdf)).toBe(true);
  }, 90_000);

  it('a format it does not list is PRINTER_REJECTED with the IPP status name', async () => {
    const p = client();
    await idle(p);
    const err = await p.send({ jobName: 'job-0004', format: 'text/x-nothing' as 'application/pdf', copies: 1, document: once(Buffer.from('x')) }).catch((e: unknown) => e as { code: string; details: { status: string } });
    expect(err).toMatchObject({ code: 'PRINTER_REJECTED' });
    expect((err as { details: { status: string } }).details.status).toMatch(/^client-error-/);
  }, 90_000);
});
