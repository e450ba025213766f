/**
 * `tallybox provision --config FILE`: create the device's key-encryption key
 * and Ed25519 identity (0600 files in a 0700 directory outside the data
 * directory), and print the identity's public key for the cloud to pin.
 * Never overwrites an existing key: that would orphan every sealed record.
 */
import { dirname, join } from 'node:path';
import { rmSync } from 'node:fs';
import { runningAgentPid } from '../agent/pidfile.js';
import { clearZeroisedState, zeroisedInfo } from '../agent/zeroise.js';
import { loadConfigFile } from '../config/load.js';
import { TallyboxError } from '../util/errors.js';
import { DEFAULT_IDENTITY_FILE, provisionKeyFiles } from '../vault/keys.js';

export async function provision(configFile: string, out: (s: string) => void): Promise<number> {
  const config = loadConfigFile(configFile);
  if (!config.vault) throw new TallyboxError('CONFIG_INVALID', `${configFile}: no vault section: this device keeps no personal data and needs no keys`);
  if (config.vault.keyProvider !== 'file' || !config.vault.kekFile) {
    throw new TallyboxError('CONFIG_INVALID', `${configFile}: vault.keyProvider is ${config.vault.keyProvider}: create the credentials with systemd-creds, not with tallybox provision`);
  }
  const identityPath = config.vault.identityFile ?? join(dirname(config.vault.kekFile), DEFAULT_IDENTITY_FILE);
  const zeroised = zeroisedInfo(config.dataDir);
  if (zeroised) {
    if (runningAgentPid(config.dataDir)) throw new TallyboxError('AGENT_RUNNING', 'stop the agent before re-provisioning a zeroised device');
    // After a tamper the identity key may be compromised too: it is replaced, and the
    // old vault (sealed under the destroyed key) is removed.
    rmSync(identityPath, { force: true });
    clearZeroisedState(config.dataDir);
  }
  const keys = await provisionKeyFiles({
    kekPath: config.vault.kekFile,
    identityPath,
    dataDir: config.dataDir,
  });
  out(JSON.stringify({ deviceId: config.device.id, ...(zeroised ? { reprovisionedAfterZeroise: true } : {}), kekFile: keys.kekPath, identityFile: keys.identityPath, keyId: keys.keyId, publicKeyPem: keys.publicKeyPem }));
  return 0;
}
