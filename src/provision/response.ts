/**
 * Checks a claim response before anything is written: signed by a trusted
 * cloud key (over "tallybox.v1.ClaimResponse\0" + body), for THIS request
 * (nonce and device public key echoed), for the region asked for, and a
 * complete grant. A signed refusal becomes its own coded error, marked
 * `signed` so the exchange stops waiting; anything else that fails is
 * CLAIM_RESPONSE_INVALID and the exchange keeps waiting for the real answer.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { REGIONS, type Region } from '../config/schema.js';
import { pb } from '../proto/index.js';
import { TallyboxError, errorMessage } from '../util/errors.js';
import type { CloudKey } from './trust.js';

export const CLAIM_RESPONSE_DOMAIN = Buffer.from('tallybox.v1.ClaimResponse\0', 'latin1');

/** Codes the cloud may refuse a claim with; anything else is reported as CLAIM_REFUSED. */
const REFUSALS = new Set(['CLAIM_CODE_UNKNOWN', 'CLAIM_CODE_USED', 'CLAIM_CODE_EXPIRED', 'REGION_MISMATCH', 'CLAIM_INVALID']);
const KINDS = new Set(['m1', 'm2', 'c1', 'p1', 'sim']);
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export interface ClaimGrant {
  deviceId: string;
  kind: 'm1' | 'm2' | 'c1' | 'p1' | 'sim';
  orgId: string;
  servedOrgs: string[];
  commandKey: { id: string; publicKey: string };
  /** Which trusted key signed the response. */
  signedBy: string;
}

export function ed25519FromRaw(b64: string): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(b64, 'base64').toString('base64url') }, format: 'jwk' });
}

function invalid(msg: string): TallyboxError {
  return new TallyboxError('CLAIM_RESPONSE_INVALID', `claim response refused: ${msg}`);
}

export function verifyClaimResponse(payload: Buffer, expect: { anchors: readonly CloudKey[]; nonceHex: string; devicePublicKey: Buffer; region: Region }): ClaimGrant {
  let signed: ReturnType<typeof pb.SignedClaimResponse.decode>;
  let body: ReturnType<typeof pb.ClaimResponseBody.decode>;
  try {
    signed = pb.SignedClaimResponse.decode(payload);
  } catch (err) {
    throw invalid(`not a SignedClaimResponse (${errorMessage(err)})`);
  }
  const anchor = expect.anchors.find((k) => k.id === signed.keyId) ?? (expect.anchors.length === 1 ? expect.anchors[0] : undefined);
  if (!anchor) throw invalid(`signed with key "${signed.keyId}", which this device does not trust`);
  const sig = Buffer.from(signed.signature);
  if (sig.length !== 64 || !verify(null, Buffer.concat([CLAIM_RESPONSE_DOMAIN, Buffer.from(signed.body)]), ed25519FromRaw(anchor.publicKey), sig)) {
    throw invalid(`the signature does not verify with the trusted cloud key ${anchor.id} (forged, or another cloud's)`);
  }
  try {
    body = pb.ClaimResponseBody.decode(signed.body);
  } catch (err) {
    throw invalid(`signed body is not a ClaimResponseBody (${errorMessage(err)})`);
  }
  if (Buffer.from(body.nonce).toString('hex') !== expect.nonceHex || !Buffer.from(body.devicePublicKey).equals(expect.devicePublicKey)) {
    throw invalid('it answers another request (nonce or device key differ): a replayed response');
  }
  if (body.errorCode) {
    const code = REFUSALS.has(body.errorCode) ? body.errorCode : 'CLAIM_REFUSED';
    throw new TallyboxError(code, `the cloud refused the claim: ${body.errorMessage || body.errorCode}`, { signed: true, cloudCode: body.errorCode });
  }
  if (body.region !== expect.region || !(REGIONS as readonly string[]).includes(body.region)) {
    throw new TallyboxError('REGION_MISMATCH', `the claim was granted for region "${body.region}", but this device is being provisioned for ${expect.region}`, { signed: true });
  }
  if (!ID.test(body.deviceId) || !ID.test(body.orgId) || !KINDS.has(body.deviceKind)) throw invalid(`incomplete grant (device "${body.deviceId}", kind "${body.deviceKind}", org "${body.orgId}")`);
  const served = body.servedOrgs.length > 0 ? [...body.servedOrgs] : [body.orgId];
  if (served.length > 64 || !served.every((o) => ID.test(o))) throw invalid('served organisations are not valid ids');
  if (Buffer.from(body.commandPublicKey).length !== 32 || !ID.test(body.commandKeyId)) throw invalid('no valid command key in the grant');
  return {
    deviceId: body.deviceId,
    kind: body.deviceKind as ClaimGrant['kind'],
    orgId: body.orgId,
    servedOrgs: served,
    commandKey: { id: body.commandKeyId, publicKey: Buffer.from(body.commandPublicKey).toString('base64') },
    signedBy: anchor.id,
  };
}
