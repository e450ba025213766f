// tsc does not copy the generated protobuf module (.js + .d.ts); the build does.
import { cpSync } from 'node:fs';
cpSync('src/gen', 'dist/src/gen', { recursive: true });
