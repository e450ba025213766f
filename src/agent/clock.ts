/**
 * Is the wall clock trustworthy? Devices boot without an RTC battery or with a
 * drifted one; a punch records whether its timestamp came from a synced clock
 * so the cloud can treat it with suspicion.
 */
import { existsSync } from 'node:fs';
import type { Config } from '../config/schema.js';

// systemd-timesyncd creates this file once the clock is synchronised.
const TIMESYNC_FLAG = '/run/systemd/timesync/synchronized';
// Every punch asks; the answer changes rarely. One stat() per second at most.
const RECHECK_MS = 1000;
let cached: { at: number; synced: boolean } | undefined;

export function clockSynced(source: Config['clock']['source']): boolean {
  switch (source) {
    case 'assume-synced':
      return true;
    case 'assume-unsynced':
      return false;
    case 'systemd': {
      const now = performance.now();
      if (!cached || now - cached.at > RECHECK_MS) cached = { at: now, synced: existsSync(TIMESYNC_FLAG) };
      return cached.synced;
    }
  }
}
