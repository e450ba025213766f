/**
 * The decommission journal: one small JSON file in the data directory,
 * `decommission.json`, replaced atomically at every step. It is both the
 * resume point (a crash at any step resumes from the phase it names) and,
 * once `phase` is `done`, the durable "decommissioned" marker that keeps
 * `tallybox run` from starting until `tallybox provision` clears it.
 *
 * It holds no personal data: org ids, counts, key versions, the signed
 * receipt (itself counts only), and the salt/check of the scan's
 * fingerprint key (the key derives from the KEK, which is not here).
 *
 * A file that exists but cannot be read or parsed is never taken for "not
 * decommissioning": the device stays locked and says why (fail closed).
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { TallyboxError, describeError } from '../util/errors.js';
import { readPrivateFile, writePrivateFileAtomic } from '../util/private-fs.js';

export const DECOMMISSION_FILE = 'decommission.json';
export const EVIDENCE_FILE = 'decommission-evidence.bin';
export const RECEIPT_FILE = 'decommission-receipt.json';

/** In order; a resumed run continues at the first phase not yet done. */
export const PHASES = ['sampling', 'delivering', 'purging', 'journal', 'outbox', 'signing', 'handover', 'keys', 'done'] as const;
export type Phase = (typeof PHASES)[number];

export type KeyFate = 'destroyed' | 'not_destroyed' | 'absent';

export interface OrgSummary {
  orgId: string;
  /** What the vault held before anything was erased (sample counts by label, never the bytes). */
  held: Record<string, number>;
  /** The org purge's own receipt counts, when its outcome was seen (absent after a crash hid it). */
  counts?: Record<string, number>;
  keyVersionsDestroyed: number[];
  verification?: string;
  problem?: string;
  /** The per-org erasure receipt (delivered like any purge receipt). */
  purgeReceiptId?: string;
  /** Punches of this org still queued when the outbox was erased (not delivered). */
  undeliveredPunches: number;
}

export interface DecommissionState {
  v: 1;
  id: string;
  phase: Phase;
  /** `local` (tallybox decommission) or `cmd:N` (DeviceDecommission). */
  requestRef: string;
  startedAtMs: number;
  orgs: OrgSummary[];
  /** Fingerprint key material for the final scan (key = HKDF(KEK root, salt, id)). */
  evidence?: { salt: string; check: string; samples: number };
  commandRows?: number;
  undeliveredResults?: number;
  punchesDelivered?: number;
  /** The signed receipt, JSON: written once, re-delivered as is, never re-signed. */
  signed?: string;
  receiptId?: string;
  /** Published on the result topic (PUBACK seen) before the keys went. */
  delivered?: boolean;
  kek?: KeyFate;
  identity?: KeyFate;
  keyErrors?: string[];
  finishedAtMs?: number;
}

export function statePath(dataDir: string): string {
  return join(dataDir, DECOMMISSION_FILE);
}

/** The journal, if any. Unreadable or corrupt: DECOMMISSION_STATE_CORRUPT (the caller refuses to run). */
export function readDecommission(dataDir: string): DecommissionState | undefined {
  const path = statePath(dataDir);
  let raw: Buffer | undefined;
  try {
    raw = readPrivateFile(path);
  } catch (err) {
    throw new TallyboxError('DECOMMISSION_STATE_CORRUPT', `${path} cannot be read (${describeError(err)}); the device is treated as decommissioning`, { path });
  }
  if (raw === undefined) return undefined;
  try {
    const v = JSON.parse(raw.toString('utf8')) as Partial<DecommissionState>;
    if (v.v !== 1 || typeof v.id !== 'string' || !PHASES.includes(v.phase as Phase) || !Array.isArray(v.orgs)) throw new Error('not a decommission journal');
    return v as DecommissionState;
  } catch (err) {
    throw new TallyboxError('DECOMMISSION_STATE_CORRUPT', `${path}: ${(err as Error).message} (${raw.length} bytes); the device is treated as decommissioning: re-provision it`, { path });
  }
}

export function writeDecommission(dataDir: string, s: DecommissionState): void {
  writePrivateFileAtomic(statePath(dataDir), JSON.stringify(s));
}

export function phaseAtLeast(s: DecommissionState, p: Phase): boolean {
  return PHASES.indexOf(s.phase) >= PHASES.indexOf(p);
}

/** `tallybox provision`: the device starts a new life; the old vault was emptied and its keys destroyed. */
export function clearDecommissionState(dataDir: string): void {
  if (!existsSync(statePath(dataDir))) return;
  for (const f of [DECOMMISSION_FILE, EVIDENCE_FILE, 'vault.db', 'vault.db-wal', 'vault.db-shm', 'vault.db-journal']) rmSync(join(dataDir, f), { force: true });
}
