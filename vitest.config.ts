import { defineConfig } from 'vitest/config';

// Integration suites start brokers, pseudo-terminals and child processes: give them
// room, and keep files in separate forks so a crashed agent cannot take the runner down.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts', 'firmware-bridge/**/*.test.ts', 'simulators/**/*.test.ts'],
    pool: 'forks',
    // One file at a time: each integration file already runs brokers, agents and printers in
    // child processes that use both cores; two files at once made timing-sensitive suites
    // (disk-full drain, lab faults, powerloss, P1 withdrawal) fail now and then on 2 cores.
    maxWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
