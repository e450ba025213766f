/**
 * The tmpfs helper leaves no mount behind, however the run ends: a name filter
 * that skips the describe owning it, Ctrl-C (SIGINT to the process group),
 * SIGTERM to vitest (which stops its fork with SIGTERM), and SIGKILL (no
 * handler runs: the next mount detaches the orphan). A mount still busy is
 * detached and reported with what holds it. Real mounts, real vitest runs:
 * needs root (CI runs as root); skipped elsewhere.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { waitUntil } from './ports.js';
import { mountTmpfs } from './tmpfs.js';

const work = mkdtempSync(join(tmpdir(), 'tbx-tmpfstest-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Running (a zombie counts as gone: it holds nothing, it only waits to be reaped). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !['Z', 'X'].includes(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '');
  } catch {
    return false; // no /proc entry: the process is gone
  }
}
const isMounted = (dir: string) =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === dir);

interface Run {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }>;
  /** The fixture's report: its mount point, then 'running' once its test has started. */
  report(): { dir?: string; pid?: number; running: boolean };
}

let runs = 0;
/** A real vitest run of the fixture, in its own process group (so a signal can go to the group, as Ctrl-C does). */
function runFixture(mode: 'pass' | 'hang', args: string[] = []): Run {
  const report = join(work, `report-${++runs}`);
  const child = spawn(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--config', 'test/helpers/fixtures/vitest.fixture.config.ts', 'tmpfs-suite', ...args], {
    env: { ...process.env, NO_COLOR: '1', TBX_TMPFS_FIXTURE: mode, TBX_TMPFS_REPORT: report },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (d) => {
    output += d;
  });
  child.stderr?.on('data', (d) => {
    output += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, output })));
  return {
    child,
    exited,
    report() {
      let text = '';
      try {
        text = readFileSync(report, 'utf8');
      } catch {
        return { running: false }; // not written yet
      }
      const [first, ...rest] = text.split('\n');
      const head = first ? (JSON.parse(first) as { dir: string; pid: number }) : undefined;
      return { dir: head?.dir, pid: head?.pid, running: rest.includes('running') };
    },
  };
}

/** Waits for the fixture's test to be running on its mount; returns the mount point. */
async function whileRunning(run: Run): Promise<string> {
  await waitUntil(() => run.report().running, 60_000, 'the fixture test running on its tmpfs', 50);
  const dir = run.report().dir ?? '';
  expect(isMounted(dir)).toBe(true);
  return dir;
}

const root = process.getuid?.() === 0;

describe.runIf(root)('tmpfs helper: no mount outlives its run', () => {
  it('a name filter that skips the describe owning the mount: unmounted and removed anyway', async () => {
    const run = runFixture('pass', ['-t', 'does not touch it']);
    const { code, output } = await run.exited;
    expect(code, output).toBe(0);
    expect(output).toMatch(/1 passed.*1 skipped/);
    const dir = run.report().dir ?? '';
    expect(isMounted(dir)).toBe(false);
    expect(existsSync(dirname(dir))).toBe(false);
  }, 90_000);

  for (const [what, sig, toGroup] of [
    ['Ctrl-C (SIGINT to the process group)', 'SIGINT', true],
    ['SIGTERM to vitest (which stops its fork with SIGTERM, then SIGKILL)', 'SIGTERM', false],
  ] as const) {
    it(`${what} mid-test: unmounted and removed`, async () => {
      const run = runFixture('hang');
      const dir = await whileRunning(run);
      process.kill(toGroup ? -(run.child.pid ?? 0) : (run.child.pid ?? 0), sig);
      const { code, signal, output } = await run.exited;
      expect(code !== 0 || signal !== null, output).toBe(true);
      // vitest's main process may be gone before its fork has finished dying: wait for the fork.
      await waitUntil(() => !alive(run.report().pid ?? 0), 30_000, 'the fork gone');
      expect(isMounted(dir)).toBe(false);
      expect(existsSync(dirname(dir))).toBe(false);
    }, 90_000);
  }

  it('SIGKILL mid-test leaves the mount; the next mountTmpfs detaches it (its owner is gone) and says so', async () => {
    const run = runFixture('hang');
    const dir = await whileRunning(run);
    process.kill(-(run.child.pid ?? 0), 'SIGKILL');
    await run.exited;
    await waitUntil(() => !alive(run.report().pid ?? 0), 30_000, 'the fork gone');
    expect(isMounted(dir)).toBe(true); // nothing could run in the killed fork
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const next = mountTmpfs('tbx-tmpfstest-next-', '1m');
    try {
      expect(isMounted(dir)).toBe(false);
      expect(existsSync(dirname(dir))).toBe(false);
      expect(warn.mock.calls.map((c) => String(c[0]))).toContainEqual(expect.stringMatching(new RegExp(`^tallybox-test: detached a tmpfs ${dir} left mounted by process \\d+, which is gone$`)));
      expect(isMounted(next.dir)).toBe(true); // and the new mount is made as usual
    } finally {
      warn.mockRestore();
      await next.dispose();
    }
    expect(isMounted(next.dir)).toBe(false);
  }, 90_000);

  it('a mount of a live process is not swept: another engineer’s test keeps its tmpfs', async () => {
    const run = runFixture('hang');
    const dir = await whileRunning(run);
    try {
      const other = mountTmpfs('tbx-tmpfstest-other-', '1m');
      await other.dispose();
      expect(isMounted(dir)).toBe(true);
    } finally {
      process.kill(-(run.child.pid ?? 0), 'SIGTERM');
      await run.exited;
    }
    await waitUntil(() => !alive(run.report().pid ?? 0), 30_000, 'the fork gone');
    expect(isMounted(dir)).toBe(false);
  }, 90_000);

  it('still busy when disposed: detached lazily, and the LEAK line names the process and the file holding it', async () => {
    const fs = mountTmpfs('tbx-tmpfstest-busy-', '1m');
    const file = join(fs.dir, 'held-open');
    const fd = openSync(file, 'w');
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      await fs.dispose(300);
      expect(isMounted(fs.dir)).toBe(false);
      expect(existsSync(dirname(fs.dir))).toBe(false);
      expect(warn.mock.calls.map((c) => String(c[0]))).toContainEqual(expect.stringContaining(`tallybox-test: LEAK: tmpfs ${fs.dir} still busy after 300 ms, detached lazily; open on it: ${process.pid}:fd ${file}`));
      await fs.dispose(); // idempotent: the file-level afterAll calls it again
    } finally {
      warn.mockRestore();
      closeSync(fd);
    }
  });
});
