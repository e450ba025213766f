/** A Logger that keeps every line in memory, for tests that check what the agent said. */
import type { LogLevel, Logger } from '../../src/util/log.js';

export interface Line {
  level: Exclude<LogLevel, 'silent'>;
  fields: Record<string, unknown>;
  msg: string;
}

export function captureLogger(lines: Line[] = [], bindings: Record<string, unknown> = {}): Logger & { lines: Line[] } {
  const at =
    (level: Line['level']) =>
    (a: string | Record<string, unknown>, msg?: string): void => {
      lines.push({ level, fields: { ...bindings, ...(typeof a === 'string' ? {} : a) }, msg: typeof a === 'string' ? a : (msg ?? '') });
    };
  return {
    level: 'trace',
    lines,
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    fatal: at('fatal'),
    child: (b) => captureLogger(lines, { ...bindings, ...b }),
  };
}
