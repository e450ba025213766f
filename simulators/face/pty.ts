/**
 * A real pseudo-terminal pair from socat: the agent opens `link`, the
 * simulator opens `link.sim`. Bytes cross a real tty line discipline (raw,
 * no echo), so framing bugs that only show on a tty show here too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { access } from 'node:fs/promises';
import { TallyboxError } from '../../src/util/errors.js';

export interface PtyPair {
  /** The agent's end (what `--link` names). */
  hostPath: string;
  /** The simulator's end. */
  simPath: string;
  child: ChildProcess;
  close(): Promise<void>;
}

export async function spawnPtyPair(opts: { link: string; timeoutMs?: number }): Promise<PtyPair> {
  const hostPath = opts.link;
  const simPath = `${opts.link}.sim`;
  const child = spawn('socat', [`PTY,link=${hostPath},raw,echo=0`, `PTY,link=${simPath},raw,echo=0`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  for (;;) {
    const failed = await Promise.race([spawnError, new Promise<null>((r) => setTimeout(() => r(null), 20))]);
    if (failed) throw new TallyboxError('SIM_SOCAT_MISSING', `cannot start socat (${failed.message}); install it: apt-get install socat`, {}, { cause: failed });
    if (child.exitCode !== null) throw new TallyboxError('SIM_SOCAT_FAILED', `socat exited with ${child.exitCode}: ${stderr.trim()}`, { link: hostPath });
    try {
      await access(hostPath);
      await access(simPath);
      return { hostPath, simPath, child, close };
    } catch {
      if (Date.now() > deadline) {
        await close();
        throw new TallyboxError('SIM_SOCAT_TIMEOUT', `socat did not create ${hostPath} and ${simPath} in time`, { link: hostPath });
      }
    }
  }
}
