/**
 * The simulator's control interface: HTTP/JSON on 127.0.0.1 only (it can make
 * anyone "appear" at the terminal, so it never listens beyond loopback).
 *
 *   GET  /state                         → FaceModuleState
 *   POST /present  {"person": 12}       → a live capture of person 12
 *   POST /spoof    {"person": 12}       → a presentation attack with person 12's face
 *   POST /tamper   {"open": true}       → tamper switch opened (false: closed)
 *   POST /keypad   {"keys": "1234"}     → keys entered, sent on '#'
 *   POST /hang     {"on": true}         → the module stops answering (false: answers again)
 *
 * Replies {"ok": true, ...} or {"ok": false, "error": "..."} with status 400/404.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { HttpBodyError, readBody } from '../../src/util/http-body.js';
import type { AddressInfo } from 'node:net';
import type { FaceModuleSim } from './sim.js';

/** The shared bounded reader (src/util/http-body.ts): JSON only, 10 000 bytes, 5 s. An empty body is {}. */
async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const buf = await readBody(req, { maxBytes: 10_000, contentTypes: ['application/json'], timeoutMs: 5000 });
  if (buf.length === 0) return {};
  const v: unknown = JSON.parse(buf.toString('utf8'));
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('body must be a JSON object');
  return v as Record<string, unknown>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export interface ControlServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

export async function startControlServer(opts: { sim: FaceModuleSim; port?: number }): Promise<ControlServer> {
  const { sim } = opts;
  const person = (b: Record<string, unknown>): number => {
    const p = b.person;
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p >= sim.population.size) throw new Error(`"person" must be an integer in 0..${sim.population.size - 1}`);
    return p;
  };
  const server = createServer((req, res) => {
    void (async () => {
      try {
        const path = (req.url ?? '/').split('?')[0];
        if (req.method === 'GET' && path === '/state') return send(res, 200, { ok: true, ...sim.state() });
        if (req.method !== 'POST') return send(res, 404, { ok: false, error: `no route ${req.method} ${path}` });
        const b = await readJson(req);
        switch (path) {
          case '/present':
            await sim.present(person(b));
            return send(res, 200, { ok: true });
          case '/spoof':
            await sim.spoof(person(b));
            return send(res, 200, { ok: true });
          case '/tamper':
            if (typeof b.open !== 'boolean') throw new Error('"open" must be true or false');
            await sim.tamper(b.open);
            return send(res, 200, { ok: true });
          case '/keypad':
            if (typeof b.keys !== 'string' || !/^[0-9*]{1,32}$/.test(b.keys)) throw new Error('"keys" must be 1..32 of 0-9 and *');
            await sim.keypad(b.keys);
            return send(res, 200, { ok: true });
          case '/hang':
            if (typeof b.on !== 'boolean') throw new Error('"on" must be true or false');
            sim.hang(b.on);
            return send(res, 200, { ok: true });
          default:
            return send(res, 404, { ok: false, error: `no route POST ${path}` });
        }
      } catch (err) {
        send(res, err instanceof HttpBodyError ? err.status : 400, { ok: false, error: (err as Error).message });
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${addr.port}`,
    server,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
