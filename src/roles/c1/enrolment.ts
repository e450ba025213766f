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
 * The MAC stays in memory until `commit` hands it to the vault (stored as the
 * org-keyed HMAC, scoped to the SSID); the outcome names the subject, the SSID
 * and a short keyed tag of the phone, never the MAC.
 */
import { WifiEnrolmentState, type WifiEnrolmentOutcomeProps } from '../../proto/index.js';

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
}

interface Window {
  req: EnrolmentRequest;
  armedAt: number;
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
  #closing: Promise<unknown> = Promise.resolve();

  constructor(opts: EnrolmentWindowsOptions) {
    this.#o = opts;
  }

  /** Open a window: ARMED, or CONFLICT when that SSID already has one. */
  arm(req: EnrolmentRequest): WifiEnrolmentOutcomeProps {
    const base = { subjectId: req.subjectId, ssid: req.ssid, armedCounter: req.counter };
    if (this.#bySsid.has(req.ssid)) return { ...base, state: WifiEnrolmentState.WIFI_ENROLMENT_STATE_CONFLICT };
    const w: Window = { req, armedAt: this.#o.monotonic(), timer: setTimeout(() => this.#expire(w), req.windowSec * 1000) };
    w.timer.unref?.();
    this.#bySsid.set(req.ssid, w);
    return { ...base, state: WifiEnrolmentState.WIFI_ENROLMENT_STATE_ARMED };
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
    if (this.#o.monotonic() - w.armedAt > w.req.windowSec * 1000) return;
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

  /** The role stops: every open window ends CANCELLED; resolves when all outcomes are out. */
  async stop(): Promise<void> {
    for (const w of [...this.#bySsid.values()]) this.#end(w, 'cancelled', 'agent_stopping');
    await this.#closing;
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
    this.#closing = this.#closing.then(async () => {
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
    const outcome: WifiEnrolmentOutcomeProps = { state: STATE[end], subjectId: w.req.subjectId, ssid: w.req.ssid, armedCounter: w.req.counter, ...(mac ? { phoneTag: this.#o.tag(mac) } : {}) };
    this.#o.ended(w.req, outcome, end, why);
  }
}
