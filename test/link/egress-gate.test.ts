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
  it('only the link imports the MQTT client, and only src/link/egress.ts publishes with it', () => {
    const sources = files(join(root, 'src')).map((f) => ({ file: relative(root, f), text: readFileSync(f, 'utf8') }));
    // A value import of 'mqtt' is what it takes to get a client; type-only imports carry none.
    // … or a require() of it (createRequire(import.meta.url)('mqtt'), src/link/transport.ts: no CJS lexer at start).
    const importers = sources.filter((s) => /^import\s+(?!type\b)[^;]*from\s+'mqtt'/m.test(s.text) || /[rR]equire\b[^;\n]*\(\s*'mqtt'\s*\)/.test(s.text)).map((s) => s.file);
    // One module builds clients (socket, TLS policy, packet gate); `tallybox doctor` goes through src/link/probe.ts.
    expect(importers.sort()).toEqual(['src/link/transport.ts']);
    // ... and only the link itself may use that module: everything else gets an EgressChannel.
    const transportUsers = sources.filter((s) => /from\s+'(\.\/|[./]*\/link\/)transport\.js'/.test(s.text)).map((s) => s.file);
    expect(transportUsers.length).toBeGreaterThan(0);
    for (const f of transportUsers) expect(f, `${f} imports src/link/transport.ts`).toMatch(/^src\/link\/[^/]+\.ts$/);
    // The connection hands its client to the gate only; nothing but the gate calls publish on it.
    const publishers = sources.filter((s) => /\b(client|c)\.publish(Async)?\s*\(/.test(s.text)).map((s) => s.file);
    expect(publishers).toEqual(['src/link/egress.ts']);
  });

  it('the gate has no method that takes raw bytes or an arbitrary payload', () => {
    const src = readFileSync(join(root, 'src/link/egress.ts'), 'utf8');
    const methods = [...src.matchAll(/^\s{2}(?:async\s+)?(\w+)\(([^)]*)\)/gm)].filter((m) => m[1] !== 'constructor');
    for (const [, name, params] of methods) expect(params, `${name}(${params})`).not.toMatch(/Uint8Array|Buffer|unknown|any\b/);
  });
});
