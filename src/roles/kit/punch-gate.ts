/**
 * The punch gate: the one place that decides what counts as one punch.
 *
 *   identification result → repeat window → agent.punch() → last-seen (batched)
 *
 * - Repeat window: the same person (org + subject, any method: a face then a
 *   card a second later is one punch) identified again within the window is
 *   a 'repeat', not a punch. Measured on the MONOTONIC clock: an NTP step or
 *   an RTC reset moves the wall clock, not the distance between two
 *   identifications, so a backward step never suppresses a person's punches
 *   and a forward step never lets a double punch through.
 * - Refusals: a punch the agent does not accept (outbox full, disk full,
 *   agent stopping) is 'refused' with its code, and the window is not
 *   started: the person may try again at once.
 * - Last-seen (the retention clock, counted in days) is a wall-clock
 *   timestamp written to the vault in batches, not once per punch, so a vault
 *   commit never competes with the outbox's durable write on the punch path.
 *
 * One gate per agent (start.ts), shared by every role of a device: an M2 with
 * a fingerprint module too punches once for a finger and a face together.
 */
import type { PunchMethod, ScoreBucket } from '../../proto/index.js';
import { silentLogger, type Logger } from '../../util/log.js';
import { errorCode } from './supervisor.js';

export interface PunchRequest {
  orgId: string;
  subjectId: string;
  method: PunchMethod;
  matchScore?: ScoreBucket;
  liveness?: ScoreBucket;
}

/** What the gate needs from the agent (Agent satisfies it). */
export interface GatePunchSink {
  /** Resolves once the punch is durably queued. */
  punch(input: PunchRequest): Promise<{ eventId: string } | void>;
}

/** What the gate needs from the vault (Vault satisfies it). */
export interface LastSeenStore {
  touchSubject(orgId: string, subjectId: string, atMs: number): Promise<unknown>;
}

export type GateVerdict = { verdict: 'punch'; eventId?: string } | { verdict: 'repeat' } | { verdict: 'refused'; code: string };

export interface PunchGateOptions {
  sink: GatePunchSink;
  lastSeen?: LastSeenStore;
  logger?: Logger;
  /** Same person again within this many seconds is one punch (default 60; 0: off). A function is read at every identification (ConfigPatch). */
  repeatWindowSec?: number | (() => number);
  /** Monotonic ms clock for the repeat window (default performance.now). */
  monotonic?: () => number;
  /** Wall clock for last-seen timestamps only (default Date.now). */
  wallClock?: () => number;
  /** Last-seen batch interval (default 30 s). */
  touchFlushMs?: number;
  /** Window entries kept before older ones are swept (default 4096). */
  maxTracked?: number;
}

export interface PunchGateStats {
  punches: number;
  repeats: number;
  refused: number;
}

const key = (orgId: string, subjectId: string) => `${orgId}\u0000${subjectId}`;

export class PunchGate {
  readonly #sink: GatePunchSink;
  readonly #lastSeen: LastSeenStore | undefined;
  readonly #log: Logger;
  readonly #mono: () => number;
  readonly #wall: () => number;
  readonly #touchFlushMs: number;
  readonly #maxTracked: number;
  #window: number | (() => number);
  /** key → monotonic ms of the last accepted punch. */
  readonly #last = new Map<string, number>();
  readonly #touches = new Map<string, { orgId: string; subjectId: string; atMs: number }>();
  #touchTimer: NodeJS.Timeout | null = null;
  readonly #stats: PunchGateStats = { punches: 0, repeats: 0, refused: 0 };

  constructor(opts: PunchGateOptions) {
    this.#sink = opts.sink;
    this.#lastSeen = opts.lastSeen;
    this.#log = (opts.logger ?? silentLogger()).child({ component: 'punch-gate' });
    this.#window = opts.repeatWindowSec ?? 60;
    this.#mono = opts.monotonic ?? (() => performance.now());
    this.#wall = opts.wallClock ?? Date.now;
    this.#touchFlushMs = opts.touchFlushMs ?? 30_000;
    this.#maxTracked = opts.maxTracked ?? 4096;
  }

  /** The repeat window now in force, in seconds. */
  get repeatWindowSec(): number {
    const w = typeof this.#window === 'function' ? this.#window() : this.#window;
    return Number.isFinite(w) && w > 0 ? w : 0;
  }
  set repeatWindowSec(sec: number | (() => number)) {
    this.#window = sec;
  }

  get stats(): PunchGateStats {
    return { ...this.#stats };
  }

  /** Would this person's identification now be a repeat? (no side effect) */
  isRepeat(orgId: string, subjectId: string): boolean {
    const last = this.#last.get(key(orgId, subjectId));
    const w = this.repeatWindowSec;
    return last !== undefined && w > 0 && this.#mono() - last < w * 1000;
  }

  /** One identification: a punch, a repeat, or refused by the agent. */
  async submit(req: PunchRequest): Promise<GateVerdict> {
    const k = key(req.orgId, req.subjectId);
    const now = this.#mono();
    const last = this.#last.get(k);
    const w = this.repeatWindowSec;
    if (last !== undefined && w > 0 && now - last < w * 1000) {
      this.#stats.repeats++;
      return { verdict: 'repeat' };
    }
    // Claimed before the await, so a second identification arriving meanwhile is a repeat.
    this.#last.set(k, now);
    if (this.#last.size > this.#maxTracked) this.#sweep(now, w);
    let eventId: string | undefined;
    try {
      const input: PunchRequest = { orgId: req.orgId, subjectId: req.subjectId, method: req.method };
      if (req.matchScore !== undefined) input.matchScore = req.matchScore;
      if (req.liveness !== undefined) input.liveness = req.liveness;
      eventId = (await this.#sink.punch(input))?.eventId;
    } catch (err) {
      // Not accepted: the window was not earned; the person may try again at once.
      if (this.#last.get(k) === now) this.#last.delete(k);
      this.#stats.refused++;
      const code = errorCode(err);
      this.#log.error({ event: 'punch_refused', orgId: req.orgId, code }, `punch not accepted: ${code}`);
      return { verdict: 'refused', code };
    }
    this.#stats.punches++;
    if (this.#lastSeen) {
      this.#touches.set(k, { orgId: req.orgId, subjectId: req.subjectId, atMs: this.#wall() });
      this.#touchTimer ??= setTimeout(() => void this.flushLastSeen(), this.#touchFlushMs);
      this.#touchTimer.unref?.();
    }
    return eventId ? { verdict: 'punch', eventId } : { verdict: 'punch' };
  }

  /** An erasure started: these people leave the window and the pending last-seen batch. */
  forget(orgId: string, subjectIds: readonly string[] | 'all'): void {
    const prefix = `${orgId}\u0000`;
    const drop = subjectIds === 'all' ? null : new Set(subjectIds.map((s) => key(orgId, s)));
    for (const m of [this.#last, this.#touches] as Map<string, unknown>[]) {
      for (const k of m.keys()) if (drop ? drop.has(k) : k.startsWith(prefix)) m.delete(k);
    }
  }

  /** Forget everyone (tamper zeroise). */
  clear(): void {
    this.#last.clear();
    this.#touches.clear();
  }

  /** Write pending last-seen times to the vault (also done by stop()). Never throws. */
  async flushLastSeen(): Promise<void> {
    if (this.#touchTimer) clearTimeout(this.#touchTimer);
    this.#touchTimer = null;
    const batch = [...this.#touches.values()];
    this.#touches.clear();
    for (const t of batch) {
      await this.#lastSeen?.touchSubject(t.orgId, t.subjectId, t.atMs).catch((err: unknown) => this.#log.warn({ event: 'touch_failed', code: errorCode(err) }, 'could not update last-seen'));
    }
  }

  async stop(): Promise<void> {
    await this.flushLastSeen();
  }

  #sweep(now: number, windowSec: number): void {
    const horizon = windowSec * 1000;
    for (const [k, at] of this.#last) if (now - at >= horizon) this.#last.delete(k);
  }
}
