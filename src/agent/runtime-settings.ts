/**
 * Runtime settings a signed ConfigPatch may change, their limits, and their
 * persistence. A patch is validated as a whole (one bad field refuses it all
 * and changes nothing), written to dataDir/settings.json (0600, atomic, never
 * through a symlink), and only then applied — so "OK" means both in effect
 * now and after a restart.
 *
 * Only the fields the cloud patched are stored: they override the config
 * file's values until the file is removed (doctor shows them). The file is the
 * agent's own input too: unreadable or invalid, the agent refuses to start
 * (SETTINGS_CORRUPT) rather than silently fall back to other values — a
 * retention period quietly reverting to a shorter one would erase templates.
 */
import { join } from 'node:path';
import { TallyboxError, describeError } from '../util/errors.js';
import { isLogLevel, type LogLevel } from '../util/log.js';
import { readPrivateFile, writePrivateFileAtomic } from '../util/private-fs.js';

export const SETTINGS_FILE = 'settings.json';

/** Runtime settings; each consumer reads the current value. */
export interface RuntimeSettings {
  retentionDays: number;
  repeatWindowSec: number;
  backlogRatePerSec: number;
  logLevel: LogLevel;
}

export type SettingsPatch = Partial<RuntimeSettings>;

/**
 * Limits for a patch from the cloud. The backlog rate must be 1..10000 per
 * second: a command cannot lift the limit (0 = unlimited is the config
 * file's, i.e. IT's, decision) nor set one that floods a site's uplink.
 */
export const LIMITS = {
  retentionDays: { min: 1, max: 1095 },
  repeatWindowSec: { min: 0, max: 3600 },
  backlogRatePerSec: { min: 1, max: 10_000 },
} as const;

export interface Refusal {
  reason: string;
  detail: string;
}

/** The patch as a whole, or why not. */
export function validatePatch(p: Record<string, unknown>): { ok: true; patch: SettingsPatch } | ({ ok: false } & Refusal) {
  const patch: SettingsPatch = {};
  for (const k of ['retentionDays', 'repeatWindowSec', 'backlogRatePerSec'] as const) {
    const v = p[k];
    if (v === undefined || v === null) continue;
    const { min, max } = LIMITS[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      const snake = k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      return { ok: false, reason: `${snake}_out_of_range`, detail: `${snake} must be an integer ${min}..${max}, got ${String(v)}` };
    }
    patch[k] = v;
  }
  const level = p.logLevel;
  if (level !== undefined && level !== null && level !== '') {
    if (!isLogLevel(level)) return { ok: false, reason: 'log_level_unknown', detail: `log_level must be one of fatal, error, warn, info, debug, trace, silent; got "${String(level).slice(0, 32)}"` };
    patch.logLevel = level;
  }
  if (Object.keys(patch).length === 0) return { ok: false, reason: 'empty_patch', detail: 'the patch sets no field' };
  return { ok: true, patch };
}

/** The patched overrides persisted so far (none: {}). Throws SETTINGS_CORRUPT for a file that is there but unusable. */
export function loadPersistedSettings(dataDir: string, opts: { uid?: number } = {}): SettingsPatch {
  const path = join(dataDir, SETTINGS_FILE);
  let raw: Buffer | undefined;
  try {
    raw = readPrivateFile(path, opts);
  } catch (err) {
    throw new TallyboxError('SETTINGS_CORRUPT', `${path}: ${describeError(err)}; remove it to return to the config file's values`, { path }, { cause: err });
  }
  if (raw === undefined) return {};
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new TallyboxError('SETTINGS_CORRUPT', `${path}: not JSON (${raw.length} bytes: ${(err as Error).message}); the settings the cloud patched are unknown. Remove it to return to the config file's values`, { path });
  }
  const o = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  if (!o || o.version !== 1 || typeof o.settings !== 'object' || o.settings === null) {
    throw new TallyboxError('SETTINGS_CORRUPT', `${path}: not a settings file of version 1; remove it to return to the config file's values`, { path });
  }
  const r = validatePatch(o.settings as Record<string, unknown>);
  if (!r.ok) {
    if (r.reason === 'empty_patch') return {};
    throw new TallyboxError('SETTINGS_CORRUPT', `${path}: ${r.detail}; remove it to return to the config file's values`, { path });
  }
  return r.patch;
}

/** Merge `patch` into what is persisted and write it (atomic, 0600). Throws when it could not be written. */
export function persistSettings(dataDir: string, merged: SettingsPatch): void {
  writePrivateFileAtomic(join(dataDir, SETTINGS_FILE), JSON.stringify({ version: 1, settings: merged, updatedAtMs: Date.now() }) + '\n');
}
