/**
 * The card reader simulator's control interface: HTTP/JSON on 127.0.0.1 only
 * (it can make any card "appear" at the reader, so never beyond loopback).
 *
 *   GET  /state                        → {plug, clients, swipes}
 *   POST /swipe   {"card": "0004211234"}
 *   POST /unplug | /hang | /replug
 *
 * Replies {"ok": true, ...} or {"ok": false, "error": "..."} with 400/404;
 * a bad body changes nothing.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CardReaderServer } from './server.js';

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let body = '';
  for await (const chunk of req) {
    body += String(chunk);
    if (body.length > 10_000) throw new Error('request body too large');
  }
  if (!body) return {};
  const v: unknown = JSON.parse(body);
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('body must be a JSON object');
  return v as Record<string, unknown>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export async function startCardControl(opts: { reader: CardReaderServer; port?: number }): Promise<{ url: string; close(): Promise<void> }> {
  const { reader } = opts;
  const server = createServer((req, res) => {
    void (async () => {
      try {
        const path = (req.url ?? '/').split('?')[0];
        if (req.method === 'GET' && path === '/state') return send(res, 200, { ok: true, ...reader.state() });
        if (req.method !== 'POST') return send(res, 404, { ok: false, error: `no route ${req.method} ${path}` });
        const b = await readJson(req);
        switch (path) {
          case '/swipe': {
            const card = b.card;
            if (typeof card !== 'string' || !/^[0-9A-Za-z]{1,32}$/.test(card)) return send(res, 400, { ok: false, error: '"card" must be 1..32 digits or letters' });
            return send(res, 200, { ok: true, reports: reader.swipe(card) });
          }
          case '/unplug':
            await reader.unplug();
            return send(res, 200, { ok: true });
          case '/hang':
            await reader.hang();
            return send(res, 200, { ok: true });
          case '/replug':
            await reader.replug();
            return send(res, 200, { ok: true });
          default:
            return send(res, 404, { ok: false, error: `no route POST ${path}` });
        }
      } catch (err) {
        send(res, 400, { ok: false, error: (err as Error).message });
      }
    })();
  });
  await new Promise<void>((r) => server.listen(opts.port ?? 0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
