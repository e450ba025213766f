/**
 * What the M1 role needs from the agent and the vault, its shared state
 * (the module's library as the vault vouches for it) and small helpers.
 */
import { isDeviceError, type FingerprintModule } from '../../../firmware-bridge/devices.js';
import type { PunchMethod, ScoreBucket } from '../../proto/index.js';
import { TallyboxError } from '../../util/errors.js';
import type { Logger } from '../../util/log.js';
import type { Vault } from '../../vault/vault.js';
import type { FaultKind } from '../kit/supervisor.js';
import type { SerialQueue } from '../kit/serial-queue.js';

/** What the role needs from the agent (Agent satisfies it). */
export interface M1PunchSink {
  /** Resolves once the punch is durably queued. */
  punch(input: { orgId: string; subjectId: string; method: PunchMethod; matchScore?: ScoreBucket }): Promise<{ eventId: string } | void>;
  setPeripheral(name: string, online: boolean, detail?: string): void;
}

/** What the role needs from the vault (Vault satisfies it). */
export type M1Vault = Pick<Vault, 'orgs' | 'decryptTemplates' | 'enrolTemplate' | 'listTemplates' | 'touchSubject' | 'getSubject'>;

/** One library page the vault vouches for. */
export interface PageEntry {
  orgId: string;
  subjectId: string;
  slot: number;
  recordId: string;
}

export interface ReconcileReport {
  librarySize: number;
  modulePages: number;
  vaultTemplates: number;
  /** Pages on the module the vault does not know: deleted. */
  deleted: number;
  /** Vault templates missing from the module: written back (DownChar + Store). */
  restored: number;
  /** Vault templates without a usable page (bare, conflicting, beyond the library): given a new page. */
  reassigned: number;
  /** Vault templates that could not be placed (library full). */
  unplaced: number;
  /** Protocol round trips ('DeletChar', 'Store', ...) issued. */
  roundTrips: number;
  ms: { total: number; protocol: number; agent: number };
}

export interface M1PunchEvent {
  orgId: string;
  subjectId: string;
  page: number;
  score: number;
  bucket: ScoreBucket;
  /** From the module's Search reply to the punch being durably accepted. */
  overheadMs: number;
  /** The role's own share of it: Search reply → punch handed to the gate (lookup, bucket). */
  roleMs: number;
  /** The queued punch's event id, when the sink returns one. */
  eventId?: string;
}

export interface EnrolResult {
  orgId: string;
  subjectId: string;
  page: number;
  slot: number;
  recordId: string;
}

export type EnrolStep = { capture: number; of: number; waitingFor: 'finger' | 'lift' } | { capture: number; of: number; retry: string };

export interface M1Stats {
  punches: number;
  repeats: number;
  noMatch: number;
  unknownPages: number;
  badImages: number;
  linkErrors: number;
  errorFrames: number;
  reconciles: number;
  enrolments: number;
}

export class M1Error extends TallyboxError {
  constructor(code: 'MODULE_OFFLINE' | 'ENROL_TIMEOUT' | 'ENROL_FAILED' | 'LIBRARY_FULL' | 'SLOTS_FULL' | 'ROLE_STOPPED', message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super(code, `${code}: ${message}`, details, cause === undefined ? undefined : { cause });
    this.name = 'M1Error';
  }
}

/** Driver failures that mean the link itself is gone (not a glitch). */
export const LINK_GONE = new Set(['NOT_OPEN', 'DISCONNECTED', 'WRITE_FAILED', 'CLOSED']);
/** Failures that may be a glitch (noise, a dropped byte) or a silent module. */
export const LINK_GLITCH = new Set(['TIMEOUT', 'PROTOCOL_ERROR']);
/** Img2Tz refusals: a bad image, try again. */
export const IMAGE_CODES = new Set(['IMAGE_MESSY', 'TOO_FEW_FEATURES', 'NO_VALID_IMAGE', 'IMAGE_FAILED']);
export const MAX_SLOTS = 10;

/** How a fingerprint module's failure counts for its supervisor. */
export function classifyR30x(err: unknown): FaultKind {
  if (isDeviceError(err)) {
    if (LINK_GONE.has(err.code)) return 'gone';
    if (LINK_GLITCH.has(err.code)) return 'glitch';
    return 'ignore';
  }
  if ((err as { code?: string } | null)?.code === 'TRANSPORT_OPEN_FAILED') return 'absent';
  return 'ignore';
}

/** State shared by the parts of the role: the module, its library as the vault vouches for it, the queue. */
export interface M1Context {
  readonly module: FingerprintModule;
  readonly vault: M1Vault;
  readonly log: Logger;
  /** One conversation with the module at a time. */
  readonly queue: SerialQueue;
  readonly stats: M1Stats;
  librarySize: number;
  /** page → entry; null until loaded from the vault. */
  pages: Map<number, PageEntry> | null;
  /** After a result (or an enrolment), wait for the finger to be lifted before the next identification. */
  awaitingLift: boolean;
  stopping: boolean;
  pollMs: number;
}

export function errCode(err: unknown): string {
  if (err instanceof TallyboxError) return err.code;
  if (err instanceof Error) return err.name || 'ERROR';
  return 'ERROR';
}

export function enrolFailed(err: unknown): unknown {
  if (isDeviceError(err) && typeof err.confirmation === 'number') {
    return new M1Error('ENROL_FAILED', `the module refused the enrolment: ${err.code}`, { code: err.code }, err);
  }
  return err;
}

/** Lowest page below `size` that is in none of the sets. */
export function firstFree(size: number, ...used: Array<ReadonlyMap<number, unknown> | ReadonlySet<number>>): number | null {
  for (let p = 0; p < size; p++) if (!used.some((u) => u.has(p))) return p;
  return null;
}

/** Sorted pages as [start, count] runs of consecutive pages. */
export function runs(pages: readonly number[]): Array<[number, number]> {
  const sorted = [...new Set(pages)].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === p && last[1] < 0xffff) last[1]++;
    else out.push([p, 1]);
  }
  return out;
}

/** The module's used pages (ReadIndexTable over the library). */
export async function listPages(ctx: M1Context, rt: <T>(p: () => Promise<T>) => Promise<T> = (p) => p()): Promise<number[]> {
  const tables = Math.min(4, Math.ceil(ctx.librarySize / 256));
  const out: number[] = [];
  for (let t = 0; t < tables; t++) out.push(...(await rt(() => ctx.module.readIndexTable(t))));
  return out.filter((p) => p < ctx.librarySize);
}

/** DeletChar, contiguous runs in one command each. */
export async function deletePages(ctx: M1Context, pages: readonly number[], rt: <T>(p: () => Promise<T>) => Promise<T> = (p) => p()): Promise<void> {
  for (const [start, count] of runs(pages)) await rt(() => ctx.module.deletChar(start, count));
}
