/** `tallybox-sim fleet` refuses bad arguments with one clear line and starts nothing. Needs dist/. */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SIM = resolve(import.meta.dirname, '../../dist/simulators/cli.js');
const run = (...args: string[]) => spawnSync(process.execPath, [SIM, 'fleet', ...args], { encoding: 'utf8', timeout: 30_000 });

describe('tallybox-sim fleet arguments', () => {
  it.each([
    [['--rate', '1', '--duration', '5'], /--devices is required/],
    [['--devices', '0', '--rate', '1', '--duration', '5'], /--devices must be a positive integer, not "0"/],
    [['--devices', '2.5', '--rate', '1', '--duration', '5'], /--devices must be a positive integer/],
    [['--devices', '2', '--rate', 'fast', '--duration', '5'], /--rate must be a positive number, not "fast"/],
    [['--devices', '2', '--rate', '1', '--duration', '5', '--broker', 'ftp://x'], /--broker must be mosquitto, embedded or an mqtt:\/\/ URL/],
    [['--devices', '2', '--rate', '1', '--duration', '5', '--bogus'], /Unknown option '--bogus'/],
  ])('%j is refused', (args, message) => {
    const r = run(...args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^tallybox: FLEET_USAGE: /);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it('--help prints the options and exits 0', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/--consumers K/);
    expect(r.stdout).toMatch(/--chaos/);
  });
});
