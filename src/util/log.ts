/**
 * Structured logs: JSON lines through pino (fast, well kept, the de-facto
 * structured logger for Node). Logs go to stderr so stdout stays free for a
 * command's own output (`demo --json`).
 *
 * Privacy rule 7: nothing personal is logged. Log subject ids (opaque) at most,
 * never names, templates, card numbers or MACs. The `redact` list is a second
 * line of defence for fields that must never appear even by mistake.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

const REDACT = ['name', 'displayName', 'template', 'cardNumber', 'mac', 'password', 'key', '*.name', '*.displayName', '*.template', '*.cardNumber', '*.mac', '*.key'];

export interface LoggerOptions {
  level?: string;
  /** File descriptor to write to; default 2 (stderr). */
  fd?: number;
  /** Bind these fields to every line (component, deviceId). */
  base?: Record<string, unknown>;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.TALLYBOX_LOG_LEVEL ?? 'info',
      base: opts.base ?? {},
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ fd: opts.fd ?? 2, sync: true }),
  );
}

/** A logger that discards everything: for tests and benchmarks. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
