/**
 * The peripheral supervisor: one per peripheral (fingerprint module, face
 * module, card reader, and the Wi-Fi presence sources and printers to come).
 * It owns the peripheral's connection state, and is the only place that
 * retries, watches and reports it; a role never writes its own reconnect loop.
 *
 *   stopped → opening → ready ⇄ degraded → offline → opening → …
 *                     ↘ absent (not there at all: no device node, not listed)
 *                     ↘ offline (there, but did not come up)
 *
 * - open: the peripheral's own bring-up (handshake, VfyPwd + ReadSysPara, …);
 *   a failure is retried after a full-jitter backoff (setTimeout: monotonic).
 * - heartbeat: when nothing has been heard from the peripheral for
 *   `heartbeatMs` (measured on the monotonic clock), its probe runs (the
 *   module's ping, ReadSysPara, the reader still in the device list); a probe
 *   or operation that fails is a fault.
 * - faults: a 'glitch' (a timeout, a garbled reply) makes it 'degraded'
 *   (still online); `failuresBeforeOffline` glitches in a row, or a 'gone'
 *   fault (link closed, unplugged), make it 'offline'. Any success heals.
 * - DeviceState: every change of online/offline and its detail goes to the
 *   agent's peripheral reporting (`sink.setPeripheral`). Details carry codes
 *   and delays, never personal data.
 */
import { EventEmitter } from 'node:events';
import { isTallyboxError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/log.js';
import { Backoff } from './backoff.js';

export type PeripheralStatus = 'stopped' | 'absent' | 'opening' | 'ready' | 'degraded' | 'offline';

export const PERIPHERAL_TRANSITIONS: Readonly<Record<PeripheralStatus, readonly PeripheralStatus[]>> = {
  stopped: ['opening'],
  opening: ['ready', 'absent', 'offline', 'stopped'],
  ready: ['degraded', 'offline', 'stopped'],
  degraded: ['ready', 'offline', 'stopped'],
  offline: ['opening', 'stopped'],
  absent: ['opening', 'stopped'],
};

/** How a failure counts: 'gone' (link lost), 'glitch' (may pass), 'absent' (not there), 'ignore' (not the peripheral's fault). */
export type FaultKind = 'gone' | 'glitch' | 'absent' | 'ignore';

/** What a supervisor needs from a peripheral: a small adapter over its driver. */
export interface SupervisedPeripheral {
  /** The name in DeviceState ('fingerprint', 'face', 'card-reader', …). */
  readonly name: string;
  /** Bring it up; resolves with a detail for DeviceState (model, firmware; no personal data). */
  open(): Promise<string>;
  /** Heartbeat: resolves when the peripheral answered / is present. */
  probe(): Promise<void>;
  /** Default: every failure is 'gone'. */
  classify?(err: unknown): FaultKind;
  /** Least wait before the next attempt after this failure (e.g. a late reply must not pass for the next one's). */
  settleMs?(err: unknown): number;
  /** Unsolicited loss (transport closed, unplugged); returns the unsubscribe. */
  watch?(onLost: (reason: Error) => void): () => void;
}

export interface PeripheralSink {
  setPeripheral(name: string, online: boolean, detail?: string): void;
}

export interface PeripheralSupervisorOptions {
  peripheral: SupervisedPeripheral;
  sink: PeripheralSink;
  logger?: Logger;
  /** Reconnect backoff (default 250 ms doubling to 30 s, full jitter). */
  backoff?: { minMs: number; maxMs: number };
  /** Probe after this much silence (default 5000 ms; 0: no heartbeat). */
  heartbeatMs?: number;
  /** Glitches in a row before 'offline' (default 2). */
  failuresBeforeOffline?: number;
  /** Monotonic ms clock (default performance.now). */
  monotonic?: () => number;
  /** For tests: the backoff's jitter source. */
  random?: () => number;
}

export interface PeripheralSupervisorEvents {
  status: [status: PeripheralStatus, detail: string];
}

export function errorCode(err: unknown): string {
  if (isTallyboxError(err)) return err.code;
  const c = (err as { code?: unknown } | null)?.code;
  if (typeof c === 'string' && c) return c;
  return err instanceof Error ? err.name || 'ERROR' : 'ERROR';
}

function fmtMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${Math.round(ms / 100) / 10} s`;
}

export class PeripheralSupervisor extends EventEmitter<PeripheralSupervisorEvents> {
  readonly name: string;
  readonly #p: SupervisedPeripheral;
  readonly #sink: PeripheralSink;
  readonly #log: Logger;
  readonly #backoff: Backoff;
  readonly #heartbeatMs: number;
  readonly #failuresBeforeOffline: number;
  readonly #now: () => number;
  #status: PeripheralStatus = 'stopped';
  #detail = '';
  #running = false;
  #glitches = 0;
  #lastHeard = 0;
  #retryTimer: NodeJS.Timeout | null = null;
  #beatTimer: NodeJS.Timeout | null = null;
  #attempt: Promise<PeripheralStatus> | null = null;
  #probing = false;
  #unwatch: (() => void) | null = null;
  readonly #stats = { opens: 0, failures: 0, probes: 0, probeFailures: 0 };

  constructor(opts: PeripheralSupervisorOptions) {
    super();
    this.#p = opts.peripheral;
    this.name = opts.peripheral.name;
    this.#sink = opts.sink;
    this.#log = (opts.logger ?? silentLogger()).child({ peripheral: this.name });
    const b = opts.backoff ?? { minMs: 250, maxMs: 30_000 };
    this.#backoff = new Backoff({ minMs: b.minMs, maxMs: b.maxMs, ...(opts.random ? { random: opts.random } : {}) });
    this.#heartbeatMs = Math.max(0, opts.heartbeatMs ?? 5000);
    this.#failuresBeforeOffline = Math.max(1, opts.failuresBeforeOffline ?? 2);
    this.#now = opts.monotonic ?? (() => performance.now());
  }

  get status(): PeripheralStatus {
    return this.#status;
  }
  get detail(): string {
    return this.#detail;
  }
  /** ready or degraded: operations may be tried. */
  get usable(): boolean {
    return this.#status === 'ready' || this.#status === 'degraded';
  }
  get stats(): Readonly<{ opens: number; failures: number; probes: number; probeFailures: number }> {
    return { ...this.#stats };
  }

  /** Start supervising; resolves once the first bring-up has succeeded or failed (retries go on). */
  async start(): Promise<PeripheralStatus> {
    if (this.#running) return this.#attempt ?? this.#status;
    this.#running = true;
    this.#unwatch = this.#p.watch?.((reason) => this.fault(reason, 'gone')) ?? null;
    // Already brought up by a one-off attempt (an erasure at boot): keep it, start watching.
    if (this.usable) {
      this.#armHeartbeat();
      return this.#status;
    }
    return this.attempt();
  }

  /** Stop: no more retries or probes. The peripheral's transport stays its owner's to close. */
  async stop(): Promise<void> {
    this.#running = false;
    this.#clearTimers();
    this.#unwatch?.();
    this.#unwatch = null;
    await this.#attempt?.catch(() => undefined);
    this.#set('stopped', 'stopped', false);
  }

  /**
   * One bring-up now (cancelling a pending retry); concurrent calls share it.
   * Works when not started too (an erasure at boot, before the role runs):
   * then nothing is retried afterwards.
   */
  attempt(): Promise<PeripheralStatus> {
    if (this.#attempt) return this.#attempt;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const run = (async (): Promise<PeripheralStatus> => {
      this.#set('opening', 'opening', false);
      this.#stats.opens++;
      try {
        const detail = await this.#p.open();
        this.#glitches = 0;
        this.#backoff.reset();
        this.#lastDown = null;
        this.#heard();
        this.#set('ready', detail || 'ready', true);
        this.#armHeartbeat();
      } catch (err) {
        const kind = this.#classify(err);
        this.#down(err, kind === 'absent' ? 'absent' : 'offline');
      }
      return this.#status;
    })();
    this.#attempt = run.finally(() => {
      this.#attempt = null;
    });
    return this.#attempt;
  }

  /** The role heard from the peripheral (a reply, a report): heals 'degraded', postpones the probe. */
  alive(): void {
    this.#heard();
    this.#glitches = 0;
    if (this.#status === 'degraded') this.#set('ready', this.#readyDetail ?? 'ready', true);
  }

  /**
   * The role's operation failed. Returns how it was counted, so the role can
   * decide whether to pause (its own business logic is not the supervisor's).
   */
  fault(err: unknown, kind: FaultKind = this.#classify(err)): FaultKind {
    if (kind === 'ignore') return kind;
    if (!this.usable) return kind; // already down or coming up: the attempt in progress decides
    const code = errorCode(err);
    this.#stats.failures++;
    if (kind === 'glitch' && ++this.#glitches < this.#failuresBeforeOffline) {
      this.#log.info({ event: 'peripheral_glitch', code, consecutive: this.#glitches }, `${this.name}: ${code}, retrying`);
      this.#set('degraded', `degraded: ${code} (${this.#glitches} of ${this.#failuresBeforeOffline})`, true);
      return kind;
    }
    this.#down(err, kind === 'absent' ? 'absent' : 'offline');
    return kind;
  }

  #readyDetail: string | undefined;
  /** The detail of the last fault while down; cleared when ready. */
  #lastDown: string | null = null;
  #reported: { online: boolean; detail: string } | null = null;

  #classify(err: unknown): FaultKind {
    try {
      return this.#p.classify?.(err) ?? 'gone';
    } catch {
      // A classifier that throws must not take the supervisor down with it.
      return 'gone';
    }
  }

  #heard(): void {
    this.#lastHeard = this.#now();
  }

  #down(err: unknown, status: 'offline' | 'absent'): void {
    const code = errorCode(err);
    this.#clearHeartbeat();
    const wait = Math.max(this.#backoff.next(), this.#p.settleMs?.(err) ?? 0);
    // The detail stays the same while the same fault persists, so DeviceState (and the agent's log) change once, not at every retry.
    const detail = `${status}: ${code}`;
    const retry = this.#running ? `; retry in ${fmtMs(wait)}` : '';
    if (this.#lastDown !== detail) this.#log.warn({ event: 'peripheral_down', status, code, retryMs: wait }, `${this.name} ${detail}${retry}`);
    else this.#log.debug({ event: 'peripheral_retry', status, code, retryMs: wait }, `${this.name} still ${detail}${retry}`);
    this.#lastDown = detail;
    this.#set(status, detail, false);
    if (!this.#running) return;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      if (this.#running) void this.attempt();
    }, wait);
    this.#retryTimer.unref?.();
  }

  #armHeartbeat(): void {
    this.#clearHeartbeat();
    if (this.#heartbeatMs <= 0 || !this.#running) return;
    // Checked at a fraction of the period so that "silent for heartbeatMs" is detected within ~1.25 periods.
    const tick = Math.max(10, Math.floor(this.#heartbeatMs / 4));
    this.#beatTimer = setInterval(() => void this.#beat(), tick);
    this.#beatTimer.unref?.();
  }

  async #beat(): Promise<void> {
    if (this.#probing || !this.usable || this.#now() - this.#lastHeard < this.#heartbeatMs) return;
    this.#probing = true;
    this.#stats.probes++;
    try {
      await this.#p.probe();
      if (this.usable) this.alive();
    } catch (err) {
      this.#stats.probeFailures++;
      // A probe that fails counts at least as a glitch: silence is never 'ignore'.
      const kind = this.#classify(err);
      this.fault(err, kind === 'ignore' ? 'glitch' : kind);
      // A glitch: probe again one period later, not at the next tick.
      this.#heard();
    } finally {
      this.#probing = false;
    }
  }

  #set(next: PeripheralStatus, detail: string, online: boolean): void {
    const prev = this.#status;
    if (next === 'ready') this.#readyDetail = detail;
    if (prev === next && this.#detail === detail) return;
    if (prev !== next && !PERIPHERAL_TRANSITIONS[prev].includes(next)) {
      // Never throw from here (callers are error paths); log the bug instead.
      this.#log.error({ event: 'peripheral_bad_transition', from: prev, to: next }, `${this.name}: unexpected transition ${prev} → ${next}`);
    }
    this.#status = next;
    this.#detail = detail;
    // 'opening' and 'stopped' are not news for DeviceState; the same report twice is not either.
    if (next !== 'opening' && next !== 'stopped' && (this.#reported?.online !== online || this.#reported.detail !== detail)) {
      this.#reported = { online, detail };
      this.#sink.setPeripheral(this.name, online, detail);
    }
    if (prev !== next) this.emit('status', next, detail);
  }

  #clearHeartbeat(): void {
    if (this.#beatTimer) clearInterval(this.#beatTimer);
    this.#beatTimer = null;
  }

  #clearTimers(): void {
    this.#clearHeartbeat();
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }
}
