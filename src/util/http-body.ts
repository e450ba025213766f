/**
 * The one bounded request-body reader of every local HTTP server (the punch
 * API, the simulators' control APIs, the cloud emulator): nothing is parsed
 * before it is known to be small, of the expected type, and complete.
 *
 * - size: a Content-Length above the cap is refused before a byte is read;
 *   a chunked (or lying) body is counted as it streams and refused the moment
 *   it passes the cap — never buffered whole first (413);
 * - type: the media type (before any `;charset=…`) must be one of those
 *   allowed, case-insensitively (415); a body-less request needs no type;
 * - time: the whole body must arrive within `timeoutMs` (408), so a client
 *   that sends a header and then trickles cannot hold a connection forever.
 *
 * Errors are HttpBodyError (a TallyboxError with an HTTP `status` and a
 * `code`: BODY_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, BODY_TIMEOUT, BAD_JSON,
 * BODY_ABORTED). `sendBodyError` answers one as JSON and closes the connection,
 * since the rest of an unread body must not be taken for the next request.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TallyboxError } from './errors.js';

export interface BodyLimits {
  /** Largest body accepted, in bytes. */
  maxBytes: number;
  /** Allowed media types (lower case, e.g. 'application/json'); undefined: any. */
  contentTypes?: readonly string[];
  /** The whole body must arrive within this many ms (default 10 s). */
  timeoutMs?: number;
}

export class HttpBodyError extends TallyboxError {
  constructor(
    readonly status: 400 | 408 | 413 | 415,
    code: string,
    message: string,
  ) {
    super(code, message, { status });
    this.name = 'HttpBodyError';
  }
}

/** The media type of a Content-Type header: lower case, parameters dropped. */
export function mediaType(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const t = header.split(';', 1)[0]!.trim().toLowerCase();
  return t === '' ? undefined : t;
}

/** Read the body within the limits; rejects with HttpBodyError. */
export function readBody(req: IncomingMessage, limits: BodyLimits): Promise<Buffer> {
  const { maxBytes } = limits;
  const declared = req.headers['content-length'];
  const hasBody = declared !== undefined ? declared !== '0' : req.headers['transfer-encoding'] !== undefined;
  if (limits.contentTypes && hasBody) {
    const t = mediaType(req.headers['content-type']);
    if (t === undefined || !limits.contentTypes.includes(t)) {
      return Promise.reject(new HttpBodyError(415, 'UNSUPPORTED_MEDIA_TYPE', `Content-Type must be ${limits.contentTypes.join(' or ')}${t ? `, got ${t}` : ' (none given)'}`));
    }
  }
  if (declared !== undefined) {
    const n = Number(declared);
    if (!Number.isSafeInteger(n) || n < 0) return Promise.reject(new HttpBodyError(400, 'BAD_CONTENT_LENGTH', 'Content-Length is not a number'));
    if (n > maxBytes) return Promise.reject(new HttpBodyError(413, 'BODY_TOO_LARGE', `body of ${n} bytes is larger than the ${maxBytes} bytes accepted`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err: Error | undefined, body?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
      if (err) {
        // Stop reading: what is left of the body is discarded with the connection.
        req.pause();
        reject(err);
      } else resolve(body!);
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) finish(new HttpBodyError(413, 'BODY_TOO_LARGE', `body is larger than the ${maxBytes} bytes accepted`));
      else chunks.push(c);
    };
    const onEnd = () => finish(undefined, Buffer.concat(chunks, size));
    const onError = () => finish(new HttpBodyError(400, 'BODY_ABORTED', 'the request body was cut off'));
    const onAborted = onError;
    const timeoutMs = limits.timeoutMs ?? 10_000;
    const timer = setTimeout(() => finish(new HttpBodyError(408, 'BODY_TIMEOUT', `the request body did not arrive within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}

/** readBody, then JSON.parse of its UTF-8 text (BAD_JSON, 400, when it is not JSON). */
export async function readJsonBody(req: IncomingMessage, limits: Omit<BodyLimits, 'contentTypes'> & { contentTypes?: readonly string[] }): Promise<unknown> {
  const buf = await readBody(req, { contentTypes: ['application/json'], ...limits });
  try {
    return JSON.parse(buf.toString('utf8')) as unknown;
  } catch {
    throw new HttpBodyError(400, 'BAD_JSON', 'the body is not JSON');
  }
}

/**
 * Answer a body error as `{"error":{"code","message"}}` with its status and
 * close the connection. Returns false (and sends nothing) for other errors.
 */
export function sendBodyError(res: ServerResponse, err: unknown): boolean {
  if (!(err instanceof HttpBodyError)) return false;
  if (!res.headersSent) {
    res.writeHead(err.status, { 'content-type': 'application/json', connection: 'close' });
    res.end(JSON.stringify({ error: { code: err.code, message: err.message } }));
  }
  return true;
}
