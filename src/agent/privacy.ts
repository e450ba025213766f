/**
 * Opens the device's personal-data services: the vault (with its key
 * provider), and the purge pipeline with every participant that holds
 * personal data outside the vault (the outbox; device roles add theirs).
 */
import { dirname, join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Outbox } from '../outbox/outbox.js';
import { outboxErasureParticipant } from '../outbox/erasure.js';
import { Purger } from '../privacy/purge.js';
import { runRetention } from '../privacy/retention.js';
import type { SignedErasureReceipt } from '../privacy/receipt.js';
import { resultSigningBytes } from '../link/commands/result.js';
import { ResultCode, type CommandResultProps } from '../proto/index.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { FileKeyProvider, SystemdCredentialsKeyProvider, DEFAULT_IDENTITY_FILE, type KeyProvider, type DeviceIdentity } from '../vault/keys.js';
import { Vault } from '../vault/vault.js';

export interface PrivacyServices {
  vault: Vault;
  purger: Purger;
  identity: DeviceIdentity;
  keyProvider: KeyProvider;
}

export function keyProviderFor(vault: NonNullable<Config['vault']>): KeyProvider {
  if (vault.keyProvider === 'systemd-credentials') return new SystemdCredentialsKeyProvider({});
  const kekPath = vault.kekFile!; // the schema requires it for the file provider
  return new FileKeyProvider({ kekPath, identityPath: vault.identityFile ?? join(dirname(kekPath), DEFAULT_IDENTITY_FILE) });
}

export async function openPrivacy(opts: { config: Config; outbox: Outbox; logger: Logger }): Promise<PrivacyServices | undefined> {
  const { config, outbox, logger } = opts;
  if (!config.vault) return undefined;
  const keyProvider = keyProviderFor(config.vault);
  const vault = await Vault.open({ dataDir: config.dataDir, keyProvider, logger: logger.child({ component: 'vault' }) });
  const purger = new Purger({
    store: vault,
    signer: vault.identity,
    deviceId: config.device.id,
    participants: [outboxErasureParticipant(outbox)],
    logger: logger.child({ component: 'purge' }),
  });
  return { vault, purger, identity: vault.identity, keyProvider };
}

/** A result carrying an erasure receipt, signed by the device (for purges not started by a command). */
export function receiptResult(opts: { deviceId: string; identity: DeviceIdentity; signed: SignedErasureReceipt; ok: boolean; reason: string }): CommandResultProps {
  const unsigned: CommandResultProps = {
    deviceId: opts.deviceId,
    counter: 0,
    code: opts.ok ? ResultCode.RESULT_CODE_OK : ResultCode.RESULT_CODE_FAILED,
    reason: opts.reason,
    atMs: Date.now(),
    receipt: Buffer.from(JSON.stringify(opts.signed), 'utf8'),
    keyId: opts.identity.keyId,
  };
  return { ...unsigned, signature: opts.identity.sign(resultSigningBytes(unsigned)) };
}

/** Daily retention sweep; each purge's receipt is queued for the cloud. */
export function scheduleRetention(opts: {
  services: PrivacyServices;
  periodDays: () => number;
  deviceId: string;
  deliver: (orgId: string, r: CommandResultProps) => Promise<void>;
  logger: Logger;
  everyMs?: number;
}): () => void {
  const sweep = async () => {
    try {
      const outcomes = await runRetention({ source: opts.services.vault, purger: opts.services.purger, periodDays: opts.periodDays() });
      for (const o of outcomes) {
        await opts.deliver(o.receipt.orgId, receiptResult({ deviceId: opts.deviceId, identity: opts.services.identity, signed: o.signed, ok: o.ok, reason: 'retention' }));
      }
    } catch (err) {
      opts.logger.error({ event: 'retention_failed', err: errorMessage(err) }, `retention sweep failed: ${errorMessage(err)}`);
    }
  };
  const first = setTimeout(() => void sweep(), 60_000);
  const timer = setInterval(() => void sweep(), opts.everyMs ?? 24 * 3600_000);
  first.unref();
  timer.unref();
  return () => {
    clearTimeout(first);
    clearInterval(timer);
  };
}
