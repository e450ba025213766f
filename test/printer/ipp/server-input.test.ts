/**
 * The simulator's IPP server against bad input: garbage and truncated bodies are answered
 * client-error-bad-request (or the HTTP error for a wrong path/type) and change nothing; an attribute
 * part beyond the limit is refused; random bodies never take the server down.
 */
import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attr, decodeMessage, encodeMessage, group } from '../../../firmware-bridge/printer/ipp/codec.js';
import { STATUS } from '../../../firmware-bridge/printer/ipp/constants.js';
import { waitUntil } from '../../helpers/ports.js';
import { type SimHarness, startSim } from './helpers.js';

let sim: SimHarness;
beforeAll(async () => {
  sim = await startSim();
});
afterAll(async () => {
  await sim.close();
});

const http = () => sim.url.replace('ipp://', 'http://');
async function post(body: Uint8Array, opts: { path?: string; type?: string } = {}) {
  const r = await fetch(opts.path ? http().replace('/ipp/print', opts.path) : http(), { method: 'POST', headers: { 'content-type': opts.type ?? 'application/ipp' }, body: new Uint8Array(body) });
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
}
const gpa = (requestId = 7) =>
  encodeMessage({
    version: { major: 1, minor: 1 },
    code: 0x0b,
    requestId,
    groups: [group('operation', [attr('attributes-charset', 'charset', 'utf-8'), attr('attributes-natural-language', 'naturalLanguage', 'en'), attr('printer-uri', 'uri', sim.url)])],
  });

describe('simulator IPP server: bad input', () => {
  it('a truncated request is client-error-bad-request, echoing the request-id', async () => {
    const r = await post(gpa(42).subarray(0, 20));
    expect(r.status).toBe(200);
    const m = decodeMessage(r.body).message;
    expect(m.code).toBe(STATUS['client-error-bad-request']);
    expect(m.requestId).toBe(42);
  });

  it('a malformed request (integer of 3 bytes) is client-error-bad-request', async () => {
    const r = await post(Buffer.from([1, 1, 0, 0x0b, 0, 0, 0, 5, 1, 0x21, 0, 1, 0x61, 0, 3, 0, 0, 1, 3]));
    expect(decodeMessage(r.body).message.code).toBe(STATUS['client-error-bad-request']);
  });

  it('a wrong Content-Type is HTTP 400, a wrong path HTTP 404', async () => {
    expect((await post(gpa(), { type: 'text/plain' })).status).toBe(400);
    expect((await post(gpa(), { path: '/printers/other' })).status).toBe(404);
  });

  it('an attribute part beyond 256 KiB is refused (client-error-request-entity-too-large or the connection closed)', async () => {
    // A never-ending attribute: a name of the maximum length repeated as additional values, no end tag.
    const header = Buffer.from([1, 1, 0, 0x0b, 0, 0, 0, 9, 1]);
    const field = Buffer.concat([Buffer.from([0x44, 0, 1, 0x61, 0x7f, 0xff]), Buffer.alloc(0x7fff, 0x61)]);
    const body = Buffer.concat([header, ...Array.from({ length: 12 }, () => field)]);
    const r = await post(body).catch(() => undefined);
    if (r) expect(decodeMessage(r.body).message.code).toBe(STATUS['client-error-request-entity-too-large']);
    expect(decodeMessage((await post(gpa())).body).message.code).toBe(0);
  });

  it('a client that vanishes mid-document: the job is aborted, its recording ends aborted, the printer is idle again', async () => {
    const port = Number(new URL(http()).port);
    const head = encodeMessage({
      version: { major: 1, minor: 1 },
      code: 0x0002,
      requestId: 3,
      groups: [group('operation', [attr('attributes-charset', 'charset', 'utf-8'), attr('attributes-natural-language', 'naturalLanguage', 'en'), attr('printer-uri', 'uri', sim.url), attr('job-name', 'name', 'vanish')])],
    });
    const s = connect(port, '127.0.0.1');
    await new Promise<void>((r) => s.once('connect', () => r()));
    const body = Buffer.concat([head, Buffer.alloc(10_000, 0x41)]);
    s.write(`POST /ipp/print HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ipp\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n`);
    s.write(body);
    s.write('\r\n');
    await waitUntil(() => sim.recorder.jobs().some((j) => j.name === 'vanish' && j.bytes === 10_000), 10_000, 'the first bytes to be recorded');
    s.destroy();
    await waitUntil(() => sim.recorder.jobs().find((j) => j.name === 'vanish')?.state === 'aborted', 10_000, 'the recording to end aborted');
    expect(sim.ctx.status().state).toBe('idle');
  });

  it('random bodies never take the server down, and no job is created by them', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (b) => {
        const r = await post(b);
        expect(r.status).toBe(200);
      }),
      { numRuns: 100 },
    );
    expect(decodeMessage((await post(gpa())).body).message.code).toBe(0);
    expect(sim.recorder.jobs().filter((j) => j.name !== 'vanish')).toEqual([]);
  });
});
