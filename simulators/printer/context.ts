/**
 * The simulated printer's shared state: the live fault switches, the paper-out latch and the jobs in
 * progress, and the printer status derived from them (what INFO STATUS and Get-Printer-Attributes
 * report). Faults change at run time through `setFaults` (the CLI's control); servers subscribe.
 */
import { TallyboxError } from '../../src/util/errors.js';
import { NO_FAULTS, type JobRecorder, type PrinterFaults, type PrinterSimContext } from './types.js';

export type SimStatus = ReturnType<PrinterSimContext['status']>;

export class SimPrinterContext implements PrinterSimContext {
  readonly recorder: JobRecorder;
  readonly faults: PrinterFaults;
  private paperIsOut = false;
  private active = 0;
  private readonly listeners = new Set<() => void>();

  constructor(recorder: JobRecorder, faults: Partial<PrinterFaults> = {}) {
    this.recorder = recorder;
    this.faults = { ...NO_FAULTS };
    validateFaults({ ...NO_FAULTS, ...faults });
    Object.assign(this.faults, faults);
  }

  status(): SimStatus {
    if (this.faults.offline) return { state: 'stopped', reasons: ['offline-report'] };
    if (this.paperIsOut) return { state: 'stopped', reasons: ['media-empty'] };
    return this.active > 0 ? { state: 'processing', reasons: ['none'] } : { state: 'idle', reasons: ['none'] };
  }

  get paperOutLatched(): boolean {
    return this.paperIsOut;
  }

  /** Change faults (validated first: a bad value changes nothing) and tell the servers. */
  setFaults(change: Partial<PrinterFaults>): PrinterFaults {
    validateFaults({ ...this.faults, ...change });
    Object.assign(this.faults, change);
    this.emit();
    return { ...this.faults };
  }

  paperOut(): void {
    if (this.paperIsOut) return;
    this.paperIsOut = true;
    this.emit();
  }

  /** Paper loaded again: a job paused by the paper-out goes on. */
  resume(): void {
    this.paperIsOut = false;
    this.emit();
  }

  jobStarted(): void {
    this.active++;
  }

  jobEnded(): void {
    this.active = Math.max(0, this.active - 1);
  }

  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(): void {
    for (const fn of this.listeners) fn();
  }
}

const COUNT_MAX = 2 ** 48;

/** Throws SIM_FAULT_INVALID naming the bad switch. */
export function validateFaults(f: PrinterFaults): void {
  for (const k of ['offline', 'busy', 'neverConfirm'] as const) if (typeof f[k] !== 'boolean') throw faultError(`${k} must be true or false`);
  for (const k of ['slowBytesPerSec', 'paperOutAfterBytes', 'closeAfterBytes'] as const) {
    const v = f[k];
    if (!Number.isSafeInteger(v) || v < 0 || v > COUNT_MAX) throw faultError(`${k} must be an integer in 0..${COUNT_MAX}`);
  }
}

function faultError(msg: string): Error {
  return new TallyboxError('SIM_FAULT_INVALID', msg);
}
