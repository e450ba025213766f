/**
 * Is the wall clock trustworthy? Devices boot without an RTC battery or with a
 * drifted one; a punch records whether its timestamp came from a synced clock
 * so the cloud can treat it with suspicion.
 */
import { existsSync } from 'node:fs';
import type { Config } from '../config/schema.js';

// Every punch asks; the answer changes rarely. One stat() per second at most.
const RECHECK_MS = 1000;
let cached: { at: number; file: string; synced: boolean } | undefined;

/** `flagFile`: what systemd-timesyncd creates once the clock is synchronised (config clock.syncedFlagFile). */
export function clockSynced(clock: Pick<Config['clock'], 'source' | 'syncedFlagFile'>): boolean {
  const { source } = clock;
  switch (source) {
    case 'assume-synced':
      return true;
    case 'assume-unsynced':
      return false;
    case 'systemd': {
      const now = performance.now();
      if (!cached || cached.file !== clock.syncedFlagFile || now - cached.at > RECHECK_MS) cached = { at: now, file: clock.syncedFlagFile, synced: existsSync(clock.syncedFlagFile) };
      return cached.synced;
    }
  }
}
