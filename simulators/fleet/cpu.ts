/** CPU time for the fleet's per-punch cost figures (run.ts), in ms. */
import { readFileSync } from 'node:fs';

/** This process, every thread (event loop, libuv's pool running SQLite, V8's helpers). */
export function processCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** USER_HZ: /proc reports CPU time in 1/100 s on every Linux architecture. */
const CLOCK_TICKS_PER_SEC = 100;

/** Another process (user + system, from /proc); undefined where it cannot be read (gone, not Linux). */
export function procCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS_PER_SEC;
  } catch {
    return undefined; // the process is gone (or there is no /proc): the figure is NaN, not a guess
  }
}
