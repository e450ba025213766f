/**
 * Tamper zeroisation, made durable. When a device is zeroised its KEK is
 * destroyed (every sealed record is then unreadable for good) and a marker is
 * left in the data directory, so that after a restart the agent comes up
 * *without* its vault: it still delivers the punches it had accepted and
 * reports the tamper alarm, but identifies nobody until IT inspects the device
 * and re-provisions it (`tallybox provision`, which clears the old vault).
 */
import { readFileSync, rmSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';

export const ZEROISED_MARKER = 'zeroised.json';

export interface ZeroisedInfo {
  atMs: number;
  reason: string;
}

export function zeroisedInfo(dataDir: string): ZeroisedInfo | undefined {
  try {
    return JSON.parse(readFileSync(join(dataDir, ZEROISED_MARKER), 'utf8')) as ZeroisedInfo;
  } catch {
    return undefined;
  }
}

/** Written (and synced) before the key is destroyed: a power cut between the two leaves a locked device, never an unlocked one. */
export function writeZeroisedMarker(dataDir: string, info: ZeroisedInfo): void {
  const path = join(dataDir, ZEROISED_MARKER);
  writeFileSync(path, JSON.stringify(info), { mode: 0o600 });
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Re-provisioning: the old vault (sealed under the destroyed key) and the marker go. */
export function clearZeroisedState(dataDir: string): void {
  for (const f of ['vault.db', 'vault.db-wal', 'vault.db-shm', 'vault.db-journal', ZEROISED_MARKER]) rmSync(join(dataDir, f), { force: true });
}
