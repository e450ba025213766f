/**
 * The lab's control API and page: node:http on 127.0.0.1 only, one route
 * table (ROUTES, which the OpenAPI test walks: every route here must be in
 * openapi.yaml and answer as it says). JSON in and out; errors are
 * `{"error":{"code","message"}}` with the status the code implies. The Host
 * header must name loopback: a web page rebinding its DNS name to 127.0.0.1
 * cannot drive the lab from a browser.
 *
 * Events (punches at the cloud, receipts, command results, device state
 * changes, actions) stream as Server-Sent Events from GET /api/events; a
 * reconnecting client sends Last-Event-ID and gets what it missed.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { readJsonBody, sendBodyError } from '../../src/util/http-body.js';
import { TallyboxError, errorMessage, isTallyboxError } from '../../src/util/errors.js';
import type { Lab, LabEvent } from './lab.js';
import { OPENAPI_FILE, PAGE_DIR } from './paths.js';

export interface RouteContext {
  lab: Lab;
  params: Record<string, string>;
  /** The parsed JSON body (routes with `body: true`), else {}. */
  body: Record<string, unknown>;
  query: URLSearchParams;
  req: IncomingMessage;
  res: ServerResponse;
}

export interface Route {
  method: 'GET' | 'POST';
  /** OpenAPI-style template, e.g. /api/devices/{name}. */
  path: string;
  /** Reads a JSON body. */
  body?: boolean;
  /** JSON result (status 200 unless `status`), or 'handled' when the handler wrote the response itself. */
  handler(ctx: RouteContext): Promise<unknown> | unknown;
  status?: number;
}

const STATIC: Record<string, { file: string; type: string }> = {
  '/': { file: join(PAGE_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: join(PAGE_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/openapi.yaml': { file: OPENAPI_FILE, type: 'application/yaml; charset=utf-8' },
};

function serveStatic(path: string): Route['handler'] {
  return ({ res }) => {
    const s = STATIC[path]!;
    res.writeHead(200, { 'content-type': s.type, 'cache-control': 'no-store' });
    res.end(readFileSync(s.file));
    return 'handled';
  };
}

const act =
  (build: (c: RouteContext) => Record<string, unknown>): Route['handler'] =>
  (c) =>
    c.lab.act(build(c));

export const ROUTES: readonly Route[] = [
  { method: 'GET', path: '/', handler: serveStatic('/') },
  { method: 'GET', path: '/app.js', handler: serveStatic('/app.js') },
  { method: 'GET', path: '/openapi.yaml', handler: serveStatic('/openapi.yaml') },
  { method: 'GET', path: '/api/lab', handler: ({ lab }) => lab.info() },
  { method: 'GET', path: '/api/devices', handler: ({ lab }) => ({ devices: lab.devices() }) },
  { method: 'GET', path: '/api/devices/{name}', handler: ({ lab, params }) => lab.device(params.name!) },
  { method: 'GET', path: '/api/people', handler: ({ lab }) => ({ people: lab.persons() }) },
  { method: 'GET', path: '/api/people/{id}', handler: ({ lab, params }) => lab.person(params.id!) },
  { method: 'GET', path: '/api/punches', handler: ({ lab }) => ({ punches: lab.punches() }) },
  { method: 'GET', path: '/api/actions', handler: ({ lab }) => ({ seed: lab.seed, actions: lab.actions() }) },
  { method: 'GET', path: '/api/events', handler: (c) => streamEvents(c) },
  { method: 'POST', path: '/api/devices/{name}/present', body: true, handler: act(({ params, body }) => ({ type: 'present', device: params.name, person: body.person, method: body.method })) },
  { method: 'POST', path: '/api/devices/{name}/uplink', body: true, handler: act(({ params, body }) => ({ type: 'uplink', device: params.name, mode: body.mode })) },
  { method: 'POST', path: '/api/devices/{name}/peripherals/{peripheral}', body: true, handler: act(({ params, body }) => ({ type: 'peripheral', device: params.name, peripheral: params.peripheral, plugged: body.plugged })) },
  { method: 'POST', path: '/api/devices/{name}/disk', body: true, handler: act(({ params, body }) => ({ type: 'disk', device: params.name, full: body.full })) },
  { method: 'POST', path: '/api/devices/{name}/clock', body: true, handler: act(({ params, body }) => ({ type: 'clock', device: params.name, offsetMs: body.offsetMs })) },
  { method: 'POST', path: '/api/devices/{name}/agent/kill', handler: act(({ params }) => ({ type: 'agent', device: params.name, op: 'kill' })) },
  { method: 'POST', path: '/api/devices/{name}/agent/restart', handler: act(({ params }) => ({ type: 'agent', device: params.name, op: 'restart' })) },
  { method: 'GET', path: '/api/devices/{name}/print-jobs', handler: ({ lab, params }) => lab.printJobs(params.name!) },
  { method: 'POST', path: '/api/devices/{name}/print-jobs', body: true, handler: act(({ params, body }) => ({ ...body, type: 'print', device: params.name })) },
  { method: 'POST', path: '/api/devices/{name}/printer', body: true, handler: act(({ params, body }) => ({ ...body, type: 'printer', device: params.name })) },
  { method: 'POST', path: '/api/commands/enrol', body: true, handler: act(({ body }) => ({ type: 'enrol', person: body.person, ...(body.device !== undefined ? { device: body.device } : {}) })) },
  { method: 'POST', path: '/api/commands/erase', body: true, handler: act(({ body }) => ({ type: 'erase', person: body.person })) },
  { method: 'POST', path: '/api/commands/withdraw', body: true, handler: act(({ body }) => ({ type: 'withdraw', org: body.org })) },
];

const STATUS: Record<string, number> = {
  LAB_BAD_REQUEST: 400,
  LAB_METHOD_UNAVAILABLE: 400,
  LAB_PERSON_TRAIT_MISSING: 400,
  LAB_UNKNOWN_PERIPHERAL: 404,
  LAB_UNKNOWN_DEVICE: 404,
  LAB_UNKNOWN_PERSON: 404,
  LAB_UNKNOWN_ORG: 404,
  NOT_FOUND: 404,
  LAB_AGENT_DOWN: 409,
  LAB_UPLINK_FAULT_UNAVAILABLE: 409,
  LAB_DISK_FAULT_UNAVAILABLE: 409,
  LAB_CLOSED: 503,
  LAB_AGENT_UNRESPONSIVE: 503,
  PRINT_NOT_AVAILABLE: 400,
};

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

function sendError(res: ServerResponse, err: unknown): void {
  if (sendBodyError(res, err)) return;
  if (isTallyboxError(err)) return sendJson(res, STATUS[err.code] ?? 500, { error: { code: err.code, message: err.message } });
  sendJson(res, 500, { error: { code: 'LAB_INTERNAL', message: errorMessage(err) } });
}

/** Match a path against a template; the params, or null. */
export function matchPath(template: string, path: string): Record<string, string> | null {
  const t = template.split('/');
  const p = path.split('/');
  if (t.length !== p.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < t.length; i++) {
    const seg = t[i]!;
    if (seg.startsWith('{') && seg.endsWith('}')) {
      if (!p[i]) return null;
      try {
        params[seg.slice(1, -1)] = decodeURIComponent(p[i]!);
      } catch {
        return null; // a broken %-escape matches nothing
      }
    } else if (seg !== p[i]) return null;
  }
  return params;
}

function streamEvents({ lab, req, res, query }: RouteContext): 'handled' {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
  const since = Number(req.headers['last-event-id'] ?? query.get('since') ?? 0) || 0;
  const send = (e: LabEvent) => res.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify({ ...e.data, at: e.at })}\n\n`);
  res.write(': tallybox lab events\n\n');
  for (const e of lab.events(since)) send(e);
  lab.on('event', send);
  // Comments keep idle proxies and the browser from closing the stream.
  const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
  ping.unref();
  const stop = () => {
    clearInterval(ping);
    lab.off('event', send);
  };
  req.on('close', stop);
  res.on('error', stop);
  return 'handled';
}

const LOOPBACK_HOST = /^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/i;

export interface LabServer {
  url: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

export async function startLabServer(lab: Lab, opts: { port?: number } = {}): Promise<LabServer> {
  const server = createServer((req, res) => {
    void (async () => {
      try {
        if (!LOOPBACK_HOST.test(req.headers.host ?? '')) throw new TallyboxError('BAD_HOST', 'the lab answers only requests addressed to loopback (Host: 127.0.0.1, localhost or [::1])');
        const url = new URL(req.url ?? '/', 'http://127.0.0.1');
        const candidates = ROUTES.map((r) => ({ r, params: matchPath(r.path, url.pathname) })).filter((x) => x.params !== null);
        const hit = candidates.find((x) => x.r.method === req.method);
        if (!hit) {
          if (candidates.length) {
            res.setHeader('allow', candidates.map((x) => x.r.method).join(', '));
            return sendJson(res, 405, { error: { code: 'METHOD_NOT_ALLOWED', message: `${req.method} ${url.pathname} is not allowed (${candidates.map((x) => x.r.method).join(', ')})` } });
          }
          throw new TallyboxError('NOT_FOUND', `no route ${req.method} ${url.pathname} (see /openapi.yaml)`);
        }
        let body: Record<string, unknown> = {};
        if (hit.r.body) {
          const v = await readJsonBody(req, { maxBytes: 4096, timeoutMs: 5000 });
          if (!v || typeof v !== 'object' || Array.isArray(v)) throw new TallyboxError('LAB_BAD_REQUEST', 'the body must be a JSON object');
          body = v as Record<string, unknown>;
        }
        const out = await hit.r.handler({ lab, params: hit.params!, body, query: url.searchParams, req, res });
        if (out !== 'handled') sendJson(res, hit.r.status ?? 200, out);
      } catch (err) {
        if (isTallyboxError(err, 'BAD_HOST')) return sendJson(res, 403, { error: { code: err.code, message: err.message } });
        sendError(res, err);
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
