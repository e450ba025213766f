// After tsc: copy the generated protobuf module (tsc does not copy .js + .d.ts inputs)
// and the assembled face kernel (tsc copies no .wasm), and make the two command-line
// entry points executable.
import { chmodSync, cpSync } from 'node:fs';
cpSync('src/gen', 'dist/src/gen', { recursive: true });
cpSync('src/identify/face/kernel.wasm', 'dist/src/identify/face/kernel.wasm');
for (const bin of ['dist/src/cli/tallybox.js', 'dist/simulators/cli.js']) chmodSync(bin, 0o755);
