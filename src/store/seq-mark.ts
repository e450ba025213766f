/**
 * The sequence mark: a small file beside the outbox (`outbox.seq`) that
 * remembers which punch sequence numbers were handed out, accepted and
 * delivered, so that losing the outbox's tail — or the whole file — is
 * detected and never leads to a number being used twice (DESIGN: "a
 * high-water mark lives outside it, and a loss is an alarm").
 *
 * Why outside the database: whatever damages outbox.db (a truncated file, a
 * torn or overwritten -wal, a restore from an old copy) would take a mark
 * kept inside it along. A separate file fails independently.
 *
 * Layout: two fixed 72-byte slots written alternately, each with a
 * generation counter and a CRC-32; the valid slot with the higher generation
 * wins. A torn write damages at most the slot being written, so the previous
 * state survives. The file is created whole (temp file, fsync, rename, fsync
 * of the directory), so a missing file means "never created" and a file with
 * no valid slot is damage, reported as such.
 *
 * Fields:
 *  - reserved: every sequence number ever handed out is ≤ this. Raised in
 *    blocks and fdatasync'd BEFORE the commit that uses the numbers, so it
 *    costs one fsync per block, not per punch.
 *  - accepted: the last sequence number committed, or being committed.
 *    Written (pwrite, no fsync) alongside every commit, which is reported
 *    only once both are done: it survives a SIGKILL (the page cache belongs
 *    to the kernel) and is fdatasync'd at the next reservation, at most a
 *    second later, and on close. The pwrite runs on the thread pool (a pwrite
 *    on the event loop once stalled it for 52 ms while another fsync ran on
 *    the same filesystem) and beside the commit, not after it, so the
 *    commit's fsync hides it. `committing` says how many of the last numbers
 *    belong to the commit in flight, until a second write (after the
 *    producers heard, not waited for) sets it to 0. A start that finds the
 *    file short of `accepted` by no more than `committing` met a commit that
 *    never finished: those punches were never reported accepted nor sent, so
 *    they are not a loss, and numbering goes on from the file (skipping them
 *    would leave a gap the cloud takes for one).
 *  - committing: see accepted; kept in bits 8..31 of the flags word (a batch
 *    is at most a few thousand punches).
 *  - delivered: every sequence number ≤ this was acknowledged by the broker.
 *  - bdSeq: the connection counter, so it is not reused either.
 *  - lostFrom..lostTo: the last loss found, kept until it was reported.
 */
import { closeSync, fdatasync, fsyncSync, openSync, readFileSync, renameSync, write, writeSync, constants as fsc } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { crc32 } from 'node:zlib';
import { SerialQueue } from '../util/serial-queue.js';
import { TallyboxError, errorMessage } from '../util/errors.js';

export interface SeqMarkState {
  reserved: number;
  accepted: number;
  delivered: number;
  bdSeq: number;
  /** Inclusive range of sequence numbers lost from the outbox; 0..0 when none. */
  lostFrom: number;
  lostTo: number;
  /** The loss has been reported to the cloud (a punch was delivered after it was raised). */
  lostReported: boolean;
  /** How many of the numbers up to `accepted` belong to a commit not known to have finished (0: none). */
  committing: number;
}

export const EMPTY_MARK: Readonly<SeqMarkState> = Object.freeze({ reserved: 0, accepted: 0, delivered: 0, bdSeq: 0, lostFrom: 0, lostTo: 0, lostReported: false, committing: 0 });

const MAGIC = Buffer.from('TBXSEQ01', 'latin1');
/** magic 8 | generation 8 | reserved 8 | accepted 8 | delivered 8 | lostFrom 8 | lostTo 8 | bdSeq 8 | flags 4 | crc32 4 */
const SLOT = 72;
const CRC_AT = SLOT - 4;
const FLAG_LOST_REPORTED = 1;
/** `committing` lives in the flags word above the flag bits. */
const COMMITTING_SHIFT = 8;
export const MAX_COMMITTING = 2 ** 24 - 1;

function encodeSlot(gen: number, s: SeqMarkState): Buffer {
  const b = Buffer.alloc(SLOT);
  MAGIC.copy(b, 0);
  [gen, s.reserved, s.accepted, s.delivered, s.lostFrom, s.lostTo, s.bdSeq].forEach((v, i) => b.writeBigUInt64LE(BigInt(v), 8 + 8 * i));
  if (!Number.isInteger(s.committing) || s.committing < 0 || s.committing > MAX_COMMITTING) throw new TallyboxError('STORAGE_IO', `sequence mark: a commit of ${s.committing} punches cannot be recorded`);
  b.writeUInt32LE(((s.committing << COMMITTING_SHIFT) | (s.lostReported ? FLAG_LOST_REPORTED : 0)) >>> 0, 64);
  b.writeUInt32LE(crc32(b.subarray(0, CRC_AT)), CRC_AT);
  return b;
}

function decodeSlot(b: Buffer): { gen: number; state: SeqMarkState } | undefined {
  if (b.length < SLOT || !b.subarray(0, 8).equals(MAGIC)) return undefined;
  if (crc32(b.subarray(0, CRC_AT)) !== b.readUInt32LE(CRC_AT)) return undefined;
  const n = (i: number): number => Number(b.readBigUInt64LE(8 + 8 * i));
  const state: SeqMarkState = {
    reserved: n(1),
    accepted: n(2),
    delivered: n(3),
    lostFrom: n(4),
    lostTo: n(5),
    bdSeq: n(6),
    lostReported: (b.readUInt32LE(64) & FLAG_LOST_REPORTED) !== 0,
    committing: b.readUInt32LE(64) >>> COMMITTING_SHIFT,
  };
  // A slot whose numbers contradict each other is damage, not a state.
  if (state.accepted > state.reserved || state.delivered > state.accepted || state.lostFrom > state.lostTo || state.committing > state.accepted) return undefined;
  return { gen: n(0), state };
}

export class SeqMark {
  private gen: number;
  private fd: number | undefined;
  /**
   * pwrites run in order, one after the other, on the thread pool. A sync waits
   * for the writes issued before it, but later writes do not wait for the sync:
   * a commit's record must not queue behind an fdatasync that takes hundreds of
   * milliseconds on a busy disk.
   */
  private readonly writes = new SerialQueue();
  private dirty = false;
  /** The last sync started (close() and a clean sync() wait for it). */
  private synced: Promise<void> | undefined;

  private constructor(
    readonly path: string,
    fd: number,
    gen: number,
    private current: SeqMarkState,
  ) {
    this.fd = fd;
    this.gen = gen;
  }

  /**
   * Read the mark. `undefined`: there is no mark file. Throws STORAGE_CORRUPT
   * (and changes nothing) when the file exists but holds no valid slot.
   */
  static read(path: string): { gen: number; state: SeqMarkState } | undefined {
    let buf: Buffer;
    try {
      buf = readFileSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new TallyboxError('STORAGE_UNAVAILABLE', `cannot read the sequence mark ${path}: ${errorMessage(err)}`, {}, { cause: err });
    }
    const a = decodeSlot(buf.subarray(0, SLOT));
    const b = decodeSlot(buf.subarray(SLOT, 2 * SLOT));
    const best = a && b ? (a.gen >= b.gen ? a : b) : (a ?? b);
    if (!best) {
      throw new TallyboxError(
        'STORAGE_CORRUPT',
        `the sequence mark ${path} is damaged (${buf.length} bytes, no valid record): it is left as it is. ` +
          'It keeps punch sequence numbers from being reused; if outbox.db is intact, move the mark aside and the agent rebuilds it from the outbox',
        { file: basename(path), bytes: buf.length },
      );
    }
    return best;
  }

  /**
   * Open an existing mark for writing, or create it whole (temp file, fsync,
   * rename, fsync of the directory), and bring it to `state`, synced.
   */
  static async open(path: string, found: { gen: number; state: SeqMarkState } | undefined, state: SeqMarkState): Promise<SeqMark> {
    if (!found) {
      const tmp = join(dirname(path), `.${basename(path)}.tmp`);
      const fd = openSync(tmp, fsc.O_CREAT | fsc.O_TRUNC | fsc.O_WRONLY | fsc.O_NOFOLLOW, 0o600);
      try {
        writeSync(fd, Buffer.concat([encodeSlot(0, state), encodeSlot(1, state)]), 0, 2 * SLOT, 0);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
      syncDir(dirname(path));
      found = { gen: 1, state: { ...state } };
    }
    const fd = openSync(path, fsc.O_RDWR | fsc.O_NOFOLLOW);
    const m = new SeqMark(path, fd, found.gen, { ...found.state });
    if (!shallowEqual(found.state, state)) await m.update(state);
    await m.sync();
    return m;
  }

  get state(): Readonly<SeqMarkState> {
    return this.current;
  }

  /**
   * Write the new state into the other slot: `state` changes now, the pwrite
   * resolves when the record is in the page cache (on disk after `sync()`).
   */
  update(patch: Partial<SeqMarkState>): Promise<void> {
    const fd = this.fd;
    if (fd === undefined) return Promise.reject(new TallyboxError('STORAGE_CLOSED', 'sequence mark is closed'));
    this.current = { ...this.current, ...patch };
    const gen = ++this.gen;
    const buf = encodeSlot(gen, this.current);
    this.dirty = true;
    return this.enqueue(
      () =>
        new Promise<void>((resolve, reject) =>
          write(fd, buf, 0, SLOT, (gen % 2) * SLOT, (err) => (err ? reject(new TallyboxError('STORAGE_IO', `cannot write the sequence mark ${this.path}: ${err.message}`, {}, { cause: err })) : resolve())),
        ),
    );
  }

  /** fdatasync everything written so far. */
  sync(): Promise<void> {
    const fd = this.fd;
    if (fd === undefined || !this.dirty) return this.synced ?? this.written();
    this.dirty = false;
    // After the writes queued so far, but not itself in the queue (see `writes`).
    const p = this.written().then(
      () => new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(new TallyboxError('STORAGE_IO', `cannot sync the sequence mark ${this.path}: ${err.message}`, {}, { cause: err })) : resolve()))),
    );
    this.synced = p;
    return p;
  }

  /** The caller of update() gets a write's error; the queue goes on with the next write. */
  private enqueue(job: () => Promise<void>): Promise<void> {
    return this.writes.run(job);
  }

  /** Resolves once every write queued so far has finished (whether it worked or not). */
  private written(): Promise<void> {
    return this.writes.run(() => Promise.resolve());
  }

  get needsSync(): boolean {
    return this.dirty;
  }

  async close(): Promise<void> {
    if (this.fd === undefined) return;
    await this.sync();
    await this.synced?.catch(() => undefined); // its caller got the error
    closeSync(this.fd);
    this.fd = undefined;
  }
}

function shallowEqual(a: SeqMarkState, b: SeqMarkState): boolean {
  return (Object.keys(a) as (keyof SeqMarkState)[]).every((k) => a[k] === b[k]);
}

/** fsync a directory so a rename in it is durable. */
function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
    fsyncSync(fd);
  } catch (err) {
    // Some filesystems refuse fsync on a directory (EINVAL); the rename is still atomic there.
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
