/**
 * Control interface of the fingerprint simulator: HTTP/JSON on 127.0.0.1 (or a
 * unix socket). Endpoints are documented in firmware-bridge/r30x/README.md.
 * Bodies are validated with zod; a bad body gets 400 with a code and changes nothing.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { lstat, unlink } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { FingerprintSimulator } from './simulator.js';
import { HttpBodyError, readBody } from '../../src/util/http-body.js';

const FingerBody = z
  .object({
    person: z.string().min(1).max(200),
    finger: z.number().int().min(0).max(9).default(0),
    quality: z.enum(['good', 'messy', 'few-features']).default('good'),
  })
  .strict();
const FaultsBody = z
  .object({
    noise: z.number().int().min(0).max(4096),
    dropByte: z.number().int().min(0).max(1000),
    corruptChecksum: z.number().int().min(0).max(1000),
    delayMs: z.number().int().min(0).max(600_000),
  })
  .partial()
  .strict();
const NoiseBody = z.object({ bytes: z.number().int().min(1).max(4096) }).strict();
const UnplugBody = z.object({ mode: z.enum(['silent', 'close']).default('silent') }).strict();
const PageBody = z.object({ person: z.string().min(1).max(200), finger: z.number().int().min(0).max(9).default(0) }).strict();

export interface ControlAddress {
  /** e.g. http://127.0.0.1:43127 (for a unix socket: http://localhost with socketPath set). */
  url: string;
  port?: number;
  socketPath?: string;
}

export interface ControlServer {
  address: ControlAddress;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The shared bounded reader (src/util/http-body.ts): JSON only, 64 KiB, 5 s; its 413/415/408 pass through. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  let buf: Buffer;
  try {
    buf = await readBody(req, { maxBytes: 64 * 1024, contentTypes: ['application/json'], timeoutMs: 5000 });
  } catch (err) {
    if (err instanceof HttpBodyError) throw new HttpError(err.status, err.code, err.message);
    throw err;
  }
  const text = buf.toString('utf8').trim();
  if (!text) return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new HttpError(400, 'BAD_JSON', 'body is not JSON');
  }
}

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue?.path.length ? issue.path.join('.') : 'body';
  throw new HttpError(400, 'BAD_REQUEST', `${where}: ${issue?.message ?? 'invalid'}`);
}

function pageParam(sim: FingerprintSimulator, raw: string): number {
  const page = Number(raw);
  if (!Number.isInteger(page) || page < 0 || page >= sim.device.capacity) {
    throw new HttpError(400, 'BAD_PAGE', `page ${raw} is not 0..${sim.device.capacity - 1}`);
  }
  return page;
}

export const ENDPOINTS = [
  'GET    /state',
  'GET    /library',
  'PUT    /library/:page      {person, finger}',
  'DELETE /library/:page',
  'DELETE /library',
  'POST   /finger             {person, finger?, quality?}',
  'DELETE /finger',
  'GET    /faults',
  'POST   /faults             {noise?, dropByte?, corruptChecksum?, delayMs?}',
  'DELETE /faults',
  'POST   /noise              {bytes}',
  'POST   /unplug             {mode?: "silent"|"close"}',
  'POST   /replug',
] as const;

async function route(sim: FingerprintSimulator, method: string, path: string, req: IncomingMessage): Promise<unknown> {
  const lib = /^\/library\/(\d+)$/.exec(path);
  const key = `${method} ${lib ? '/library/:page' : path}`;
  switch (key) {
    case 'GET /':
      return { endpoints: ENDPOINTS };
    case 'GET /state':
      return sim.state();
    case 'GET /library':
      return { capacity: sim.device.capacity, count: sim.device.pages().length, pages: sim.device.library() };
    case 'PUT /library/:page': {
      const page = pageParam(sim, lib?.[1] ?? '');
      const body = parse(PageBody, await readJson(req));
      sim.device.enrolDirect(page, body);
      return { page, ...body };
    }
    case 'DELETE /library/:page': {
      const page = pageParam(sim, lib?.[1] ?? '');
      return { page, deleted: sim.device.deletePage(page) };
    }
    case 'DELETE /library':
      sim.device.clearLibrary();
      return { count: 0 };
    case 'POST /finger': {
      const body = parse(FingerBody, await readJson(req));
      sim.device.placeFinger(body, body.quality);
      return { finger: sim.device.finger };
    }
    case 'DELETE /finger':
      sim.device.liftFinger();
      return { finger: null };
    case 'GET /faults':
      return { faults: sim.deviceLink.faults };
    case 'POST /faults':
      return { faults: sim.deviceLink.setFaults(parse(FaultsBody, await readJson(req))) };
    case 'DELETE /faults':
      sim.deviceLink.clearFaults();
      return { faults: sim.deviceLink.faults };
    case 'POST /noise': {
      const body = parse(NoiseBody, await readJson(req));
      await sim.deviceLink.injectNoise(body.bytes);
      return { sent: body.bytes };
    }
    case 'POST /unplug': {
      const body = parse(UnplugBody, await readJson(req));
      await sim.unplug(body.mode);
      return { plug: sim.plug };
    }
    case 'POST /replug':
      await sim.replug();
      return { plug: sim.plug };
    default:
      throw new HttpError(404, 'NOT_FOUND', `no endpoint ${method} ${path}; GET / lists them`);
  }
}

export async function startControlServer(opts: { simulator: FingerprintSimulator; port?: number; socketPath?: string }): Promise<ControlServer> {
  const sim = opts.simulator;
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    route(sim, req.method ?? 'GET', url.pathname.replace(/\/+$/, '') || '/', req).then(
      (body) => send(res, 200, body),
      (err: unknown) => {
        if (err instanceof HttpError) send(res, err.status, { error: { code: err.code, message: err.message } });
        else send(res, 500, { error: { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) } });
      },
    );
  });
  if (opts.socketPath) await removeStaleSocket(opts.socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (opts.socketPath) server.listen(opts.socketPath, resolve);
    else server.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  const address: ControlAddress = opts.socketPath ? { url: 'http://localhost', socketPath: opts.socketPath } : { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, port: (server.address() as AddressInfo).port };
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A socket file left by a killed run would make listen fail with EADDRINUSE; only sockets are removed. */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    if ((await lstat(path)).isSocket()) await unlink(path);
  } catch {
    // Not there.
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
