/**
 * Tamper zeroisation, made durable. When a device is zeroised its KEK is
 * destroyed (every sealed record is then unreadable for good) and a marker is
 * left in the data directory, so that after a restart the agent comes up
 * *without* its vault: it still delivers the punches it had accepted and
 * reports the tamper alarm, but identifies nobody until IT inspects the device
 * and re-provisions it (`tallybox provision`, which clears the old vault).
 *
 * The marker also records what happened to the key — destroyed, or not and
 * why (read-only systemd credentials, an error during the overwrite) — so the
 * log, DeviceState and doctor never claim a destruction that did not happen.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describeError } from '../util/errors.js';
import { readPrivateFile, writePrivateFileAtomic } from '../util/private-fs.js';

export const ZEROISED_MARKER = 'zeroised.json';

/** What became of the device key. 'pending': the marker was written and the key not yet dealt with (a crash in between). */
export type KeyOutcome = 'destroyed' | 'not_destroyed' | 'pending' | 'unknown' | 'none';

export interface ZeroisedInfo {
  atMs: number;
  reason: string;
  key?: KeyOutcome;
  /** `CODE: message` when the key was not destroyed. */
  keyError?: string;
  /** Set when the marker exists but could not be read: the device is treated as zeroised (fail closed). */
  markerError?: string;
}

/**
 * The marker, if there is one. A marker that exists but cannot be read or
 * parsed means a zeroisation began: the device stays locked (it is never
 * read as "not zeroised") and says why.
 */
export function zeroisedInfo(dataDir: string, opts: { uid?: number } = {}): ZeroisedInfo | undefined {
  const path = join(dataDir, ZEROISED_MARKER);
  let raw: Buffer | undefined;
  try {
    raw = readPrivateFile(path, opts);
  } catch (err) {
    return { atMs: 0, reason: 'tamper marker unreadable', key: 'unknown', markerError: describeError(err) };
  }
  if (raw === undefined) return undefined;
  try {
    const v = JSON.parse(raw.toString('utf8')) as Partial<ZeroisedInfo>;
    if (typeof v !== 'object' || v === null || typeof v.reason !== 'string' || typeof v.atMs !== 'number') throw new Error('not a tamper marker');
    return { atMs: v.atMs, reason: v.reason, key: v.key ?? 'unknown', ...(v.keyError !== undefined ? { keyError: String(v.keyError) } : {}) };
  } catch (err) {
    return { atMs: 0, reason: 'tamper marker corrupt', key: 'unknown', markerError: `${path}: ${(err as Error).message} (${raw.length} bytes)` };
  }
}

/** Written (and synced) before the key is destroyed: a power cut between the two leaves a locked device, never an unlocked one. Rewritten with the key's outcome. */
export function writeZeroisedMarker(dataDir: string, info: ZeroisedInfo): void {
  const { markerError: _ignored, ...rest } = info;
  writePrivateFileAtomic(join(dataDir, ZEROISED_MARKER), JSON.stringify(rest));
}

/** One line for the log, DeviceState and doctor: what zeroisation did to the key. */
export function describeZeroised(z: ZeroisedInfo): string {
  const key =
    z.key === 'destroyed'
      ? 'device key destroyed'
      : z.key === 'not_destroyed'
        ? `device key NOT destroyed (${z.keyError ?? 'unknown error'})`
        : z.key === 'none'
          ? 'no device key on this device'
          : z.key === 'pending'
            ? 'device key destruction interrupted'
            : 'device key state unknown';
  return `zeroised (${z.reason}${z.markerError ? `: ${z.markerError}` : ''}): ${key}`;
}

/** Re-provisioning: the old vault (sealed under the destroyed key) and the marker go. */
export function clearZeroisedState(dataDir: string): void {
  for (const f of ['vault.db', 'vault.db-wal', 'vault.db-shm', 'vault.db-journal', ZEROISED_MARKER]) rmSync(join(dataDir, f), { recursive: true, force: true });
}
