/**
 * Spool file encryption: AES-256-GCM in fixed-size chunks, streamed, under a
 * job's own data key. Each chunk's AAD binds the job id, the chunk index and a
 * final-chunk flag, so a reordered, dropped, duplicated or truncated chunk
 * (or a file cut after any whole chunk) fails to decrypt instead of printing
 * part of a document. Fresh random nonce per chunk (a fetch restarted after a
 * crash re-encrypts under a new key anyway).
 *
 * File layout: "TBXSPOOL1\n" magic, then records [u32 BE ciphertext length][12 B nonce][ciphertext][16 B tag].
 * Nothing but ciphertext and lengths ever reaches the disk.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { TallyboxError } from '../../util/errors.js';

export const SPOOL_MAGIC = Buffer.from('TBXSPOOL1\n', 'latin1');
const NONCE = 12;
const TAG = 16;
const HEAD = 4 + NONCE;

function aad(jobId: string, index: number, final: boolean): Buffer {
  const id = Buffer.from(jobId, 'utf8');
  const b = Buffer.alloc(8 + 1 + 8 + id.length);
  b.write('tbxjob1\0', 0, 'latin1');
  b.writeUInt8(final ? 1 : 0, 8);
  b.writeBigUInt64BE(BigInt(index), 9);
  id.copy(b, 17);
  return b;
}

function sealChunk(key: Buffer, jobId: string, index: number, final: boolean, plain: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(aad(jobId, index, final));
  const ct = Buffer.concat([c.update(plain), c.final()]);
  const head = Buffer.allocUnsafe(HEAD);
  head.writeUInt32BE(ct.length, 0);
  nonce.copy(head, 4);
  return Buffer.concat([head, ct, c.getAuthTag()]);
}

/**
 * Writes a document into an (already created, 0600) spool file chunk by chunk.
 * One chunk of plaintext is held back so the last one can carry the final flag.
 */
export class ChunkWriter {
  readonly #fh: FileHandle;
  readonly #key: Buffer;
  readonly #jobId: string;
  readonly #chunk: number;
  #pending: Buffer[] = [];
  #pendingLen = 0;
  #index = 0;
  #bytes = 0;
  #started = false;

  constructor(opts: { fh: FileHandle; key: Buffer; jobId: string; chunkBytes: number }) {
    this.#fh = opts.fh;
    this.#key = opts.key;
    this.#jobId = opts.jobId;
    this.#chunk = opts.chunkBytes;
  }

  get plaintextBytes(): number {
    return this.#bytes;
  }

  async #start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await this.#fh.write(SPOOL_MAGIC);
  }

  async write(data: Uint8Array): Promise<void> {
    await this.#start();
    this.#bytes += data.length;
    this.#pending.push(Buffer.from(data.buffer, data.byteOffset, data.length));
    this.#pendingLen += data.length;
    // Keep strictly more than one chunk back: the last chunk is only known at end().
    while (this.#pendingLen > this.#chunk) {
      const all = Buffer.concat(this.#pending, this.#pendingLen);
      const out = all.subarray(0, this.#chunk);
      const rest = all.subarray(this.#chunk);
      await this.#fh.write(sealChunk(this.#key, this.#jobId, this.#index++, false, out));
      this.#pending = [Buffer.from(rest)];
      this.#pendingLen = rest.length;
    }
  }

  /** The final chunk (possibly empty), then fsync: the spool file is durable when this resolves. */
  async end(): Promise<void> {
    await this.#start();
    const last = Buffer.concat(this.#pending, this.#pendingLen);
    await this.#fh.write(sealChunk(this.#key, this.#jobId, this.#index++, true, last));
    last.fill(0);
    this.#pending = [];
    await this.#fh.sync();
  }
}

/**
 * The document back, chunk by chunk, from a spool file. Rejects P1_SPOOL_CORRUPT on a bad
 * magic, a chunk that does not authenticate (wrong key, reordered, altered), a file that ends
 * before the final chunk (truncated) or bytes after it. Holds one chunk in memory.
 */
export async function* readChunks(path: string, key: Buffer, jobId: string): AsyncGenerator<Buffer> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    // A missing or unreadable spool file is the spool's failure, not the printer's (the caller must not
    // take ENOENT for a printer that went away and retry for ever).
    throw corrupt(jobId, `spool file cannot be opened (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    let pos = 0;
    const magic = Buffer.alloc(SPOOL_MAGIC.length);
    const m = await fh.read(magic, 0, magic.length, pos);
    if (m.bytesRead !== magic.length || !magic.equals(SPOOL_MAGIC)) throw corrupt(jobId, 'not a spool file (bad magic)');
    pos += magic.length;
    const head = Buffer.alloc(HEAD);
    for (let index = 0; ; index++) {
      const h = await fh.read(head, 0, HEAD, pos);
      if (h.bytesRead === 0) throw corrupt(jobId, `truncated: ended after chunk ${index - 1} without the final chunk`);
      if (h.bytesRead !== HEAD) throw corrupt(jobId, `truncated inside chunk ${index}'s header`);
      const len = head.readUInt32BE(0);
      if (len > 64 * 1024 * 1024) throw corrupt(jobId, `chunk ${index} claims ${len} bytes`);
      const body = Buffer.allocUnsafe(len + TAG);
      const b = await fh.read(body, 0, body.length, pos + HEAD);
      if (b.bytesRead !== body.length) throw corrupt(jobId, `truncated inside chunk ${index}`);
      pos += HEAD + body.length;
      const nonce = head.subarray(4, HEAD);
      // Try as a middle chunk first, then as the final one: the flag is only in the AAD, never in clear.
      let plain = open1(key, nonce, aad(jobId, index, false), body, len);
      let final = false;
      if (!plain) {
        plain = open1(key, nonce, aad(jobId, index, true), body, len);
        final = true;
      }
      if (!plain) throw corrupt(jobId, `chunk ${index} does not authenticate (altered, reordered or another key)`);
      if (final) {
        const tail = await fh.read(Buffer.alloc(1), 0, 1, pos);
        if (tail.bytesRead !== 0) throw corrupt(jobId, `bytes after the final chunk ${index}`);
      }
      if (plain.length > 0) yield plain;
      if (final) return;
    }
  } finally {
    await fh.close();
  }
}

function open1(key: Buffer, nonce: Buffer, a: Buffer, body: Buffer, len: number): Buffer | undefined {
  try {
    const d = createDecipheriv('aes-256-gcm', key, nonce);
    d.setAAD(a);
    d.setAuthTag(body.subarray(len));
    return Buffer.concat([d.update(body.subarray(0, len)), d.final()]);
  } catch {
    // Authentication failed under this AAD: the caller tries the other flag, then reports corruption.
    return undefined;
  }
}

function corrupt(jobId: string, what: string): TallyboxError {
  return new TallyboxError('P1_SPOOL_CORRUPT', `P1_SPOOL_CORRUPT: spool file of job ${jobId}: ${what}`);
}
