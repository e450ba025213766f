/**
 * Local punch API (loopback only): lets a co-located integration or a
 * simulator hand the agent an already-identified punch. The reply is sent only
 * after the punch is on disk, so a 201 means "accepted, will be delivered".
 *
 *   POST /v1/punch  {"orgId","subjectId","method":"CARD"|"FACE"|..., "eventId"?}
 *        201 {"eventId","seq"}   400 bad input   403 ORG_NOT_SERVED
 *        503 refused (QUEUE_FULL, DISK_FULL, ...)
 *   GET  /v1/state  the DeviceState the cloud would see (no personal data), every
 *        field present (zeros included), plus `online` and `link` (the link state)
 *
 * Every request (issue 9 §7), before anything else:
 * - Host must name the loopback interface (127.0.0.1, localhost, [::1], with
 *   or without the port): a web page that rebinds its own name to 127.0.0.1
 *   cannot reach the API through the user's browser (403 BAD_HOST);
 * - with `punchApi.token` or `punchApi.tokenFile` set: `Authorization: Bearer
 *   <token>` (401 UNAUTHORIZED, compared in constant time), so other local
 *   users' processes cannot punch;
 * - a POST body must be `application/json` (415), at most 4 KiB (413), and
 *   arrive within 5 s (408): src/util/http-body.ts;
 * - the punch's organisation must be one this device serves (403 ORG_NOT_SERVED).
 * Errors are `{"error":{"code","message"}}`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PunchMethod, pb } from '../proto/index.js';
import { TallyboxError, isTallyboxError } from '../util/errors.js';
import { readJsonBody, sendBodyError } from '../util/http-body.js';
import type { Agent } from './agent.js';

const MAX_BODY = 4096;
const BODY_TIMEOUT_MS = 5000;
const METHODS: Record<string, PunchMethod> = {
  FINGERPRINT: PunchMethod.PUNCH_METHOD_FINGERPRINT,
  FACE: PunchMethod.PUNCH_METHOD_FACE,
  CARD: PunchMethod.PUNCH_METHOD_CARD,
  WIFI: PunchMethod.PUNCH_METHOD_WIFI,
  PIN: PunchMethod.PUNCH_METHOD_PIN,
};
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const EVENT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Loopback names, optionally with a port. */
const LOOPBACK_HOST = /^(?:127\.0\.0\.1|localhost|\[::1\])(?::\d{1,5})?$/i;

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

const fail = (res: ServerResponse, status: number, code: string, message: string, headers?: Record<string, string>) => send(res, status, { error: { code, message } }, headers);

export function parsePunchRequest(body: unknown): { orgId: string; subjectId: string; method: PunchMethod; eventId?: string } {
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      throw new Error('body is not JSON');
    }
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error('body must be a JSON object');
  const b = body as Record<string, unknown>;
  if (typeof b.orgId !== 'string' || !ID.test(b.orgId)) throw new Error('orgId: required, 1-64 of A-Z a-z 0-9 _ . -');
  if (typeof b.subjectId !== 'string' || !ID.test(b.subjectId)) throw new Error('subjectId: required, 1-64 of A-Z a-z 0-9 _ . -');
  const method = typeof b.method === 'string' && Object.hasOwn(METHODS, b.method) ? METHODS[b.method] : undefined;
  if (method === undefined) throw new Error(`method: one of ${Object.keys(METHODS).join(', ')}`);
  if (b.eventId !== undefined && (typeof b.eventId !== 'string' || !EVENT_ID.test(b.eventId))) throw new Error('eventId: a UUIDv7 string when given');
  return { orgId: b.orgId, subjectId: b.subjectId, method, ...(typeof b.eventId === 'string' ? { eventId: b.eventId } : {}) };
}

/**
 * The bearer token from config: `token`, or `tokenFile` — a regular file (not
 * a symlink), owned by this user, not readable or writable by anyone else.
 * Throws CONFIG_INVALID naming the file otherwise.
 */
export function loadPunchApiToken(cfg: { token?: string | undefined; tokenFile?: string | undefined }): string | undefined {
  if (cfg.token !== undefined) return cfg.token;
  if (cfg.tokenFile === undefined) return undefined;
  const file = cfg.tokenFile;
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new TallyboxError('CONFIG_INVALID', `punchApi.tokenFile ${file}: ${code === 'ELOOP' ? 'is a symlink' : `cannot be opened (${code})`}`, { key: 'punchApi.tokenFile' });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new TallyboxError('CONFIG_INVALID', `punchApi.tokenFile ${file} is not a regular file`, { key: 'punchApi.tokenFile' });
    if ((st.mode & 0o077) !== 0) throw new TallyboxError('CONFIG_INVALID', `punchApi.tokenFile ${file} has mode ${(st.mode & 0o777).toString(8)}; it must be 0600 (chmod 600 ${file})`, { key: 'punchApi.tokenFile' });
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) throw new TallyboxError('CONFIG_INVALID', `punchApi.tokenFile ${file} is owned by uid ${st.uid}, not by the agent's user`, { key: 'punchApi.tokenFile' });
    const token = readFileSync(fd, 'utf8').trim();
    if (token.length < 16 || /\s/.test(token)) throw new TallyboxError('CONFIG_INVALID', `punchApi.tokenFile ${file} must hold one token of at least 16 characters`, { key: 'punchApi.tokenFile' });
    return token;
  } finally {
    closeSync(fd);
  }
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

function authorised(req: IncomingMessage, tokenDigest: Buffer | undefined): boolean {
  if (!tokenDigest) return true;
  const m = /^Bearer ([^\s]+)$/.exec(req.headers.authorization ?? '');
  return m !== null && timingSafeEqual(digest(m[1]!), tokenDigest);
}

/** The link state in DeviceState's LinkStatus vocabulary (state.proto, link's range 140-159). */
const LINK_STATUS: Record<Agent['link']['state'], string> = {
  idle: 'LINK_STATUS_OFFLINE',
  connecting: 'LINK_STATUS_CONNECTING',
  online: 'LINK_STATUS_ONLINE',
  backoff: 'LINK_STATUS_OFFLINE',
  closing: 'LINK_STATUS_STOPPED',
  closed: 'LINK_STATUS_STOPPED',
};

/**
 * GET /v1/state: the DeviceState with every field present (zeros and empty
 * lists included), `online`, and `link` — DeviceState's own link status when
 * the agent fills it, else the same names derived from the link's state.
 */
export function stateForApi(agent: Pick<Agent, 'state' | 'link' | 'intakeStats'>): Record<string, unknown> {
  const state = pb.DeviceState.toObject(pb.DeviceState.fromObject(agent.state()), { enums: String, longs: Number, defaults: true, arrays: true });
  const linkState = agent.link.state;
  const own = typeof state.link === 'string' && state.link !== 'LINK_STATUS_UNSPECIFIED' ? (state.link as string) : undefined;
  const rejected = agent.intakeStats();
  return { ...state, online: linkState === 'online', link: own ?? LINK_STATUS[linkState], ...(rejected ? { rejectedCommands: rejected } : {}) };
}

export interface PunchApiOptions {
  /** Overrides punchApi.token / tokenFile of the agent's config. */
  token?: string;
}

export async function startPunchApi(agent: Agent, host: string, port: number, opts: PunchApiOptions = {}): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  const token = opts.token ?? loadPunchApiToken(agent.config.punchApi);
  const tokenDigest = token === undefined ? undefined : digest(token);
  const server = createServer((req, res) => {
    void (async () => {
      if (!LOOPBACK_HOST.test(req.headers.host ?? '')) {
        fail(res, 403, 'BAD_HOST', 'the Host header must name the loopback interface (127.0.0.1, localhost or [::1])');
        return;
      }
      if (!authorised(req, tokenDigest)) {
        fail(res, 401, 'UNAUTHORIZED', 'a valid "Authorization: Bearer <token>" header is required (punchApi.token)', { 'www-authenticate': 'Bearer' });
        return;
      }
      if (req.method === 'GET' && req.url === '/v1/state') {
        send(res, 200, stateForApi(agent));
        return;
      }
      if (req.method !== 'POST' || req.url !== '/v1/punch') {
        fail(res, 404, 'NOT_FOUND', 'POST /v1/punch or GET /v1/state');
        return;
      }
      let input: ReturnType<typeof parsePunchRequest>;
      try {
        input = parsePunchRequest(await readJsonBody(req, { maxBytes: MAX_BODY, timeoutMs: BODY_TIMEOUT_MS }));
      } catch (err) {
        if (!sendBodyError(res, err)) fail(res, 400, 'BAD_REQUEST', (err as Error).message);
        return;
      }
      if (!agent.servedOrgs.has(input.orgId)) {
        fail(res, 403, 'ORG_NOT_SERVED', `this device does not serve organisation ${JSON.stringify(input.orgId)}; nothing was queued`);
        return;
      }
      try {
        const p = await agent.punch(input);
        send(res, 201, { eventId: p.eventId, seq: p.seq });
      } catch (err) {
        const code = isTallyboxError(err) ? err.code : 'INTERNAL';
        fail(res, 503, code, (err as Error).message);
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
