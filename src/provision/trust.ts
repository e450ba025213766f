/**
 * How a device knows the cloud's key before it has a config: the claim
 * response must be signed by a key the device already trusts, or anyone on
 * the LAN (or on a broker they control) could answer the claim with their own
 * command key and own the device.
 *
 * Two trust anchors, in this order:
 * 1. `--cloud-key ID:BASE64` (or BASE64 alone): the command-signing public key
 *    the installer copied from the cloud console next to the claim code (the
 *    emulator prints it and returns it from POST /api/claims). Always wins.
 * 2. The region's compiled-in keys below: a release build of the agent carries
 *    the production cloud's keys for cn and sg, so a shipped image needs no
 *    extra argument. This source tree carries none (the production private
 *    keys are not ours to mint); without --cloud-key it refuses to claim
 *    (CLAIM_TRUST_ANCHOR_MISSING) rather than trust whoever answers.
 */
import type { Region } from '../config/schema.js';
import { TallyboxError } from '../util/errors.js';

export interface CloudKey {
  id: string;
  /** Raw 32-byte Ed25519 public key, base64 (the format of cloud.commandKeys). */
  publicKey: string;
}

/** Filled in by the release build for each region's production claim service. */
export const REGION_CLAIM_KEYS: Readonly<Record<Region, readonly CloudKey[]>> = {
  cn: [],
  sg: [],
};

const B64_KEY = /^[A-Za-z0-9+/]{43}=$/;

/** `ID:BASE64` or `BASE64` (id "cloud"). */
export function parseCloudKey(arg: string): CloudKey {
  const i = arg.lastIndexOf(':');
  const [id, key] = i > 0 ? [arg.slice(0, i), arg.slice(i + 1)] : ['cloud', arg];
  if (!B64_KEY.test(key) || !/^[A-Za-z0-9_.-]{1,64}$/.test(id)) {
    throw new TallyboxError('CONFIG_INVALID', `--cloud-key must be ID:BASE64 or BASE64, the raw 32-byte Ed25519 public key in base64 (44 characters), got "${arg}"`);
  }
  return { id, publicKey: key };
}

export function trustAnchors(region: Region, pinned: CloudKey | undefined): CloudKey[] {
  if (pinned) return [pinned];
  const compiled = REGION_CLAIM_KEYS[region];
  if (compiled.length === 0) {
    throw new TallyboxError('CLAIM_TRUST_ANCHOR_MISSING', `this build carries no cloud key for region ${region}; pass --cloud-key ID:BASE64 (the command key shown with the claim code) so that only the cloud can answer the claim`, {
      region,
    });
  }
  return [...compiled];
}
