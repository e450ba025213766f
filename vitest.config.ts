import { defineConfig } from 'vitest/config';

// Integration suites start brokers, pseudo-terminals and child processes: give them
// room, and keep files in separate forks so a crashed agent cannot take the runner down.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts', 'firmware-bridge/**/*.test.ts', 'simulators/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
