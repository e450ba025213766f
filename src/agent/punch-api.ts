/**
 * Local punch API (loopback only): lets a co-located integration or a
 * simulator hand the agent an already-identified punch. The reply is sent only
 * after the punch is on disk, so a 201 means "accepted, will be delivered".
 *
 *   POST /v1/punch  {"orgId","subjectId","method":"CARD"|"FACE"|..., "eventId"?}
 *        201 {"eventId","seq"}   400 bad input   503 refused (QUEUE_FULL, DISK_FULL, ...)
 *   GET  /v1/state  the DeviceState the cloud would see (no personal data)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PunchMethod, pb } from '../proto/index.js';
import { isTallyboxError } from '../util/errors.js';
import type { Agent } from './agent.js';

const MAX_BODY = 4096;
const METHODS: Record<string, PunchMethod> = {
  FINGERPRINT: PunchMethod.PUNCH_METHOD_FINGERPRINT,
  FACE: PunchMethod.PUNCH_METHOD_FACE,
  CARD: PunchMethod.PUNCH_METHOD_CARD,
  WIFI: PunchMethod.PUNCH_METHOD_WIFI,
  PIN: PunchMethod.PUNCH_METHOD_PIN,
};
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const EVENT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error(`body larger than ${MAX_BODY} bytes`));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export function parsePunchRequest(text: string): { orgId: string; subjectId: string; method: PunchMethod; eventId?: string } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error('body is not JSON');
  }
  const b = body as Record<string, unknown>;
  if (typeof b.orgId !== 'string' || !ID.test(b.orgId)) throw new Error('orgId: required, 1-64 of A-Z a-z 0-9 _ . -');
  if (typeof b.subjectId !== 'string' || !ID.test(b.subjectId)) throw new Error('subjectId: required, 1-64 of A-Z a-z 0-9 _ . -');
  const method = typeof b.method === 'string' ? METHODS[b.method] : undefined;
  if (method === undefined) throw new Error(`method: one of ${Object.keys(METHODS).join(', ')}`);
  if (b.eventId !== undefined && (typeof b.eventId !== 'string' || !EVENT_ID.test(b.eventId))) throw new Error('eventId: a UUIDv7 string when given');
  return { orgId: b.orgId, subjectId: b.subjectId, method, ...(typeof b.eventId === 'string' ? { eventId: b.eventId } : {}) };
}

export async function startPunchApi(agent: Agent, host: string, port: number): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  const server = createServer((req, res) => {
    void (async () => {
      if (req.method === 'GET' && req.url === '/v1/state') {
        send(res, 200, pb.DeviceState.toObject(pb.DeviceState.fromObject(agent.state()), { enums: String }));
        return;
      }
      if (req.method !== 'POST' || req.url !== '/v1/punch') {
        send(res, 404, { error: { code: 'NOT_FOUND', message: 'POST /v1/punch or GET /v1/state' } });
        return;
      }
      let input: ReturnType<typeof parsePunchRequest>;
      try {
        input = parsePunchRequest(await readBody(req));
      } catch (err) {
        send(res, 400, { error: { code: 'BAD_REQUEST', message: (err as Error).message } });
        return;
      }
      try {
        const p = await agent.punch(input);
        send(res, 201, { eventId: p.eventId, seq: p.seq });
      } catch (err) {
        const code = isTallyboxError(err) ? err.code : 'INTERNAL';
        send(res, 503, { error: { code, message: (err as Error).message } });
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
