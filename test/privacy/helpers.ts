/**
 * A device's data directory for privacy tests: real key files, a real
 * vault, outbox and purge journal, a config file the CLI can read, and
 * helpers to look at what the result queue holds (receipts by org).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ConfigInput } from '../../src/config/schema.js';
import { validateConfig, type Config } from '../../src/config/load.js';
import { openPrivacy, type PrivacyServices } from '../../src/agent/privacy.js';
import { resultFromJson } from '../../src/agent/results.js';
import { Outbox } from '../../src/outbox/outbox.js';
import type { ErasureReceipt, SignedErasureReceipt } from '../../src/privacy/receipt.js';
import { silentLogger } from '../../src/util/log.js';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { writeConfig } from '../helpers/agent-process.js';

export interface Device {
  root: string;
  dataDir: string;
  configInput: ConfigInput;
  config: Config;
  configFile: string;
  cleanup(): Promise<void>;
}

export async function device(over: Partial<ConfigInput> = {}): Promise<Device> {
  const root = await mkdtemp(join(tmpdir(), 'tallybox-privacy-'));
  const dataDir = join(root, 'data');
  const kekFile = join(root, 'keys', 'tallybox.kek');
  await provisionKeyFiles({ kekPath: kekFile, dataDir });
  const configInput: ConfigInput = {
    version: 1,
    device: { id: 'dev-priv-1', kind: 'sim', orgId: 'org-op' },
    region: 'sg',
    dataDir,
    // Nothing listens there: these tests never connect.
    broker: { url: 'mqtt://127.0.0.1:1', allowLoopback: true, reconnectMinMs: 1000, reconnectMaxMs: 5000 },
    clock: { source: 'assume-synced' },
    vault: { kekFile },
    log: { level: 'info' },
    ...over,
  };
  return { root, dataDir, configInput, config: validateConfig(configInput), configFile: writeConfig(root, configInput), cleanup: () => rm(root, { recursive: true, force: true }) };
}

export interface Opened {
  outbox: Outbox;
  privacy: PrivacyServices;
  close(): Promise<void>;
}

export async function open(d: Device): Promise<Opened> {
  const outbox = await Outbox.open({ path: join(d.dataDir, 'outbox.db'), capacity: 100_000 });
  const privacy = (await openPrivacy({ config: d.config, outbox, logger: silentLogger() }))!;
  return {
    outbox,
    privacy,
    close: async () => {
      await privacy.journal.close().catch(() => undefined);
      await privacy.vault.close().catch(() => undefined);
      await outbox.close();
    },
  };
}

/** Enrol `n` subjects with one template each; returns the template bytes. */
export async function enrol(p: PrivacyServices, orgId: string, n: number): Promise<Buffer[]> {
  const subjects = Array.from({ length: n }, (_, i) => ({ subjectId: `${orgId}-s${i}-${randomBytes(3).toString('hex')}`, displayName: `Person ${i}`, minor: false, consents: [{ kind: 'biometric' as const }] }));
  await p.vault.upsertSubjects(orgId, subjects);
  const templates = subjects.map(() => randomBytes(600));
  await p.vault.enrolTemplates(
    orgId,
    subjects.map((s, i) => ({ subjectId: s.subjectId, modality: 'fingerprint' as const, slot: 0, bytes: templates[i]! })),
  );
  return templates;
}

/** Receipts waiting in the result queue, parsed (signature not checked here). */
export async function queuedReceipts(outbox: Outbox): Promise<Array<{ orgId: string; reason: string; receipt: ErasureReceipt; signed: SignedErasureReceipt }>> {
  const out = [];
  for (const r of await outbox.pendingResults(1_000_000)) {
    const res = resultFromJson(r.body);
    if (!res.receipt || res.receipt.length === 0) continue;
    const signed = JSON.parse(Buffer.from(res.receipt).toString('utf8')) as SignedErasureReceipt;
    out.push({ orgId: r.orgId, reason: res.reason ?? '', receipt: JSON.parse(signed.body) as ErasureReceipt, signed });
  }
  return out;
}
