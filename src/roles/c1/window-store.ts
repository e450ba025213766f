/**
 * Armed enrolment windows, kept across a restart (issue 11): one small file in
 * the data directory, rewritten whole and atomically (private-fs) when a
 * window is armed, at checkpoints while one is armed, when one ends and when
 * the role stops. Nothing in it is a MAC: organisation, subject, SSID, the
 * command counter and the time left.
 *
 * A window is never extended by a restart. The time left is measured with
 * the monotonic clock while the role runs and written at every checkpoint;
 * what passed after the last checkpoint (the rest of the run, the downtime)
 * is counted as elapsed:
 *  - same boot (the kernel's boot id): CLOCK_MONOTONIC, which does not
 *    restart with the process and no wall-clock step moves;
 *  - another boot: the wall clock, only when it was synchronised both at the
 *    checkpoint and now and has not gone backwards; otherwise the downtime is
 *    unknown and the window ends EXPIRED (conservative: never a longer window).
 * When both clocks can tell, the larger elapsed time wins.
 *
 * A file that does not parse, fails its checksum or holds an impossible
 * window is not trusted at all: a clear error, the file kept aside for
 * inspection, no window restored (so nothing can be enrolled through it).
 *
 * The file names subjects, so it joins every erasure even when the role is
 * not running (`windowErasureParticipant`, registered with the purge
 * pipeline wherever it is opened: `tallybox purge` with the agent stopped, a
 * purge resumed at start before the role is up).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TallyboxError, errorMessage } from '../../util/errors.js';
import { ensurePrivateDir, readPrivateFile, syncDir, writePrivateFileAtomic } from '../../util/private-fs.js';
import type { ErasureParticipant, ErasureReport } from '../../privacy/types.js';
import type { EnrolmentRequest } from './enrolment.js';

/** Longest window a SubjectUpsert may arm (src/agent/command-handlers.ts refuses longer ones). */
export const MAX_WINDOW_SEC = 3600;

/** Where the role keeps its armed windows. */
export const windowFile = (dataDir: string): string => join(dataDir, 'c1', 'enrolment-windows.json');

/** The clocks a checkpoint is stamped with. */
export interface CheckpointClock {
  /** The kernel's boot id (/proc/sys/kernel/random/boot_id): the system monotonic clock is comparable within one. */
  bootId: string;
  /** CLOCK_MONOTONIC in ms (process.hrtime: not reset by a restart of the process). */
  monoMs: number;
  /** Wall clock (Date.now), trusted only when `wallSynced`. */
  wallMs: number;
  wallSynced: boolean;
}

export interface PersistedWindow {
  req: EnrolmentRequest;
  /** Time left at the checkpoint (ms). */
  remainingMs: number;
  at: CheckpointClock;
}

let bootIdCache: string | undefined;
/** The system's clocks now; the boot id is read once ('' when /proc does not tell: then never "same boot"). */
export function systemCheckpointClock(wallSynced: boolean, wall: () => number = Date.now): CheckpointClock {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      // No /proc (or not Linux): no boot identity, so a restored window relies on a synchronised wall clock or expires.
      bootIdCache = '';
    }
  }
  return { bootId: bootIdCache, monoMs: Number(process.hrtime.bigint() / 1_000_000n), wallMs: wall(), wallSynced };
}

export type Restored = { kind: 'armed'; req: EnrolmentRequest; remainingMs: number } | { kind: 'expired'; req: EnrolmentRequest; why: string };

/** How much of a persisted window is left now; never more than at its checkpoint. */
export function restoreWindow(p: PersistedWindow, now: CheckpointClock): Restored {
  const estimates: number[] = [];
  if (p.at.bootId !== '' && p.at.bootId === now.bootId) {
    const mono = now.monoMs - p.at.monoMs;
    if (mono < 0) return { kind: 'expired', req: p.req, why: 'the monotonic clock is behind the checkpoint: the downtime is unknown' };
    estimates.push(mono);
  }
  if (p.at.wallSynced && now.wallSynced) {
    const wall = now.wallMs - p.at.wallMs;
    if (wall < 0) return { kind: 'expired', req: p.req, why: 'the wall clock went backwards since the checkpoint: the downtime is unknown' };
    estimates.push(wall);
  }
  if (estimates.length === 0) return { kind: 'expired', req: p.req, why: 'restarted after a reboot without a synchronised clock: the downtime is unknown' };
  const left = p.remainingMs - Math.max(...estimates);
  if (left <= 0) return { kind: 'expired', req: p.req, why: 'the window ended while the agent was stopped' };
  return { kind: 'armed', req: p.req, remainingMs: left };
}

// ------------------------------------------------------------------ file format

interface FileBody {
  v: 1;
  windows: PersistedWindow[];
}

const sum = (body: string): string => createHash('sha256').update(body).digest('hex');

export function encodeWindows(windows: PersistedWindow[]): string {
  const body = JSON.stringify({ v: 1, windows } satisfies FileBody);
  return `${JSON.stringify({ sha256: sum(body), body })}\n`;
}

const isStr = (v: unknown, max = 256): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

function checkWindow(w: unknown, i: number): PersistedWindow {
  const bad = (what: string) => new TallyboxError('C1_WINDOWS_CORRUPT', `enrolment window ${i}: ${what}`);
  if (typeof w !== 'object' || w === null) throw bad('not an object');
  const { req, remainingMs, at } = w as Record<string, unknown>;
  if (typeof req !== 'object' || req === null) throw bad('no request');
  const r = req as Record<string, unknown>;
  if (!isStr(r.orgId) || !isStr(r.subjectId) || !isStr(r.ssid, 32 * 4)) throw bad('organisation, subject or SSID missing');
  if (!isNum(r.windowSec) || r.windowSec <= 0 || r.windowSec > MAX_WINDOW_SEC) throw bad('impossible window length');
  if (!isNum(r.counter) || r.counter < 0) throw bad('impossible command counter');
  if (!isNum(remainingMs) || remainingMs < 0 || remainingMs > r.windowSec * 1000) throw bad('time left outside the window');
  if (typeof at !== 'object' || at === null) throw bad('no checkpoint clock');
  const a = at as Record<string, unknown>;
  if (typeof a.bootId !== 'string' || !isNum(a.monoMs) || !isNum(a.wallMs) || typeof a.wallSynced !== 'boolean') throw bad('checkpoint clock incomplete');
  return {
    req: { orgId: r.orgId, subjectId: r.subjectId, ssid: r.ssid, windowSec: r.windowSec, counter: r.counter },
    remainingMs,
    at: { bootId: a.bootId, monoMs: a.monoMs, wallMs: a.wallMs, wallSynced: a.wallSynced },
  };
}

/** Parse the file's text: its windows, or C1_WINDOWS_CORRUPT saying what is wrong. */
export function decodeWindows(text: string): PersistedWindow[] {
  const corrupt = (what: string) => new TallyboxError('C1_WINDOWS_CORRUPT', what);
  if (text.length === 0) throw corrupt('the file is empty (zero length)');
  let outer: unknown;
  try {
    outer = JSON.parse(text);
  } catch (err) {
    throw corrupt(`not JSON (truncated?): ${errorMessage(err)}`);
  }
  const { sha256, body } = (outer ?? {}) as { sha256?: unknown; body?: unknown };
  if (typeof body !== 'string' || typeof sha256 !== 'string') throw corrupt('no checksummed body');
  if (sum(body) !== sha256) throw corrupt('checksum mismatch');
  const parsed = JSON.parse(body) as Partial<FileBody>;
  if (parsed.v !== 1 || !Array.isArray(parsed.windows)) throw corrupt(`unknown format version ${String(parsed.v)}`);
  const windows = parsed.windows.map(checkWindow);
  if (new Set(windows.map((w) => w.req.ssid)).size !== windows.length) throw corrupt('two windows for one SSID');
  return windows;
}

/** The file: load once at start, save the full set on every change and checkpoint. */
export class WindowStore {
  readonly path: string;

  constructor(dataDir: string) {
    this.path = windowFile(dataDir);
  }

  /**
   * The persisted windows; none when there is no file. Unreadable or corrupt:
   * throws C1_WINDOWS_CORRUPT / FILE_* after moving a corrupt file aside
   * (`…corrupt`), so the next save does not overwrite the evidence silently.
   */
  load(): PersistedWindow[] {
    const buf = readPrivateFile(this.path);
    if (buf === undefined) return [];
    try {
      return decodeWindows(buf.toString('utf8'));
    } catch (err) {
      const aside = asideFile(this.path);
      renameSync(this.path, aside);
      syncDir(dirname(this.path));
      throw new TallyboxError('C1_WINDOWS_CORRUPT', `${this.path}: ${errorMessage(err)}; no enrolment window restored (kept as ${aside})`, { path: this.path }, { cause: err });
    }
  }

  save(windows: PersistedWindow[]): void {
    if (windows.length === 0) {
      rmSync(this.path, { force: true });
      return;
    }
    ensurePrivateDir(dirname(this.path));
    writePrivateFileAtomic(this.path, encodeWindows(windows));
  }
}

/** Where a window file that could not be trusted was kept aside for inspection. */
const asideFile = (path: string): string => `${path}.corrupt`;

/**
 * The window file's part in an erasure: the windows of the erased
 * organisation (or subjects) leave the file; the others stay as they are.
 * Read and rewritten in one synchronous step, so a role saving the file in
 * the same process cannot interleave. A file that cannot be read as windows
 * (and one kept aside as corrupt) may name the erased subjects and restores
 * nothing anyway: it is removed, and the report counts it.
 */
export function windowErasureParticipant(dataDir: string): ErasureParticipant {
  const path = windowFile(dataDir);
  const store = new WindowStore(dataDir);
  const erase = (gone: (w: PersistedWindow) => boolean): ErasureReport => {
    let unreadable = 0;
    if (existsSync(asideFile(path))) {
      rmSync(asideFile(path), { force: true });
      unreadable++;
    }
    let windows: PersistedWindow[];
    try {
      const buf = readPrivateFile(path);
      windows = buf === undefined ? [] : decodeWindows(buf.toString('utf8'));
    } catch {
      // Not readable as windows (corrupt, or not a private file): nothing in it can be kept apart, and it restores nothing.
      rmSync(path, { force: true });
      unreadable++;
      windows = [];
    }
    const kept = windows.filter((w) => !gone(w));
    const erased = windows.length - kept.length;
    if (erased > 0) store.save(kept);
    // A removal must survive a power cut like the rest of the purge (an atomic rewrite syncs itself).
    if (unreadable > 0 || (erased > 0 && kept.length === 0)) syncDir(dirname(path));
    return { ok: true, counts: { c1Windows: erased, c1UnreadableWindowFiles: unreadable }, ...(unreadable > 0 ? { detail: 'unreadable enrolment window files removed' } : {}) };
  };
  return {
    name: 'c1-windows',
    eraseOrg: async (orgId) => erase((w) => w.req.orgId === orgId),
    eraseSubject: async (orgId, subjectId) => erase((w) => w.req.orgId === orgId && w.req.subjectId === subjectId),
    scanFiles: () => [path, asideFile(path)],
  };
}
