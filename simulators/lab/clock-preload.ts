/**
 * The lab's clock-skew hook, loaded into a simulated device's agent with
 * `node --import …/clock-preload.js` (never in production: only the lab
 * passes it, and only when TALLYBOX_SIM_CLOCK_FILE is set). It shifts the
 * wall clock — Date.now() and `new Date()` — by the number of milliseconds in
 * that file, re-read every 200 ms, so the lab can skew a running device's
 * clock without restarting it. The monotonic clock (performance.now,
 * process.hrtime) is untouched, as on a device whose RTC drifted: durations
 * and order stay right, timestamps go wrong. No agent code changes.
 *
 * It also ties the agent's life to the lab's: when TALLYBOX_LAB_PARENT_PID is
 * set and that process is gone (the lab was SIGKILLed, so its exit hook never
 * ran), the agent stops itself with SIGTERM instead of running on orphaned.
 */
import { readFileSync } from 'node:fs';

const file = process.env.TALLYBOX_SIM_CLOCK_FILE;
if (file) {
  let offsetMs = 0;
  const read = () => {
    try {
      const n = Number(readFileSync(file, 'utf8').trim());
      offsetMs = Number.isFinite(n) ? n : 0;
    } catch {
      offsetMs = 0; // no file: no skew
    }
  };
  read();
  setInterval(read, 200).unref();
  const RealDate = Date;
  const realNow = RealDate.now.bind(RealDate);
  class SkewedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(realNow() + offsetMs);
      else super(...(args as [string | number | Date]));
    }
    static override now(): number {
      return realNow() + offsetMs;
    }
  }
  globalThis.Date = SkewedDate as DateConstructor;
}

const parent = Number(process.env.TALLYBOX_LAB_PARENT_PID);
if (Number.isInteger(parent) && parent > 1) {
  setInterval(() => {
    if (process.ppid !== parent) process.kill(process.pid, 'SIGTERM');
  }, 1000).unref();
}
