/**
 * Provisioning by claim: from nothing to a complete device directory.
 *
 *   OUT/tallybox.yaml         the config (validated by the real schema before it is written)
 *   OUT/tallybox.kek          32 random bytes, 0600
 *   OUT/device-identity.pem   Ed25519 private key, 0600
 *   OUT/broker-ca.pem         copy of --ca, when given
 *
 * All or nothing: everything is made in a private staging directory next to
 * OUT (same filesystem), and the staging directory is renamed to OUT only
 * once the cloud has granted the claim and the config validates. Any failure
 * (bad code, broker down, TLS, region, a crash) removes the staging directory,
 * so there is never a key without a config or a config without a key. OUT
 * must not exist or be empty (rename(2) replaces an empty directory): an
 * existing device's keys are never touched.
 */
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { dump as toYaml } from 'js-yaml';
import { AGENT_VERSION } from '../agent/version.js';
import { validateConfig } from '../config/load.js';
import type { Config, ConfigInput, Region } from '../config/schema.js';
import { claimExchange, newClaimNonce } from '../link/claim.js';
import { TallyboxError, errorMessage } from '../util/errors.js';
import { isInsideReal, syncDir, writePrivateFileAtomic } from '../util/private-fs.js';
import { DEFAULT_IDENTITY_FILE, DEFAULT_KEK_FILE, provisionKeyFiles } from '../vault/keys.js';
import { verifyClaimResponse, type ClaimGrant } from './response.js';
import { trustAnchors, type CloudKey } from './trust.js';

export const CONFIG_FILE = 'tallybox.yaml';
export const CA_FILE = 'broker-ca.pem';

export interface ClaimProvisionOptions {
  claimCode: string;
  region: Region;
  brokerUrl: string;
  caFile?: string;
  outDir: string;
  /** Where the agent keeps its databases (default /var/lib/tallybox); not inside outDir. */
  dataDir?: string;
  cloudKey?: CloudKey;
  /** Lab and tests: a broker on this machine (broker.allowLoopback in the config). */
  allowLoopback?: boolean;
  /** file: the agent reads OUT's key files; systemd-credentials: the unit loads them (LoadCredential=). */
  keyProvider?: 'file' | 'systemd-credentials';
  /** Enable the loopback punch API on this port. */
  punchApiPort?: number;
  timeoutMs?: number;
}

export interface ClaimProvisionResult {
  configFile: string;
  grant: ClaimGrant;
  keyId: string;
  kekFile: string;
  identityFile: string;
}

const CODE = /^[A-Za-z0-9][A-Za-z0-9-]{3,63}$/;

function checkOutDir(out: string): void {
  let names: string[];
  try {
    const st = lstatSync(out);
    if (!st.isDirectory()) throw new TallyboxError('PROVISION_OUT_EXISTS', `--out ${out} exists and is not a directory`, { path: out });
    names = readdirSync(out);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (names.length > 0) {
    throw new TallyboxError(
      'PROVISION_OUT_EXISTS',
      `--out ${out} is not empty (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''}); a provisioned device's keys are never replaced: choose an empty directory, or move the old one away first`,
      { path: out },
    );
  }
}

export async function provisionByClaim(opts: ClaimProvisionOptions): Promise<ClaimProvisionResult> {
  if (!CODE.test(opts.claimCode)) throw new TallyboxError('CONFIG_INVALID', `--claim must be the code the cloud issued (4-64 letters, digits and '-'), got "${opts.claimCode}"`);
  const out = resolve(opts.outDir);
  const dataDir = resolve(opts.dataDir ?? '/var/lib/tallybox');
  if (isInsideReal(dataDir, out) || isInsideReal(out, dataDir)) {
    throw new TallyboxError('KEY_FILE_IN_DATA_DIR', `--out ${out} and the data directory ${dataDir} must be apart: a copy of the data directory must not carry the key`);
  }
  const anchors = trustAnchors(opts.region, opts.cloudKey);
  checkOutDir(out);
  const caPem = opts.caFile !== undefined ? readCa(opts.caFile) : undefined;
  const final = {
    kekFile: join(out, DEFAULT_KEK_FILE),
    identityFile: join(out, DEFAULT_IDENTITY_FILE),
    configFile: join(out, CONFIG_FILE),
    caFile: join(out, CA_FILE),
  };
  const broker: ConfigInput['broker'] = {
    url: opts.brokerUrl,
    ...(opts.allowLoopback ? { allowLoopback: true } : {}),
    ...(caPem ? { tls: { caFile: final.caFile } } : {}),
  };
  // The broker settings are checked by the real schema (and region pinning) before any key exists.
  const brokerConfig = validateConfig(
    draftConfig({ deviceId: 'unclaimed', kind: 'sim', orgId: 'unclaimed', servedOrgs: ['unclaimed'], commandKey: { id: 'x', publicKey: Buffer.alloc(32).toString('base64') }, signedBy: '' }, opts, broker, final, dataDir),
    'provisioning arguments',
  ).broker;
  const stagedTls = caPem ? { ...brokerConfig, tls: { ...brokerConfig.tls, rejectUnauthorized: true, caFile: resolve(opts.caFile!) } } : brokerConfig;

  mkdirSync(dirname(out), { recursive: true, mode: 0o755 });
  const stage = join(dirname(out), `.${basename(out)}.claim-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(stage, { mode: 0o700 });
  try {
    const keys = await provisionKeyFiles({ kekPath: join(stage, DEFAULT_KEK_FILE), identityPath: join(stage, DEFAULT_IDENTITY_FILE), dataDir });
    const devicePublicKey = rawEd25519(keys.publicKeyPem);
    const nonceHex = newClaimNonce();
    const grant = await claimExchange({
      broker: stagedTls,
      region: opts.region,
      request: { claimCode: opts.claimCode, region: opts.region, devicePublicKeyBase64: devicePublicKey.toString('base64'), nonceHex, sentAtMs: Date.now(), agentVersion: AGENT_VERSION },
      verify: (payload) => verifyClaimResponse(payload, { anchors, nonceHex, devicePublicKey, region: opts.region }),
      timeoutMs: opts.timeoutMs ?? 15_000,
    });
    const config = draftConfig(grant, opts, broker, final, dataDir);
    validateConfig(config, 'the config made from the claim'); // never write a config the agent would refuse
    if (caPem) writePrivateFileAtomic(join(stage, CA_FILE), caPem);
    writePrivateFileAtomic(join(stage, CONFIG_FILE), `# Written by tallybox provision --claim (device ${grant.deviceId}); see README "Configuration".\n${toYaml(config)}`);
    syncDir(stage);
    // The commit point: one rename makes keys and config appear together.
    renameSync(stage, out);
    syncDir(dirname(out));
    return { configFile: final.configFile, grant, keyId: keys.keyId, kekFile: final.kekFile, identityFile: final.identityFile };
  } catch (err) {
    rmSync(stage, { recursive: true, force: true });
    throw err;
  }
}

function readCa(file: string): Buffer {
  try {
    const pem = readFileSync(file);
    if (!pem.toString('latin1').includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return pem;
  } catch (err) {
    throw new TallyboxError('CONFIG_INVALID', `--ca ${file}: ${errorMessage(err)}`);
  }
}

function rawEd25519(spkiPem: string): Buffer {
  // SPKI DER of an Ed25519 key is a fixed 12-byte header followed by the 32-byte key.
  const der = Buffer.from(spkiPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  return der.subarray(der.length - 32);
}

function draftConfig(grant: ClaimGrant, opts: ClaimProvisionOptions, broker: ConfigInput['broker'], final: { kekFile: string; identityFile: string }, dataDir: string): ConfigInput {
  const vault: NonNullable<ConfigInput['vault']> = opts.keyProvider === 'systemd-credentials' ? { keyProvider: 'systemd-credentials' } : { keyProvider: 'file', kekFile: final.kekFile, identityFile: final.identityFile };
  return {
    version: 1,
    device: { id: grant.deviceId, kind: grant.kind, orgId: grant.orgId, servedOrgs: grant.servedOrgs },
    region: opts.region,
    dataDir,
    broker,
    vault,
    cloud: { commandKeys: [grant.commandKey] },
    ...(opts.punchApiPort !== undefined ? { punchApi: { enabled: true, port: opts.punchApiPort } } : {}),
  } satisfies ConfigInput;
}

export type { Config };
