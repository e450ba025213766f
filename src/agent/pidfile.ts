/**
 * dataDir/agent.pid: lets `tallybox purge` refuse to run beside a live agent
 * (two processes erasing and writing the same files would race).
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const pidFile = (dataDir: string) => join(dataDir, 'agent.pid');

export function writePidFile(dataDir: string): void {
  writeFileSync(pidFile(dataDir), `${process.pid}\n`, { mode: 0o600 });
}

export function removePidFile(dataDir: string): void {
  rmSync(pidFile(dataDir), { force: true });
}

/** The pid of a live agent on this data directory, if any (a stale file after a crash is ignored). */
export function runningAgentPid(dataDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile(dataDir), 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}
