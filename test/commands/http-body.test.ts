/**
 * Issue 9 §4 (last part): the one bounded body reader the local HTTP servers
 * share (src/util/http-body.ts), over real sockets: a declared size over the
 * cap is refused before a byte of body is read; a chunked body is refused as
 * soon as it passes the cap, while the client is still sending; a wrong or
 * missing media type is 415; a trickling body is 408; errors are JSON with a
 * code, and the connection is closed.
 */
import { request, createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { readJsonBody, sendBodyError, type BodyLimits } from '../../src/util/http-body.js';

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
});

interface Seen {
  parsed: unknown[];
  bodyBytesAtRefusal: number[];
  /** req.readableFlowing when refused: null = nobody ever started reading the body. */
  flowingAtRefusal: (boolean | null)[];
}

async function server(limits: BodyLimits, countBytes = false): Promise<{ port: number; seen: Seen }> {
  const seen: Seen = { parsed: [], bodyBytesAtRefusal: [], flowingAtRefusal: [] };
  const s = createServer((req, res) => {
    let bytes = 0;
    if (countBytes) req.on('data', (c: Buffer) => (bytes += c.length));
    readJsonBody(req, limits).then(
      (v) => {
        seen.parsed.push(v);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      },
      (err: unknown) => {
        seen.bodyBytesAtRefusal.push(bytes);
        seen.flowingAtRefusal.push(req.readableFlowing);
        if (!sendBodyError(res, err)) {
          res.writeHead(500);
          res.end();
        }
      },
    );
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return { port: (s.address() as AddressInfo).port, seen };
}

/** A raw request: status, JSON body, and whether the client was still sending when the answer came. */
function send(port: number, opts: { headers?: Record<string, string>; chunks?: Buffer[]; gapMs?: number; end?: boolean }): Promise<{ status: number; body: { error?: { code: string } }; stillSending: boolean }> {
  return new Promise((resolve, reject) => {
    let sending = true;
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/', headers: opts.headers ?? {} }, (res) => {
      const stillSending = sending;
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as { error?: { code: string } }) : {}, stillSending }));
    });
    req.on('error', (e) => (sending ? undefined : reject(e)));
    void (async () => {
      for (const c of opts.chunks ?? []) {
        if (req.destroyed) break;
        req.write(c);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
      if (opts.end !== false && !req.destroyed) req.end();
      sending = false;
    })();
  });
}

describe('the shared bounded body reader', () => {
  it('parses a small JSON body of the right type (charset parameter and case ignored)', async () => {
    const { port, seen } = await server({ maxBytes: 100, contentTypes: ['application/json'] });
    const r = await send(port, { headers: { 'content-type': 'Application/JSON; charset=utf-8' }, chunks: [Buffer.from('{"a":1}')] });
    expect(r.status).toBe(200);
    expect(seen.parsed).toEqual([{ a: 1 }]);
  });

  it('a Content-Length over the cap: 413 before any of the body is read', async () => {
    const { port, seen } = await server({ maxBytes: 1000 });
    const r = await send(port, { headers: { 'content-type': 'application/json', 'content-length': String(10 * 1024 * 1024) }, chunks: [Buffer.alloc(1000, 0x20)], end: false });
    expect(r).toMatchObject({ status: 413, body: { error: { code: 'BODY_TOO_LARGE' } } });
    expect(seen.flowingAtRefusal).toEqual([null]);
    expect(seen.parsed).toEqual([]);
  });

  it('a chunked body passing the cap: 413 while the client is still sending; never buffered whole', async () => {
    const { port, seen } = await server({ maxBytes: 4096 }, true);
    const chunks = Array.from({ length: 200 }, () => Buffer.alloc(1024, 0x20));
    const r = await send(port, { headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, chunks, gapMs: 5 });
    expect(r).toMatchObject({ status: 413, body: { error: { code: 'BODY_TOO_LARGE' } } });
    expect(r.stillSending).toBe(true);
    expect(seen.bodyBytesAtRefusal[0]).toBeLessThanOrEqual(4096 + 1024);
  });

  it('wrong or missing media type: 415, nothing parsed', async () => {
    const { port, seen } = await server({ maxBytes: 100 });
    for (const headers of [{ 'content-type': 'text/plain' }, { 'content-type': 'application/x-www-form-urlencoded' }, {}] as Record<string, string>[]) {
      const r = await send(port, { headers, chunks: [Buffer.from('{"a":1}')] });
      expect(r).toMatchObject({ status: 415, body: { error: { code: 'UNSUPPORTED_MEDIA_TYPE' } } });
    }
    expect(seen.parsed).toEqual([]);
  });

  it('a body that trickles past the timeout: 408', async () => {
    const { port } = await server({ maxBytes: 1000, timeoutMs: 200 });
    const r = await send(port, { headers: { 'content-type': 'application/json', 'content-length': '100' }, chunks: [Buffer.from('{"a":')], end: false });
    expect(r).toMatchObject({ status: 408, body: { error: { code: 'BODY_TIMEOUT' } } });
  });

  it('not JSON: 400 BAD_JSON', async () => {
    const { port } = await server({ maxBytes: 1000 });
    const r = await send(port, { headers: { 'content-type': 'application/json' }, chunks: [Buffer.from('{nope')] });
    expect(r).toMatchObject({ status: 400, body: { error: { code: 'BAD_JSON' } } });
  });
});
