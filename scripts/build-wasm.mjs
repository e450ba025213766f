// Assembles src/identify/face/kernel.wat into kernel.wasm beside it with wabt (the
// WebAssembly Binary Toolkit, compiled to JS: no download, no native toolchain).
// Runs from `npm run build`. kernel.wasm is committed, like src/gen, so a checkout
// whose node_modules lacks wabt (or a production install without devDependencies)
// still builds: then the committed file is kept and this says so. The test
// src/identify/face/kernel-wat.test.ts fails if the committed file is not exactly
// the .wat assembled. Writes only when the bytes change.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const wat = join(root, 'src', 'identify', 'face', 'kernel.wat');
const out = join(root, 'src', 'identify', 'face', 'kernel.wasm');

let wabtInit;
try {
  wabtInit = createRequire(import.meta.url)('wabt');
} catch {
  if (!existsSync(out)) {
    console.error('tallybox: WASM_BUILD_FAILED: wabt is not installed (npm install) and there is no committed kernel.wasm');
    process.exit(1);
  }
  console.error('build-wasm: wabt not installed; keeping the committed src/identify/face/kernel.wasm');
  process.exit(0);
}

const wabt = await wabtInit();
let bytes;
try {
  const mod = wabt.parseWat('kernel.wat', readFileSync(wat, 'utf8'), { simd: true });
  mod.validate();
  bytes = Buffer.from(mod.toBinary({}).buffer);
  mod.destroy();
} catch (err) {
  console.error(`tallybox: WASM_BUILD_FAILED: ${err.message}`);
  process.exit(1);
}
if (!existsSync(out) || !readFileSync(out).equals(bytes)) {
  writeFileSync(out, bytes);
  console.error(`build-wasm: wrote src/identify/face/kernel.wasm (${bytes.length} bytes)`);
}
