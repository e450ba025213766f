/**
 * Fetch a job's document over HTTPS, streamed: each piece is hashed (SHA-256)
 * and handed to `sink` (the encrypting writer) as it arrives; nothing holds the
 * whole document. Only https URLs; no redirects; the exact size the command
 * announced (more or fewer bytes is an error); a whole-fetch deadline on the
 * monotonic clock (setTimeout). The hash is compared at the end: on a mismatch
 * the caller discards the partial spool file and the key.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request, type RequestOptions } from 'node:https';
import { rootCertificates } from 'node:tls';
import { TallyboxError } from '../../util/errors.js';

export interface FetchOptions {
  url: string;
  sha256: Uint8Array;
  size: number;
  maxBytes: number;
  timeoutMs: number;
  /** Extra trusted CA certificates (PEM), added to the system's. */
  ca?: string | undefined;
  signal?: AbortSignal;
  sink: (chunk: Buffer) => Promise<void>;
}

export function loadCa(caFile: string | undefined): string | undefined {
  if (!caFile) return undefined;
  try {
    return readFileSync(caFile, 'utf8');
  } catch (err) {
    throw new TallyboxError('CONFIG_INVALID', `p1.fetch.caFile ${caFile} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

const fail = (code: string, msg: string) => new TallyboxError(code, `${code}: ${msg}`);

/** Resolves with the byte count once every byte arrived and the hash matched; rejects with a FETCH_* code otherwise. */
export function fetchDocument(o: FetchOptions): Promise<number> {
  let u: URL;
  try {
    u = new URL(o.url);
  } catch {
    return Promise.reject(fail('FETCH_BAD_URL', 'the document URL does not parse'));
  }
  if (u.protocol !== 'https:') return Promise.reject(fail('FETCH_BAD_URL', 'documents are fetched over https only'));
  if (o.sha256.length !== 32) return Promise.reject(fail('FETCH_BAD_HASH', 'the SHA-256 must be 32 bytes'));
  if (!Number.isSafeInteger(o.size) || o.size < 0 || o.size > o.maxBytes) return Promise.reject(fail('FETCH_TOO_LARGE', `the document is ${o.size} bytes; at most ${o.maxBytes} are fetched`));
  return new Promise<number>((resolve, reject) => {
    const hash = createHash('sha256');
    let got = 0;
    let done = false;
    const opts: RequestOptions = { method: 'GET', headers: { accept: '*/*' }, ...(o.ca ? { ca: [...rootCertificates, o.ca] } : {}) };
    const req = request(u, opts);
    const finish = (err: Error | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      if (err) {
        req.destroy();
        reject(err);
      } else resolve(got);
    };
    const timer = setTimeout(() => finish(fail('FETCH_TIMEOUT', `the document did not arrive within ${o.timeoutMs} ms`)), o.timeoutMs);
    const onAbort = () => finish(fail('FETCH_ABORTED', 'the fetch was cancelled'));
    if (o.signal?.aborted) return onAbort();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => finish(fail('FETCH_FAILED', `${(err as NodeJS.ErrnoException).code ?? 'network error'}`)));
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return finish(fail('FETCH_HTTP_STATUS', `the server answered ${res.statusCode}`));
      }
      const len = res.headers['content-length'];
      if (len !== undefined && Number(len) !== o.size) {
        res.resume();
        return finish(fail('FETCH_SIZE_MISMATCH', `the server announces ${len} bytes, the command ${o.size}`));
      }
      (async () => {
        for await (const chunk of res as AsyncIterable<Buffer>) {
          if (done) return;
          got += chunk.length;
          if (got > o.size) throw fail('FETCH_SIZE_MISMATCH', `more than the ${o.size} bytes announced`);
          hash.update(chunk);
          // Backpressure: the next piece is read once this one is encrypted and written.
          await o.sink(chunk);
        }
        if (got !== o.size) throw fail('FETCH_SIZE_MISMATCH', `${got} bytes arrived, ${o.size} announced`);
        const digest = hash.digest();
        if (!timingSafeEqual(digest, Buffer.from(o.sha256))) throw fail('FETCH_HASH_MISMATCH', 'the document does not match its SHA-256');
      })().then(
        () => finish(undefined),
        (err: unknown) => finish(err instanceof Error ? err : fail('FETCH_FAILED', 'stream error')),
      );
    });
    req.end();
  });
}
