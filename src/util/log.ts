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

/** Field names (compared lower-case, without _ and -) that hold personal data or secrets, at any depth. */
const REDACT = new Set(['name', 'displayname', 'fullname', 'template', 'templates', 'cardnumber', 'card', 'cardid', 'mac', 'macaddress', 'password', 'key', 'secret', 'image', 'photo', 'feature', 'features', 'embedding']);
const redactedKey = (k: string): boolean => REDACT.has(k.toLowerCase().replace(/[_-]/g, ''));
/** Deeper than this is cut: a log line is for people, and a cycle-free but huge structure must not stall the agent. */
const MAX_DEPTH = 8;
const MAX_KEYS = 100;

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

/**
 * A JSON-safe copy of `v` with personal fields redacted at every depth. Never
 * throws: BigInt becomes a string, a cycle "[circular]", bytes only their
 * length (a Buffer's toJSON would print a template byte by byte), an Error its
 * message, a throwing getter or toJSON "[unserialisable]".
 */
function sanitise(v: unknown, depth: number, ancestors: object[]): unknown {
  switch (typeof v) {
    case 'bigint':
      return v.toString();
    case 'function':
    case 'symbol':
      return `[${typeof v}]`;
    case 'number':
      return Number.isFinite(v) ? v : String(v);
    case 'object':
      break;
    default:
      return v;
  }
  if (v === null) return null;
  if (ancestors.includes(v)) return '[circular]';
  if (v instanceof Error) return isCoded(v) ? `${v.code}: ${v.message}` : v.message;
  if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return `[${v.byteLength} bytes]`;
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString();
  if (depth >= MAX_DEPTH) return '[too deep]';
  ancestors.push(v);
  try {
    if (Array.isArray(v)) return v.slice(0, MAX_KEYS).map((x) => sanitise(x, depth + 1, ancestors));
    if (v instanceof Map)
      return sanitiseEntries(
        [...v.entries()].map(([k, x]) => [String(k), x] as const),
        depth,
        ancestors,
      );
    if (v instanceof Set) return [...v].slice(0, MAX_KEYS).map((x) => sanitise(x, depth + 1, ancestors));
    return sanitiseEntries(
      Object.keys(v).map((k) => [k, (v as Record<string, unknown>)[k]] as const),
      depth,
      ancestors,
    );
  } catch {
    // A getter or proxy threw while we read it: the line is still written, without that value.
    return '[unserialisable]';
  } finally {
    ancestors.pop();
  }
}

function sanitiseEntries(entries: (readonly [string, unknown])[], depth: number, ancestors: object[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, x] of entries.slice(0, MAX_KEYS)) out[k] = redactedKey(k) ? '[redacted]' : sanitise(x, depth + 1, ancestors);
  return out;
}

const isCoded = (e: Error): e is Error & { code: string } => typeof (e as { code?: unknown }).code === 'string';

function redact(fields: Record<string, unknown>): Record<string, unknown> {
  const out = sanitise(fields, 0, []);
  return typeof out === 'object' && out !== null && !Array.isArray(out) ? (out as Record<string, unknown>) : { fields: out };
}

/** Shared by a logger and all its children, so a level change (ConfigPatch log_level) reaches every component. */
interface LevelState {
  level: LogLevel;
}

class JsonLineLogger implements Logger {
  constructor(
    private readonly shared: LevelState,
    private readonly fd: number,
    private readonly bindings: Record<string, unknown>,
  ) {}

  get level(): LogLevel {
    return this.shared.level;
  }

  setLevel(level: LogLevel): void {
    this.shared.level = level;
  }

  /** Never throws into the caller: a log line is never worth failing the operation that wrote it. */
  private write(lvl: Exclude<LogLevel, 'silent'>, a: unknown, msg?: unknown): void {
    if (LEVELS[lvl] < LEVELS[this.shared.level]) return;
    let line: string;
    try {
      const fields = typeof a === 'string' ? {} : redact(typeof a === 'object' && a !== null ? (a as Record<string, unknown>) : { value: a });
      const text = typeof a === 'string' ? a : msg;
      line = JSON.stringify({ level: lvl, time: new Date().toISOString(), ...this.bindings, ...fields, msg: typeof text === 'string' ? text : text === undefined ? undefined : String(sanitise(text, 0, [])) });
    } catch (err) {
      // sanitise() does not throw, but a log line must be written even if it did.
      line = JSON.stringify({ level: lvl, time: new Date().toISOString(), msg: typeof msg === 'string' ? msg : typeof a === 'string' ? a : undefined, logError: err instanceof Error ? err.message : 'unserialisable' });
    }
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
    return new JsonLineLogger(this.shared, this.fd, { ...this.bindings, ...redact(bindings) });
  }
}

export function isLogLevel(l: unknown): l is LogLevel {
  return typeof l === 'string' && Object.hasOwn(LEVELS, l);
}

/**
 * Change the level of `logger`, its parent and every child (they share it).
 * False for a logger this module did not make (a test double): nothing changed.
 */
export function setLogLevel(logger: Logger, level: LogLevel): boolean {
  if (!(logger instanceof JsonLineLogger)) return false;
  logger.setLevel(level);
  return true;
}

function parseLevel(l: string | undefined): LogLevel {
  return isLogLevel(l) ? l : 'info';
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return new JsonLineLogger({ level: parseLevel(opts.level ?? process.env.TALLYBOX_LOG_LEVEL) }, opts.fd ?? 2, redact(opts.base ?? {}));
}

/** A logger that discards everything: for tests and benchmarks. */
export function silentLogger(): Logger {
  return new JsonLineLogger({ level: 'silent' }, 2, {});
}
