/**
 * IppPrinter (the Printer contract over IPP) against the simulator's IPP server: probe, Create-Job +
 * Send-Document, Print-Job fallback, jobState, cancel, the abort signal, and every fault (offline,
 * busy, paper-out with resume, closeAfterBytes, neverConfirm, slow) mapped to the contract's codes.
 * Documents are compared byte for byte with what the simulator recorded.
 */
import { createServer } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeMessage, group, attr } from '../../../firmware-bridge/printer/ipp/codec.js';
import { IppPrinter } from '../../../firmware-bridge/printer/ipp/client.js';
import { waitUntil } from '../../helpers/ports.js';
import { once, randomDocument, type SimHarness, startSim, tinyPdf } from './helpers.js';

let sim: SimHarness | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

function printer(url: string, more: Partial<ConstructorParameters<typeof IppPrinter>[0]> = {}) {
  return new IppPrinter({ url, timeoutMs: 10_000, confirmWaitMs: 2_000, pollIntervalMs: 50, ...more });
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string; details: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    return err as { code: string; details: Record<string, unknown> };
  }
  throw new Error('expected a rejection');
}

describe('IppPrinter against the simulator', () => {
  it('probes printer-state and reasons', async () => {
    sim = await startSim();
    const p = printer(sim.url);
    expect(await p.probe()).toEqual({ state: 'idle', reasons: ['none'] });
    const info = await p.info();
    expect(info.operations).toContain(0x0005);
    expect(info.formats).toContain('application/pdf');
  });

  it('Create-Job + Send-Document: streams 3 MB in chunks, onAccepted before the first byte, completed, bytes identical', async () => {
    sim = await startSim();
    const doc = randomDocument(3 * 1024 * 1024);
    const events: string[] = [];
    let progress = 0;
    const result = await printer(sim.url).send({
      jobName: 'job-0001',
      format: 'application/octet-stream',
      copies: 2,
      document: (async function* () {
        for await (const c of doc.iterable()) {
          if (!events.includes('first-byte')) events.push('first-byte');
          yield c;
        }
      })(),
      onAccepted: (ref) => events.push(`accepted:${ref}`),
      onProgress: (n) => {
        progress = n;
      },
    });
    expect(events[0]).toBe('accepted:1');
    expect(events[1]).toBe('first-byte');
    expect(result).toMatchObject({ ref: '1', bytesSent: doc.bytes.length, jobState: 'completed' });
    expect(progress).toBe(doc.bytes.length);
    const [job] = sim.recorder.jobs();
    expect(job).toMatchObject({ protocol: 'ipp', name: 'job-0001', format: 'application/octet-stream', copies: 2, state: 'completed', bytes: doc.bytes.length });
    expect(sim.recorder.bytesOf(job!).equals(doc.bytes)).toBe(true);
    expect(await printer(sim.url).jobState('1')).toBe('completed');
  });

  it('falls back to Print-Job when the printer does not list Create-Job; job-id only after the document', async () => {
    sim = await startSim();
    // A printer that only lists the IPP/1.1 required operations: wrap the simulator behind a filter.
    const upstream = sim.url.replace('ipp://', 'http://');
    const proxy = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const r = await fetch(upstream, { method: 'POST', headers: { 'content-type': 'application/ipp' }, body: Buffer.concat(chunks) });
      let body: Buffer = Buffer.from(await r.arrayBuffer());
      const { decodeMessage } = await import('../../../firmware-bridge/printer/ipp/codec.js');
      const m = decodeMessage(body).message;
      for (const g of m.groups) for (const a of g.attributes) if (a.name === 'operations-supported') a.values = a.values.filter((v) => v.tag !== 'enum' || (v.value !== 5 && v.value !== 6));
      body = encodeMessage(m);
      res.writeHead(200, { 'content-type': 'application/ipp' });
      res.end(body);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const port = (proxy.address() as { port: number }).port;
      const pdf = tinyPdf('print-job');
      let accepted: string | undefined;
      const result = await printer(`ipp://127.0.0.1:${port}/ipp/print`).send({ jobName: 'job-0002', format: 'application/pdf', copies: 1, document: once(pdf), onAccepted: (r) => (accepted = r) });
      expect(accepted).toBe('1');
      expect(result).toMatchObject({ ref: '1', bytesSent: pdf.length, jobState: 'completed' });
      expect(sim.recorder.bytesOf(sim.recorder.jobs()[0]!).equals(pdf)).toBe(true);
    } finally {
      await new Promise<void>((r) => proxy.close(() => r()));
    }
  });

  it('offline: PRINTER_UNREACHABLE, and the printer is back when the fault clears', async () => {
    sim = await startSim({ offline: true });
    const p = printer(sim.url);
    expect((await codeOf(p.probe())).code).toBe('PRINTER_UNREACHABLE');
    expect((await codeOf(p.send({ jobName: 'j', format: 'application/pdf', copies: 1, document: once(tinyPdf()) }))).code).toBe('PRINTER_UNREACHABLE');
    sim.faults.offline = false;
    await waitUntil(async () => (await p.probe().catch(() => undefined))?.state === 'idle', 10_000, 'the simulator to listen again');
    expect(sim.recorder.jobs()).toEqual([]);
  });

  it('busy: server-error-busy is PRINTER_UNREACHABLE (retry), nothing accepted', async () => {
    sim = await startSim({ busy: true });
    let accepted = false;
    const err = await codeOf(printer(sim.url).send({ jobName: 'j', format: 'application/pdf', copies: 1, document: once(tinyPdf()), onAccepted: () => (accepted = true) }));
    expect(err.code).toBe('PRINTER_UNREACHABLE');
    expect(err.details.status).toBe('server-error-busy');
    expect(accepted).toBe(false);
  });

  it('paper-out mid-job: the job is held (processing), the printer stopped/media-empty; new jobs PRINTER_STOPPED; resume completes it', async () => {
    sim = await startSim({ paperOutAfterBytes: 100_000 });
    const doc = randomDocument(300_000);
    const p = printer(sim.url, { confirmWaitMs: 300 });
    const r = await p.send({ jobName: 'j1', format: 'application/octet-stream', copies: 1, document: doc.iterable() });
    expect(r.jobState).toBe('processing');
    expect(await p.probe()).toEqual({ state: 'stopped', reasons: ['media-empty'] });
    const err = await codeOf(p.send({ jobName: 'j2', format: 'application/pdf', copies: 1, document: once(tinyPdf()) }));
    expect(err.code).toBe('PRINTER_STOPPED');
    expect(err.details.reasons).toEqual(['media-empty']);
    sim.server.resume();
    await waitUntil(async () => (await p.jobState(r.ref!)) === 'completed', 10_000, 'the held job to complete');
    const jobs = sim.recorder.jobs();
    expect(jobs).toHaveLength(1);
    expect(sim.recorder.bytesOf(jobs[0]!).equals(doc.bytes)).toBe(true);
  });

  it('closeAfterBytes: the connection is cut mid-document: PRINTER_CLOSED with the ref; the job aborted at the printer', async () => {
    sim = await startSim({ closeAfterBytes: 200_000 });
    const doc = randomDocument(2_000_000);
    const err = await codeOf(printer(sim.url).send({ jobName: 'j', format: 'application/octet-stream', copies: 1, document: doc.iterable() }));
    expect(err.code).toBe('PRINTER_CLOSED');
    expect(err.details.ref).toBe('1');
    await waitUntil(() => sim!.recorder.jobs()[0]?.state === 'aborted', 10_000, 'the recording to end aborted');
    expect(sim.recorder.jobs()[0]!.bytes).toBe(200_000);
    expect(await printer(sim.url).jobState('1')).toBe('aborted');
  });

  it('neverConfirm: send() returns the known state (processing) after its short wait, and jobState stays processing', async () => {
    sim = await startSim({ neverConfirm: true });
    const p = printer(sim.url, { confirmWaitMs: 300 });
    const r = await p.send({ jobName: 'j', format: 'application/pdf', copies: 1, document: once(tinyPdf()) });
    expect(r).toMatchObject({ ref: '1', jobState: 'processing' });
    expect(await p.jobState('1')).toBe('processing');
  });

  it('cancel(ref) = Cancel-Job: a never-confirmed job becomes canceled; cancelling it again is PRINTER_REJECTED client-error-not-possible', async () => {
    sim = await startSim({ neverConfirm: true });
    const p = printer(sim.url, { confirmWaitMs: 0 });
    const r = await p.send({ jobName: 'j', format: 'application/pdf', copies: 1, document: once(tinyPdf()) });
    await p.cancel(r.ref!);
    expect(await p.jobState(r.ref!)).toBe('canceled');
    const err = await codeOf(p.cancel(r.ref!));
    expect(err).toMatchObject({ code: 'PRINTER_REJECTED', details: { status: 'client-error-not-possible' } });
    expect((await codeOf(p.jobState('999'))).details.status).toBe('client-error-not-found');
    expect((await codeOf(p.jobState('x; rm'))).code).toBe('PRINTER_REJECTED');
  });

  it('the signal aborts mid-document: PRINTER_CANCELLED, and Cancel-Job reached the printer', async () => {
    sim = await startSim({ slowBytesPerSec: 200_000 });
    const ac = new AbortController();
    const doc = randomDocument(5_000_000);
    const p = printer(sim.url);
    const sending = p.send({
      jobName: 'j',
      format: 'application/octet-stream',
      copies: 1,
      document: doc.iterable(),
      signal: ac.signal,
      onProgress: (n) => {
        if (n >= 500_000) ac.abort();
      },
    });
    const err = await codeOf(sending);
    expect(err).toMatchObject({ code: 'PRINTER_CANCELLED', details: { ref: '1' } });
    expect(await p.jobState('1')).toBe('canceled');
    await waitUntil(() => sim!.recorder.jobs()[0]?.state === 'canceled', 10_000, 'the recording to end canceled');
    expect(sim.recorder.jobs()[0]!.bytes).toBeLessThan(doc.bytes.length);
  });

  it('an already aborted signal sends nothing', async () => {
    sim = await startSim();
    const ac = new AbortController();
    ac.abort();
    expect((await codeOf(printer(sim.url).send({ jobName: 'j', format: 'application/pdf', copies: 1, document: once(tinyPdf()), signal: ac.signal }))).code).toBe('PRINTER_CANCELLED');
    expect(sim.recorder.jobs()).toEqual([]);
  });

  it('a document format the printer refuses: PRINTER_REJECTED with the IPP status name, the empty job cancelled', async () => {
    sim = await startSim();
    const err = await codeOf(printer(sim.url).send({ jobName: 'j', format: 'text/plain' as 'application/pdf', copies: 1, document: once(Buffer.from('x')) }));
    expect(err).toMatchObject({ code: 'PRINTER_REJECTED', details: { status: 'client-error-document-format-not-supported', ref: '1' } });
    expect(await printer(sim.url).jobState('1')).toBe('canceled');
  });

  it('a reply that is not IPP is PRINTER_PROTOCOL; a refused HTTP status too', async () => {
    const bad = createServer((req, res) => {
      req.resume();
      if (req.url === '/http500') {
        res.writeHead(500);
        return res.end();
      }
      res.writeHead(200, { 'content-type': 'application/ipp' });
      res.end(Buffer.concat([encodeMessage({ version: { major: 1, minor: 1 }, code: 0, requestId: 1, groups: [group('operation', [attr('attributes-charset', 'charset', 'utf-8')])] }).subarray(0, 12)]));
    });
    await new Promise<void>((r) => bad.listen(0, '127.0.0.1', r));
    try {
      const port = (bad.address() as { port: number }).port;
      expect((await codeOf(printer(`ipp://127.0.0.1:${port}/ipp/print`).probe())).code).toBe('PRINTER_PROTOCOL');
      expect((await codeOf(printer(`ipp://127.0.0.1:${port}/http500`).probe())).code).toBe('PRINTER_PROTOCOL');
    } finally {
      await new Promise<void>((r) => bad.close(() => r()));
    }
  });
});
