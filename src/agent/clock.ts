/**
 * Is the wall clock trustworthy? Devices boot without an RTC battery or with a
 * drifted one; a punch records whether its timestamp came from a synced clock
 * so the cloud can treat it with suspicion.
 */
import { existsSync } from 'node:fs';
import type { Config } from '../config/schema.js';

// systemd-timesyncd creates this file once the clock is synchronised.
const TIMESYNC_FLAG = '/run/systemd/timesync/synchronized';

export function clockSynced(source: Config['clock']['source']): boolean {
  switch (source) {
    case 'assume-synced':
      return true;
    case 'assume-unsynced':
      return false;
    case 'systemd':
      return existsSync(TIMESYNC_FLAG);
  }
}
