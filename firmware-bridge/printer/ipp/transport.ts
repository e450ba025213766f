/**
 * One IPP request over HTTP(S) (RFC 8010 §4: POST, Content-Type application/ipp): the encoded
 * attribute part, then (optionally) the document streamed after it in a chunked body with
 * backpressure, then the response read (bounded) and decoded. node:http/https only.
 *
 * Errors, as the Printer contract names them: PRINTER_UNREACHABLE (no connection, TLS refused, a
 * timeout), PRINTER_CLOSED (the connection broke after it was made), PRINTER_PROTOCOL (not HTTP 200
 * application/ipp, or a body that does not decode), PRINTER_CANCELLED (the signal aborted). An error
 * thrown by the document's own iterator is passed on unchanged (it is not the printer's fault).
 */
import { readFileSync } from 'node:fs';
import http, { type ClientRequest, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { HttpBodyError, readBody } from '../../../src/util/http-body.js';
import { TallyboxError } from '../../../src/util/errors.js';
import { linkError, printerError } from '../errors.js';
import { decodeMessage, encodeMessage, type IppMessage } from './codec.js';

export interface IppEndpoint {
  /** http: or https: */
  protocol: 'http:' | 'https:';
  host: string;
  port: number;
  path: string;
  /** The printer-uri to put in requests (ipp:// or ipps://). */
  printerUri: string;
  /** PEM CA bundle for https (the system's store when undefined); the host name is always checked. */
  ca?: Buffer;
}

/** Parse ipp://, ipps://, http:// or https:// (default port 631 for all: RFC 8010 §8.1, RFC 7472). */
export function parseEndpoint(url: string, opts: { caFile?: string } = {}): IppEndpoint {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TallyboxError('CONFIG_INVALID', `printer URL ${JSON.stringify(url)} is not a URL`);
  }
  const secure = u.protocol === 'ipps:' || u.protocol === 'https:';
  if (!secure && u.protocol !== 'ipp:' && u.protocol !== 'http:') throw new TallyboxError('CONFIG_INVALID', `printer URL scheme ${u.protocol} is not ipp:, ipps:, http: or https:`);
  if (u.username || u.password) throw new TallyboxError('CONFIG_INVALID', 'printer URL must not carry credentials');
  const port = u.port ? Number(u.port) : 631;
  const path = (u.pathname || '/') + u.search;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  let ca: Buffer | undefined;
  if (opts.caFile) {
    if (!secure) throw new TallyboxError('CONFIG_INVALID', 'a printer CA file needs an ipps:// URL');
    try {
      ca = readFileSync(opts.caFile);
    } catch (err) {
      throw new TallyboxError('CONFIG_INVALID', `printer CA file ${opts.caFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  return { protocol: secure ? 'https:' : 'http:', host, port, path, printerUri: `${secure ? 'ipps' : 'ipp'}://${u.host}${path}`, ...(ca ? { ca } : {}) };
}

export interface IppExchange {
  endpoint: IppEndpoint;
  request: IppMessage;
  /** Streamed after the attributes (chunked body); never collected. */
  document?: AsyncIterable<Uint8Array>;
  signal?: AbortSignal;
  /** Idle time (no bytes either way) allowed before giving up, and the deadline for the response body. */
  timeoutMs: number;
  onProgress?(bytes: number): void;
}

export interface IppReply {
  message: IppMessage;
  /** Document bytes written (0 without a document). */
  bytesSent: number;
  /** false when the printer answered before the whole document was written (it stopped reading). */
  complete: boolean;
}

/** Largest IPP response accepted (a Get-Printer-Attributes "all" from a real printer is ~20-60 KiB). */
const MAX_RESPONSE = 4 * 1024 * 1024;

/** Socket errors before the connection was made: the printer is not there (or refuses us). */
const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|ERR_OSSL_)/;

function transportError(err: NodeJS.ErrnoException, connected: boolean, what: string): TallyboxError {
  const code = err.code ?? 'ERROR';
  if (TLS_CODES.test(code)) return linkError(code, false, `${what}: TLS to the printer refused (${code})`, { reason: 'tls', cause: code });
  if (!connected) return linkError(code, false, `${what}: cannot connect to the printer (${code})`, { reason: 'connect', cause: code });
  return linkError(code, true, `${what}: the printer closed the connection (${code})`, { cause: code });
}

let nextRequestId = 1;
/** request-id: 1..2^31-1, unique per client process (RFC 8011 §4.1.1). */
export function newRequestId(): number {
  const id = nextRequestId;
  nextRequestId = nextRequestId >= 0x7fffffff ? 1 : nextRequestId + 1;
  return id;
}

/** Send one IPP request and decode the response. */
export function exchange(x: IppExchange): Promise<IppReply> {
  const { endpoint: ep } = x;
  const what = `IPP operation 0x${x.request.code.toString(16).padStart(4, '0')}`;
  const head = encodeMessage(x.request);
  return new Promise<IppReply>((resolve, reject) => {
    if (x.signal?.aborted) return reject(printerError('PRINTER_CANCELLED', `${what}: cancelled before it was sent`));
    let settled = false;
    let connected = false;
    let bytesSent = 0;
    let complete = false;
    let response: IncomingMessage | undefined;
    const headers: Record<string, string | number> = { 'content-type': 'application/ipp', accept: 'application/ipp' };
    // Without a document the body is small and known: a Content-Length. With one: chunked (Node's default).
    if (!x.document) headers['content-length'] = head.length;
    const options = { host: ep.host, port: ep.port, path: ep.path, method: 'POST', headers, agent: false as const };
    const req: ClientRequest = ep.protocol === 'https:' ? https.request({ ...options, ...(ep.ca ? { ca: ep.ca } : {}), servername: isIp(ep.host) ? undefined : ep.host }) : http.request(options);

    const finish = (err: Error | undefined, reply?: IppReply) => {
      if (settled) return;
      settled = true;
      x.signal?.removeEventListener('abort', onAbort);
      wake();
      // The response is read whole (or abandoned): the connection has nothing more to carry (agent: false).
      req.destroy();
      response?.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const onAbort = () => finish(printerError('PRINTER_CANCELLED', `${what}: cancelled`));
    x.signal?.addEventListener('abort', onAbort, { once: true });

    // Wakes the document pump when it waits for 'drain' and something else happened.
    let waiter: (() => void) | undefined;
    const wake = () => {
      const w = waiter;
      waiter = undefined;
      w?.();
    };

    req.on('socket', (s) => {
      s.once(ep.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
        connected = true;
      });
    });
    req.setTimeout(x.timeoutMs, () => finish(printerError('PRINTER_UNREACHABLE', `${what}: the printer did not answer within ${x.timeoutMs} ms`, { reason: 'timeout', connected })));
    req.on('error', (err: NodeJS.ErrnoException) => finish(transportError(err, connected, what)));
    req.on('drain', wake);
    req.on('response', (res) => {
      response = res;
      wake();
      if (res.statusCode !== 200) {
        res.resume();
        return finish(printerError('PRINTER_PROTOCOL', `${what}: the printer answered HTTP ${res.statusCode}`, { httpStatus: res.statusCode }));
      }
      readBody(res, { maxBytes: MAX_RESPONSE, contentTypes: ['application/ipp'], timeoutMs: x.timeoutMs }).then(
        (body) => {
          try {
            finish(undefined, { message: decodeMessage(body).message, bytesSent, complete });
          } catch (err) {
            finish(err as Error);
          }
        },
        (err: unknown) => {
          const reason = err instanceof HttpBodyError ? err.code : 'BODY_ERROR';
          finish(printerError('PRINTER_PROTOCOL', `${what}: unusable response body (${reason})`, { reason }));
        },
      );
    });

    const pump = async () => {
      req.write(head);
      if (x.document) {
        for await (const chunk of x.document) {
          // A response (an early refusal) or an error ends the upload: nothing more is worth sending.
          if (settled || response) return;
          if (chunk.length === 0) continue;
          const more = req.write(chunk);
          bytesSent += chunk.length;
          x.onProgress?.(bytesSent);
          if (!more) await new Promise<void>((r) => (waiter = r));
        }
      }
      if (!settled && !response) {
        complete = true;
        req.end();
      }
    };
    pump().catch((err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));
  });
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}
