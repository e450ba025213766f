/**
 * Structured logs: one JSON object per line on stderr (stdout stays free for a
 * command's own output, e.g. `demo --json`); journald and any log shipper
 * take it as is. Call shape is pino's — `log.info({ event, ...fields }, msg)`
 * or `log.info(msg)` — so swapping pino back in is a one-file change.
 *
 * Why not pino: it costs ~8 MB of resident memory on import (measured with
 * node 20), a tenth of the agent's whole idle budget on a C1 router, for
 * features (transports, worker threads) a device writing to journald does
 * not use. This file is the part of it the agent needs.
 *
 * Privacy rule 7: nothing personal is logged. Log opaque subject ids at most;
 * fields whose names say they hold personal data are replaced by "[redacted]"
 * as a second line of defence.
 */
import { writeSync } from 'node:fs';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
const LEVELS: Record<LogLevel, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

const REDACT = new Set(['name', 'displayName', 'template', 'cardNumber', 'card', 'mac', 'password', 'key', 'secret', 'image']);

type LogFn = {
  (msg: string): void;
  (fields: Record<string, unknown>, msg?: string): void;
};

export interface Logger {
  readonly level: LogLevel;
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  child(bindings: Record<string, unknown>): Logger;
}

export interface LoggerOptions {
  level?: LogLevel | string;
  /** File descriptor to write to; default 2 (stderr). */
  fd?: number;
  /** Bind these fields to every line (component, deviceId). */
  base?: Record<string, unknown>;
}

function redact(fields: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const k of Object.keys(fields)) {
    if (REDACT.has(k)) (out ??= { ...fields })[k] = '[redacted]';
    else if (fields[k] instanceof Error) (out ??= { ...fields })[k] = (fields[k] as Error).message;
  }
  return out ?? fields;
}

class JsonLineLogger implements Logger {
  private readonly threshold: number;

  constructor(
    readonly level: LogLevel,
    private readonly fd: number,
    private readonly bindings: Record<string, unknown>,
  ) {
    this.threshold = LEVELS[level];
  }

  private write(lvl: Exclude<LogLevel, 'silent'>, a: string | Record<string, unknown>, msg?: string): void {
    if (LEVELS[lvl] < this.threshold) return;
    const fields = typeof a === 'string' ? {} : redact(a);
    const line = JSON.stringify({ level: lvl, time: new Date().toISOString(), ...this.bindings, ...fields, msg: typeof a === 'string' ? a : msg });
    try {
      writeSync(this.fd, line + '\n');
    } catch {
      // A log line is never worth crashing the agent (EAGAIN on a full pipe, closed stderr).
    }
  }

  trace: LogFn = (a: string | Record<string, unknown>, msg?: string) => this.write('trace', a, msg);
  debug: LogFn = (a: string | Record<string, unknown>, msg?: string) => this.write('debug', a, msg);
  info: LogFn = (a: string | Record<string, unknown>, msg?: string) => this.write('info', a, msg);
  warn: LogFn = (a: string | Record<string, unknown>, msg?: string) => this.write('warn', a, msg);
  error: LogFn = (a: string | Record<string, unknown>, msg?: string) => this.write('error', a, msg);
  fatal: LogFn = (a: string | Record<string, unknown>, msg?: string) => this.write('fatal', a, msg);

  child(bindings: Record<string, unknown>): Logger {
    return new JsonLineLogger(this.level, this.fd, { ...this.bindings, ...redact(bindings) });
  }
}

function parseLevel(l: string | undefined): LogLevel {
  return l !== undefined && l in LEVELS ? (l as LogLevel) : 'info';
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return new JsonLineLogger(parseLevel(opts.level ?? process.env.TALLYBOX_LOG_LEVEL), opts.fd ?? 2, opts.base ?? {});
}

/** A logger that discards everything: for tests and benchmarks. */
export function silentLogger(): Logger {
  return new JsonLineLogger('silent', 2, {});
}
