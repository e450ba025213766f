import { join } from 'node:path';
import type { CommandSigner } from '../../simulators/cloud/signer.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { provisionKeyFiles } from '../../src/vault/keys.js';

/** A config for tests: loopback broker, fast reconnects, synced clock. */
export function testConfig(over: { dataDir: string; brokerUrl: string; deviceId?: string; apiPort?: number; capacity?: number; keepaliveSec?: number; backlogRatePerSec?: number }): ConfigInput {
  return {
    version: 1,
    device: { id: over.deviceId ?? 'dev-test-1', kind: 'sim', orgId: 'org-a' },
    region: 'sg',
    dataDir: over.dataDir,
    broker: { url: over.brokerUrl, allowLoopback: true, keepaliveSec: over.keepaliveSec ?? 5, reconnectMinMs: 50, reconnectMaxMs: 500, connectTimeoutMs: 2000 },
    outbox: { capacity: over.capacity ?? 100_000, backlogRatePerSec: over.backlogRatePerSec ?? 0 },
    punchApi: { enabled: over.apiPort !== undefined, port: over.apiPort ?? 0 },
    clock: { source: 'assume-synced' },
    log: { level: 'warn' },
  };
}

/**
 * The vault and signed-command sections of a test device's config: its key
 * files provisioned (KEK and device identity under `dir`/keys, outside the
 * data directory as the agent requires) and `signer`'s key trusted.
 */
export async function commandConfig(dir: string, dataDir: string, signer: CommandSigner): Promise<Required<Pick<ConfigInput, 'vault' | 'cloud'>>> {
  const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
  return { vault: { kekFile: keys.kekPath }, cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] } };
}
