/**
 * Issue 8 §1: the logger never throws into its caller (BigInt, cycles,
 * throwing getters), and redacts personal fields at any depth, not only at
 * the top level. Lines are read back from a real file descriptor.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger, setLogLevel } from '../../src/util/log.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function capture(level = 'info') {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-log-'));
  dirs.push(dir);
  const file = join(dir, 'log');
  const fd = openSync(file, 'w');
  const logger = createLogger({ level, fd });
  const lines = () => {
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  };
  return { logger, lines, close: () => closeSync(fd) };
}

describe('logger', () => {
  it('never throws: BigInt, a cycle, a throwing getter, a throwing toJSON', () => {
    const { logger, lines, close } = capture();
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    const nasty = {
      get boom(): never {
        throw new Error('getter exploded');
      },
    };
    const badJson = {
      toJSON: () => {
        throw new Error('toJSON exploded');
      },
    };
    expect(() => logger.info({ event: 'big', n: 2n ** 70n }, 'bigint')).not.toThrow();
    expect(() => logger.info({ event: 'cycle', cyclic }, 'cycle')).not.toThrow();
    expect(() => logger.info({ event: 'getter', nasty }, 'getter')).not.toThrow();
    expect(() => logger.info({ event: 'tojson', badJson }, 'tojson')).not.toThrow();
    close();
    const out = lines();
    expect(out.map((l) => l.msg)).toEqual(['bigint', 'cycle', 'getter', 'tojson']);
    expect(out[0]!.n).toBe((2n ** 70n).toString());
    expect(out[1]!.cyclic).toEqual({ a: 1, self: '[circular]' });
    expect(out[2]!.nasty).toBe('[unserialisable]');
  });

  it('redacts personal fields at any depth, and prints bytes only as a length', () => {
    const { logger, lines, close } = capture();
    logger.info({ event: 'upsert', subject: { subjectId: 's-1', displayName: 'Ada Lovelace', credentials: [{ cardNumber: '0012345678' }] }, template: Buffer.alloc(8, 0x42), blob: { raw: Buffer.from('secret-bytes') } }, 'nested');
    close();
    const text = readFileSync(join(dirs[0]!, 'log'), 'utf8');
    expect(text).not.toContain('Ada Lovelace');
    expect(text).not.toContain('0012345678');
    expect(text).not.toContain('secret-bytes');
    const [l] = lines();
    expect(l!.subject).toEqual({ subjectId: 's-1', displayName: '[redacted]', credentials: [{ cardNumber: '[redacted]' }] });
    expect(l!.template).toBe('[redacted]');
    expect(l!.blob).toEqual({ raw: '[12 bytes]' });
  });

  it('a level change reaches every child logger', () => {
    const { logger, lines, close } = capture('info');
    const child = logger.child({ component: 'drain' });
    child.debug('hidden');
    expect(setLogLevel(logger, 'debug')).toBe(true);
    child.debug('shown');
    expect(child.level).toBe('debug');
    close();
    expect(lines().map((l) => l.msg)).toEqual(['shown']);
  });
});
