/**
 * dataDir/agent.pid: lets `tallybox purge` and `provision` refuse to run
 * beside a live agent (two processes erasing and writing the same files
 * would race).
 *
 * Written atomically, 0600, never through a symlink (a link planted at
 * agent.pid is replaced, its target untouched). Reading it fails loudly:
 * a pid file that exists but cannot be read is not "no agent running".
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { TallyboxError } from '../util/errors.js';
import { readPrivateFile, writePrivateFileAtomic } from '../util/private-fs.js';

export const PID_FILE = 'agent.pid';
export const pidFile = (dataDir: string) => join(dataDir, PID_FILE);

export function writePidFile(dataDir: string): void {
  writePrivateFileAtomic(pidFile(dataDir), `${process.pid}\n`);
}

/** Remove the pid file if it is this process's (never another agent's). */
export function removePidFile(dataDir: string): void {
  let pid: number | undefined;
  try {
    pid = readPid(dataDir);
  } catch {
    // Unreadable or planted: not ours to judge at shutdown; the next start replaces it.
    return;
  }
  if (pid === process.pid) rmSync(pidFile(dataDir), { force: true });
}

function readPid(dataDir: string): number | undefined {
  // Any owner: purge and doctor (often root) read the pid file of an agent running as its own user.
  // Never through a symlink; an error reading it is thrown (FILE_INSECURE / FILE_UNREADABLE).
  const buf = readPrivateFile(pidFile(dataDir), { uid: -1 });
  if (buf === undefined) return undefined;
  const pid = Number(buf.toString('utf8').trim());
  // A torn or garbage file cannot name a process: treated as stale (it is replaced at the next start).
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * The pid of a live agent on this data directory, if any. A stale file
 * (process gone) is ignored. Throws PID_FILE_UNREADABLE when the file exists
 * but cannot be read or is not a plain file of ours: the caller must not
 * assume nobody is running.
 */
export function runningAgentPid(dataDir: string): number | undefined {
  let pid: number | undefined;
  try {
    pid = readPid(dataDir);
  } catch (err) {
    throw new TallyboxError('PID_FILE_UNREADABLE', `cannot tell whether an agent is running on ${dataDir}: ${(err as Error).message}`, { path: pidFile(dataDir) }, { cause: err });
  }
  if (pid === undefined || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    // EPERM: the process exists but belongs to another user — it is running.
    if ((err as NodeJS.ErrnoException).code === 'EPERM') return pid;
    return undefined; // ESRCH: gone; the file is stale
  }
}
