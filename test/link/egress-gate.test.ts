/**
 * One egress gate: the only code in the agent that publishes to the broker is
 * src/link/egress.ts. A new publish path elsewhere fails this test.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return f === 'gen' ? [] : files(p);
    return p.endsWith('.ts') && !p.endsWith('.test.ts') ? [p] : [];
  });
}

describe('egress gate', () => {
  it('only src/link/egress.ts calls publish on an MQTT client', () => {
    const offenders = files(join(root, 'src'))
      .filter((f) => /\.publish(Async)?\s*\(|\bpublish\s*:/.test(readFileSync(f, 'utf8')))
      .map((f) => relative(root, f));
    expect(offenders).toEqual(['src/link/egress.ts']);
  });

  it('the gate has no method that takes raw bytes or an arbitrary payload', () => {
    const src = readFileSync(join(root, 'src/link/egress.ts'), 'utf8');
    const methods = [...src.matchAll(/^\s{2}(?:async\s+)?(\w+)\(([^)]*)\)/gm)].filter((m) => m[1] !== 'constructor');
    for (const [, name, params] of methods) expect(params, `${name}(${params})`).not.toMatch(/Uint8Array|Buffer|unknown|any\b/);
  });
});
