/**
 * C1 enrolment mode: "the next new phone that joins SSID X within N minutes
 * is this subject's". A SubjectUpsert with `wifi_enrol` arms a window (one
 * per SSID at a time; a second one is a CONFLICT at once). The role reports
 * every join on an armed SSID by a phone that the window's organisation does
 * not know; the first such phone becomes the subject's after a short guard,
 * unless another new phone joins the same SSID within it (two strangers
 * arriving together: CONFLICT, nothing enrolled — never a guess). No new
 * phone before the end: EXPIRED. Time is the monotonic clock only.
 *
 * Armed windows survive a restart (window-store.ts): `onChange` tells the role
 * to save the set, `snapshot` says how much time each has left, `restore`
 * re-arms one with that time, and `suspend` (the role stops) ends nothing:
 * the windows stay armed in the file, with no result sent.
 *
 * The MAC stays in memory until `commit` hands it to the vault (stored as the
 * org-keyed HMAC, scoped to the SSID); the outcome names the subject, the SSID
 * and a short keyed tag of the phone, never the MAC.
 */
import { WifiEnrolmentState, type WifiEnrolmentOutcomeProps } from '../../proto/index.js';
import { SerialQueue } from '../kit/serial-queue.js';

export interface EnrolmentRequest {
  orgId: string;
  subjectId: string;
  ssid: string;
  windowSec: number;
  counter: number;
}

export type EnrolmentEnd = 'enrolled' | 'expired' | 'conflict' | 'cancelled';

export interface EnrolmentWindowsOptions {
  guardMs: number;
  monotonic: () => number;
  /** Store the phone for the subject (throws: the window ends CANCELLED with the code). */
  commit(req: EnrolmentRequest, mac: string): Promise<void>;
  /** The window ended (the later result, the log line). */
  ended(req: EnrolmentRequest, outcome: WifiEnrolmentOutcomeProps, end: EnrolmentEnd, why: string): void;
  tag(mac: string): string;
  /** The set of armed windows changed (armed, ended): the role saves it. */
  onChange?(): void;
}

/** An armed window and the time it has left (what is persisted). */
export interface WindowSnapshot {
  req: EnrolmentRequest;
  remainingMs: number;
}

interface Window {
  req: EnrolmentRequest;
  /** Monotonic time of the end (ms). */
  deadline: number;
  timer: NodeJS.Timeout;
  candidate?: { mac: string; guard: NodeJS.Timeout };
  conflict?: boolean;
  closing?: boolean;
}

const STATE: Record<EnrolmentEnd, WifiEnrolmentState> = {
  enrolled: WifiEnrolmentState.WIFI_ENROLMENT_STATE_ENROLLED,
  expired: WifiEnrolmentState.WIFI_ENROLMENT_STATE_EXPIRED,
  conflict: WifiEnrolmentState.WIFI_ENROLMENT_STATE_CONFLICT,
  cancelled: WifiEnrolmentState.WIFI_ENROLMENT_STATE_CANCELLED,
};

export class EnrolmentWindows {
  readonly #o: EnrolmentWindowsOptions;
  /** SSID → its armed window. */
  readonly #bySsid = new Map<string, Window>();
  /** Enrolments being committed, one at a time (a stop waits for them). */
  readonly #commits = new SerialQueue();

  constructor(opts: EnrolmentWindowsOptions) {
    this.#o = opts;
  }

  /** Open a window: ARMED, or CONFLICT when that SSID already has one. */
  arm(req: EnrolmentRequest): WifiEnrolmentOutcomeProps {
    const base = { subjectId: req.subjectId, ssid: req.ssid, armedCounter: req.counter };
    if (this.#bySsid.has(req.ssid)) return { ...base, state: WifiEnrolmentState.WIFI_ENROLMENT_STATE_CONFLICT };
    this.#open(req, req.windowSec * 1000);
    this.#o.onChange?.();
    return { ...base, state: WifiEnrolmentState.WIFI_ENROLMENT_STATE_ARMED };
  }

  /** Re-arm a window restored after a restart with the time it has left (false: its SSID is taken). */
  restore(req: EnrolmentRequest, remainingMs: number): boolean {
    if (this.#bySsid.has(req.ssid)) return false;
    this.#open(req, Math.min(remainingMs, req.windowSec * 1000));
    return true;
  }

  /** End a restored window that cannot go on (it expired while the agent was stopped): its result as usual. */
  endRestored(req: EnrolmentRequest, end: EnrolmentEnd, why: string): void {
    this.#o.ended(req, this.#outcome(req, end), end, why);
  }

  /** The armed windows and the time each has left now. */
  snapshot(): WindowSnapshot[] {
    const now = this.#o.monotonic();
    return [...this.#bySsid.values()].map((w) => ({ req: w.req, remainingMs: Math.max(0, w.deadline - now) }));
  }

  #open(req: EnrolmentRequest, ms: number): void {
    const w: Window = { req, deadline: this.#o.monotonic() + ms, timer: setTimeout(() => this.#expire(w), ms) };
    w.timer.unref?.();
    this.#bySsid.set(req.ssid, w);
  }

  /** The organisation whose window is armed on `ssid`, if any (the role asks before it looks the phone up). */
  armedOrg(ssid: string): string | undefined {
    return this.#bySsid.get(ssid)?.req.orgId;
  }

  get armed(): number {
    return this.#bySsid.size;
  }

  /** A phone the window's organisation does not know joined `ssid`. */
  newPhone(ssid: string, mac: string): void {
    const w = this.#bySsid.get(ssid);
    if (!w || w.closing) return;
    // A join reported late (queued behind others) after the window's end does not count.
    if (this.#o.monotonic() > w.deadline) return;
    if (w.candidate) {
      if (w.candidate.mac !== mac) w.conflict = true;
      return;
    }
    const guard = setTimeout(() => this.#decide(w), this.#o.guardMs);
    guard.unref?.();
    w.candidate = { mac, guard };
  }

  /** Erased subjects (or a whole organisation): their windows end CANCELLED. */
  cancel(orgId: string, subjectIds: readonly string[] | 'all', why: string): void {
    for (const w of [...this.#bySsid.values()]) if (w.req.orgId === orgId && (subjectIds === 'all' || subjectIds.includes(w.req.subjectId))) this.#end(w, 'cancelled', why);
  }

  /**
   * The role stops (a restart, a shutdown): an enrolment being committed
   * finishes; every other window stays armed, timers stopped, for the role to
   * save (`snapshot` before this) and restore at its next start. A phone that
   * was in its guard is forgotten: after the restart it is a phone that was
   * already there, so it is no candidate (role.ts counts only live joins).
   */
  async suspend(): Promise<WindowSnapshot[]> {
    await this.#commits.idle();
    const left = this.snapshot();
    for (const w of this.#bySsid.values()) {
      clearTimeout(w.timer);
      if (w.candidate) clearTimeout(w.candidate.guard);
    }
    this.#bySsid.clear();
    return left;
  }

  #expire(w: Window): void {
    if (w.candidate) return; // the guard decides
    this.#end(w, 'expired', 'no new phone joined within the window');
  }

  #decide(w: Window): void {
    const c = w.candidate;
    if (!c || w.closing) return;
    if (w.conflict) {
      this.#end(w, 'conflict', 'two or more new phones joined together');
      return;
    }
    w.closing = true;
    void this.#commits.run(async () => {
      try {
        await this.#o.commit(w.req, c.mac);
        this.#end(w, 'enrolled', 'the next new phone joined', c.mac);
      } catch (err) {
        this.#end(w, 'cancelled', (err as { code?: string }).code ?? 'ERROR');
      }
    });
  }

  #end(w: Window, end: EnrolmentEnd, why: string, mac?: string): void {
    if (this.#bySsid.get(w.req.ssid) !== w) return;
    this.#bySsid.delete(w.req.ssid);
    clearTimeout(w.timer);
    if (w.candidate) clearTimeout(w.candidate.guard);
    this.#o.onChange?.();
    this.#o.ended(w.req, this.#outcome(w.req, end, mac), end, why);
  }

  #outcome(req: EnrolmentRequest, end: EnrolmentEnd, mac?: string): WifiEnrolmentOutcomeProps {
    return { state: STATE[end], subjectId: req.subjectId, ssid: req.ssid, armedCounter: req.counter, ...(mac ? { phoneTag: this.#o.tag(mac) } : {}) };
  }
}
