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
  // A decommissioned device provisioned again (its old keys are gone, or the line above refused): the marker and
  // the emptied vault sealed under the destroyed KEK go; the receipt file stays for the operator.
  (await import('../decommission/state.js')).clearDecommissionState(config.dataDir);
  // New keys: the incident records' key-file references start again from these.
  await (await import('../incident/keyfiles.js')).resetKeyFilesIn(config.dataDir);
  out(JSON.stringify({ deviceId: config.device.id, ...(zeroised ? { reprovisionedAfterZeroise: true } : {}), kekFile: keys.kekPath, identityFile: keys.identityPath, keyId: keys.keyId, publicKeyPem: keys.publicKeyPem }));
  return 0;
}

export interface ClaimArgs {
  claim: string;
  region?: string;
  broker?: string;
  ca?: string;
  out?: string;
  'data-dir'?: string;
  'cloud-key'?: string;
  'allow-loopback'?: boolean;
  'key-provider'?: string;
  'punch-api-port'?: string;
  timeout?: string;
}

/**
 * `tallybox provision --claim CODE --region cn|sg --broker URL [--ca FILE] --out DIR`:
 * keys, claim exchange, config, all or nothing (src/provision/claim.ts); prints the next step.
 */
export async function provisionClaim(a: ClaimArgs, out: (s: string) => void): Promise<number> {
  const { provisionByClaim } = await import('../provision/claim.js');
  const { parseCloudKey } = await import('../provision/trust.js');
  const bad = (msg: string) => new TallyboxError('CONFIG_INVALID', msg);
  if (a.region !== 'cn' && a.region !== 'sg') throw bad(`--region must be cn or sg, got "${a.region ?? ''}"`);
  if (!a.broker) throw bad('--broker URL is required (mqtts://mqtt.REGION.tallybox.cloud:8883)');
  if (!a.out) throw bad('--out DIR is required (e.g. /etc/tallybox)');
  const kp = a['key-provider'] ?? 'file';
  if (kp !== 'file' && kp !== 'systemd-credentials') throw bad(`--key-provider must be file or systemd-credentials, got "${kp}"`);
  const port = a['punch-api-port'] === undefined ? undefined : Number(a['punch-api-port']);
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) throw bad(`--punch-api-port must be a port number, got "${a['punch-api-port']}"`);
  const timeoutMs = a.timeout === undefined ? undefined : Number(a.timeout) * 1000;
  if (timeoutMs !== undefined && !(timeoutMs > 0)) throw bad(`--timeout must be seconds > 0, got "${a.timeout}"`);
  const r = await provisionByClaim({
    claimCode: a.claim,
    region: a.region,
    brokerUrl: a.broker,
    outDir: a.out,
    keyProvider: kp,
    allowLoopback: a['allow-loopback'] ?? false,
    ...(a.ca !== undefined ? { caFile: a.ca } : {}),
    ...(a['data-dir'] !== undefined ? { dataDir: a['data-dir'] } : {}),
    ...(a['cloud-key'] !== undefined ? { cloudKey: parseCloudKey(a['cloud-key']) } : {}),
    ...(port !== undefined ? { punchApiPort: port } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  });
  out(
    JSON.stringify({
      deviceId: r.grant.deviceId,
      kind: r.grant.kind,
      orgId: r.grant.orgId,
      servedOrgs: r.grant.servedOrgs,
      commandKeyId: r.grant.commandKey.id,
      configFile: r.configFile,
      kekFile: r.kekFile,
      identityFile: r.identityFile,
      keyId: r.keyId,
      next: `tallybox doctor --config ${r.configFile}   then   ${kp === 'systemd-credentials' ? 'systemctl enable --now tallybox' : `tallybox run --config ${r.configFile}`}`,
    }),
  );
  return 0;
}
