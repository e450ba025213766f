/**
 * The face kernel's source is kernel.wat; kernel.wasm must be exactly it,
 * assembled (so nobody edits one without the other), and a runtime that
 * cannot compile it is logged, not silently slow.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import type { Logger } from '../../util/log.js';
import { KERNEL_WASM_URL, loadKernel, simdAvailable, simdUnavailableReason } from './kernel.js';

type Wabt = { parseWat(name: string, text: string, features: { simd: boolean }): { validate(): void; toBinary(o: object): { buffer: Uint8Array }; destroy(): void } };
const wabtInit = createRequire(import.meta.url)('wabt') as () => Promise<Wabt>;

function captureLogger(): { logger: Logger; lines: { level: string; fields: Record<string, unknown>; msg?: string }[] } {
  const lines: { level: string; fields: Record<string, unknown>; msg?: string }[] = [];
  const fn = (level: string) => (a: Record<string, unknown> | string, msg?: string) => lines.push(typeof a === 'string' ? { level, fields: {}, msg: a } : { level, fields: a, ...(msg === undefined ? {} : { msg }) });
  const logger = { level: 'trace', trace: fn('trace'), debug: fn('debug'), info: fn('info'), warn: fn('warn'), error: fn('error'), fatal: fn('fatal'), child: () => logger } as unknown as Logger;
  return { logger, lines };
}

describe('face kernel from kernel.wat', () => {
  it('kernel.wasm is exactly kernel.wat assembled by wabt (run `npm run wasm` after editing the .wat)', async () => {
    const wabt = await wabtInit();
    const mod = wabt.parseWat('kernel.wat', readFileSync(new URL('./kernel.wat', import.meta.url), 'utf8'), { simd: true });
    mod.validate();
    const assembled = Buffer.from(mod.toBinary({}).buffer);
    mod.destroy();
    expect(assembled.equals(readFileSync(KERNEL_WASM_URL))).toBe(true);
  });

  it('is byte for byte the module that was assembled by hand before (same code, same speed)', () => {
    // sha256 of buildKernel()'s output in the opcode-array version of kernel.ts this file replaced.
    expect(createHash('sha256').update(readFileSync(KERNEL_WASM_URL)).digest('hex')).toBe('15ef18cd3abe03ea5a846cfd7210f8a6b092f213b6501b6bb4a68670386ab9e5');
  });

  it('compiles here: SIMD in use, no reason to report', () => {
    expect(simdAvailable()).toBe(true);
    expect(simdUnavailableReason()).toBeNull();
  });

  it('a module this runtime cannot compile falls back with one warning naming the reason', () => {
    const bytes = new Uint8Array(readFileSync(KERNEL_WASM_URL));
    // Break the first f32x4.mul (0xfd 0xe6 0x01) into an opcode no runtime knows (0xfd 0xff 0x0f).
    const at = Buffer.from(bytes).indexOf(Buffer.from([0xfd, 0xe6, 0x01]));
    expect(at).toBeGreaterThan(0);
    bytes.set([0xfd, 0xff, 0x0f], at);
    const { logger, lines } = captureLogger();
    expect(loadKernel(bytes, logger)).toBeNull();
    expect(lines).toEqual([{ level: 'warn', fields: { event: 'face_kernel_simd_unavailable', reason: expect.any(String) }, msg: expect.stringMatching(/falls back to the JS kernel/) }]);
    // And the intact module loads without a word.
    const quiet = captureLogger();
    expect(loadKernel(new Uint8Array(readFileSync(KERNEL_WASM_URL)), quiet.logger)).toBeInstanceOf(WebAssembly.Module);
    expect(quiet.lines).toEqual([]);
  });
});
