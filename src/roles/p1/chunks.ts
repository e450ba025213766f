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

/** Ciphertext handed to the disk but not yet written before write() waits (the fetch keeps flowing meanwhile). */
const WRITE_BEHIND_BYTES = 1024 * 1024;
/** Start flushing to the disk every so many bytes, so end()'s fsync does not find the whole document dirty. */
const SYNC_EVERY_BYTES = 8 * 1024 * 1024;

/**
 * Writes a document into an (already created, 0600) spool file chunk by chunk.
 * One chunk of plaintext is held back so the last one can carry the final flag.
 * Writes are queued behind each other (at most WRITE_BEHIND_BYTES outstanding), and an fdatasync
 * is started every SYNC_EVERY_BYTES; end() waits for all of them and fsyncs, so the file is exactly
 * as durable as before when end() resolves, and a failed write or sync fails write() or end().
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
  /** The queue of writes: each waits for the one before (a failure rejects every later one). */
  #writing: Promise<void> = Promise.resolve();
  #outstanding = 0;
  #sinceSync = 0;
  readonly #syncs: Promise<void>[] = [];
  #syncError: unknown;

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
    let rest = Buffer.from(data.buffer, data.byteOffset, data.length);
    // Keep strictly more than one chunk back: the last chunk is only known at end(). Whole chunks are
    // sealed from views of `data` (a large write, e.g. a 1 MB inline document, is not re-copied per chunk).
    const sealed: Buffer[] = [];
    while (this.#pendingLen + rest.length > this.#chunk) {
      const take = this.#chunk - this.#pendingLen;
      const out = this.#pendingLen ? Buffer.concat([...this.#pending, rest.subarray(0, take)], this.#chunk) : rest.subarray(0, take);
      rest = rest.subarray(take);
      this.#pending = [];
      this.#pendingLen = 0;
      sealed.push(sealChunk(this.#key, this.#jobId, this.#index++, false, out));
    }
    // One write for all the chunks this piece completed (a large piece is one system call, not one per chunk).
    if (sealed.length) await this.#queue(sealed);
    // The remainder is copied: the caller's buffer may be reused or wiped once this resolves.
    if (rest.length) {
      this.#pending.push(Buffer.from(rest));
      this.#pendingLen += rest.length;
    }
  }

  /** Queue sealed chunks for writing; waits only while more than WRITE_BEHIND_BYTES are outstanding. */
  async #queue(sealed: Buffer[]): Promise<void> {
    const want = sealed.reduce((n, b) => n + b.length, 0);
    this.#outstanding += want;
    const before = this.#writing;
    this.#writing = (async () => {
      await before;
      const { bytesWritten } = await this.#fh.writev(sealed);
      if (bytesWritten !== want) throw new TallyboxError('P1_SPOOL_WRITE_SHORT', `P1_SPOOL_WRITE_SHORT: ${bytesWritten} of ${want} bytes written (disk full?)`);
      this.#outstanding -= want;
      this.#sinceSync += want;
      if (this.#sinceSync >= SYNC_EVERY_BYTES) {
        this.#sinceSync = 0;
        // Not waited for here: the disk flushes while the next bytes arrive; end() waits and reports its failure.
        this.#syncs.push(this.#fh.datasync().catch((err: unknown) => void (this.#syncError ??= err)));
      }
    })();
    // Reported by the awaits below and in end(); never left as an unhandled rejection meanwhile.
    this.#writing.catch(() => undefined);
    if (this.#outstanding > WRITE_BEHIND_BYTES) await this.#writing;
  }

  /** The final chunk (possibly empty), then fsync: the spool file is durable when this resolves. */
  async end(): Promise<void> {
    await this.#start();
    const last = Buffer.concat(this.#pending, this.#pendingLen);
    const sealed = sealChunk(this.#key, this.#jobId, this.#index++, true, last);
    last.fill(0);
    this.#pending = [];
    await this.#queue([sealed]);
    await this.#writing;
    await Promise.all(this.#syncs);
    if (this.#syncError) throw this.#syncError;
    await this.#fh.sync();
  }
}

/** The records of an open spool file (see readChunks): one read each, the next one read ahead. */
async function* records(fh: FileHandle, key: Buffer, jobId: string): AsyncGenerator<Buffer> {
  let ahead: Promise<unknown> | undefined;
  try {
    const magic = Buffer.alloc(SPOOL_MAGIC.length);
    const m = await fh.read(magic, 0, magic.length, 0);
    if (m.bytesRead !== magic.length || !magic.equals(SPOOL_MAGIC)) throw corrupt(jobId, 'not a spool file (bad magic)');
    // pos: where the current record's header starts; head: that header as read (maybe short).
    let pos = magic.length;
    const first = Buffer.alloc(HEAD);
    let head = first.subarray(0, (await fh.read(first, 0, HEAD, pos)).bytesRead);
    /** One record's body and the next header, from the header just read. */
    const readRecord = (index: number, h: Buffer, at: number) => {
      if (h.length === 0) throw corrupt(jobId, `truncated: ended after chunk ${index - 1} without the final chunk`);
      if (h.length !== HEAD) throw corrupt(jobId, `truncated inside chunk ${index}'s header`);
      const len = h.readUInt32BE(0);
      if (len > 64 * 1024 * 1024) throw corrupt(jobId, `chunk ${index} claims ${len} bytes`);
      const buf = Buffer.allocUnsafe(len + TAG + HEAD);
      return fh.read(buf, 0, buf.length, at + HEAD).then(({ bytesRead }) => ({ len, nonce: Buffer.from(h.subarray(4, HEAD)), buf, bytesRead }));
    };
    let next = readRecord(0, head, pos);
    for (let index = 0; ; index++) {
      const { len, nonce, buf, bytesRead } = await next;
      ahead = undefined;
      if (bytesRead < len + TAG) throw corrupt(jobId, `truncated inside chunk ${index}`);
      const body = buf.subarray(0, len + TAG);
      pos += HEAD + len + TAG;
      // Try as a middle chunk first, then as the final one: the flag is only in the AAD, never in clear.
      let plain = open1(key, nonce, aad(jobId, index, false), body, len);
      let final = false;
      if (!plain) {
        plain = open1(key, nonce, aad(jobId, index, true), body, len);
        final = true;
      }
      if (!plain) throw corrupt(jobId, `chunk ${index} does not authenticate (altered, reordered or another key)`);
      if (final) {
        if (bytesRead > len + TAG) throw corrupt(jobId, `bytes after the final chunk ${index}`);
        if (plain.length > 0) yield plain;
        return;
      }
      head = buf.subarray(len + TAG, bytesRead);
      next = readRecord(index + 1, head, pos);
      // Settled either way before the file is closed (finally), even when the caller stops early.
      ahead = next.catch(() => undefined); // its error, if any, is thrown by the await at the top of the loop
      if (plain.length > 0) yield plain;
    }
  } finally {
    await ahead;
  }
}

/**
 * The document back, chunk by chunk, from a spool file. Rejects P1_SPOOL_CORRUPT on a bad
 * magic, a chunk that does not authenticate (wrong key, reordered, altered), a file that ends
 * before the final chunk (truncated) or bytes after it. One read per record (its body together
 * with the next record's header), and the next record's read is under way while the caller
 * sends this chunk: the disk and the printer's socket overlap. Holds at most two chunks.
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
    yield* records(fh, key, jobId);
  } finally {
    await fh.close();
  }
}

function open1(key: Buffer, nonce: Buffer, a: Buffer, body: Buffer, len: number): Buffer | undefined {
  try {
    const d = createDecipheriv('aes-256-gcm', key, nonce);
    d.setAAD(a);
    d.setAuthTag(body.subarray(len));
    const plain = d.update(body.subarray(0, len));
    d.final(); // throws unless the tag authenticates; GCM returns no further bytes
    return plain;
  } catch {
    // Authentication failed under this AAD: the caller tries the other flag, then reports corruption.
    return undefined;
  }
}

function corrupt(jobId: string, what: string): TallyboxError {
  return new TallyboxError('P1_SPOOL_CORRUPT', `P1_SPOOL_CORRUPT: spool file of job ${jobId}: ${what}`);
}
