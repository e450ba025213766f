/**
 * Erasure receipts: what was erased, how it was verified, signed with the
 * device's Ed25519 identity key. A receipt carries counts, key versions and the
 * scan result: never a subject id, a name or any other personal data (the
 * cloud correlates a receipt with its command through `requestRef`).
 *
 * The signature covers the exact UTF-8 bytes of `body`, prefixed with a domain
 * string, so a signature made by the device for anything else never verifies
 * as a receipt, and verification needs no JSON canonicalisation.
 */
import { createPublicKey, verify as edVerify, type KeyObject } from 'node:crypto';
import { TallyboxError } from '../util/errors.js';
import type { SampleLabel } from './types.js';

export const RECEIPT_DOMAIN = 'tallybox.v1.ErasureReceipt\0';
export const RECEIPT_TYPE = 'tallybox.v1.ErasureReceipt';

export type ErasureKind = 'org_withdrawal' | 'subject_erasure' | 'retention' | 'print_job';
export type Verification = 'verified' | 'failed' | 'unverified';

export interface ParticipantSummary {
  name: string;
  ok: boolean;
  counts: Record<string, number>;
}

export interface ErasureReceipt {
  type: typeof RECEIPT_TYPE;
  v: 1;
  receiptId: string;
  deviceId: string;
  /** Identity key that signed this receipt (see DeviceIdentity.keyId). */
  keyId: string;
  kind: ErasureKind;
  /** Organisations are not personal data; the cloud needs to know whose data went. */
  orgId: string;
  requestRef: string | null;
  /** true only when every step succeeded and the scan found zero fragments with real evidence (verification 'verified'). */
  ok: boolean;
  /**
   * verified: every step done, scanned for fingerprints of everything erased, nothing found.
   * failed: a participant failed or fragments were found (the purge stays journalled and is retried).
   * unverified: no evidence to scan for (e.g. rows erased but no fingerprints survived), so
   * nothing can be claimed; never reported as ok.
   */
  verification: Verification;
  /** Why it is not verified: PARTICIPANT_FAILED, FRAGMENTS_FOUND, NO_SAMPLES, FINGERPRINTS_MISSING, FINGERPRINTS_CORRUPT, FINGERPRINT_KEY_MISMATCH. */
  problem?: string;
  /** true when this purge was resumed after an interruption (power loss). */
  resumed: boolean;
  counts: Record<string, number>;
  keyVersionsDestroyed: number[];
  participants: ParticipantSummary[];
  scan: {
    ok: boolean;
    samples: number;
    hits: number;
    hitsByLabel: Partial<Record<SampleLabel, number>>;
    files: number;
    bytesScanned: number;
    passes: number;
  };
  startedAtMs: number;
  finishedAtMs: number;
  durationMs: number;
  /** Where the time went (the performance budget is reported per step). */
  timingsMs: { erase: number; participants: number; compact: number; scan: number };
}

export interface SignedErasureReceipt {
  alg: 'Ed25519';
  keyId: string;
  /** The receipt as JSON text: exactly the bytes that were signed (after the domain prefix). */
  body: string;
  /** base64 Ed25519 signature over RECEIPT_DOMAIN + body. */
  signature: string;
}

/** Anything that signs with the device identity key (vault's DeviceIdentity fits). */
export interface ReceiptSigner {
  readonly keyId: string;
  sign(data: Buffer): Buffer;
}

function signedBytes(body: string): Buffer {
  return Buffer.concat([Buffer.from(RECEIPT_DOMAIN, 'utf8'), Buffer.from(body, 'utf8')]);
}

export function signReceipt(receipt: ErasureReceipt, signer: ReceiptSigner): SignedErasureReceipt {
  const body = JSON.stringify(receipt);
  return { alg: 'Ed25519', keyId: signer.keyId, body, signature: signer.sign(signedBytes(body)).toString('base64') };
}

/**
 * Verify a signed receipt against the device's public key (KeyObject or SPKI
 * PEM) and return the parsed receipt. Throws RECEIPT_INVALID on any mismatch.
 */
export function verifyErasureReceipt(signed: SignedErasureReceipt, publicKey: KeyObject | string): ErasureReceipt {
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  if (signed.alg !== 'Ed25519' || typeof signed.body !== 'string' || typeof signed.signature !== 'string') {
    throw new TallyboxError('RECEIPT_INVALID', 'RECEIPT_INVALID: not an Ed25519 signed erasure receipt');
  }
  const sig = Buffer.from(signed.signature, 'base64');
  if (sig.length !== 64 || !edVerify(null, signedBytes(signed.body), key, sig)) {
    throw new TallyboxError('RECEIPT_INVALID', 'RECEIPT_INVALID: signature does not verify with the given device public key');
  }
  let receipt: ErasureReceipt;
  try {
    receipt = JSON.parse(signed.body) as ErasureReceipt;
  } catch (err) {
    throw new TallyboxError('RECEIPT_INVALID', 'RECEIPT_INVALID: signed body is not JSON', {}, { cause: err });
  }
  if (receipt.type !== RECEIPT_TYPE || receipt.v !== 1 || receipt.keyId !== signed.keyId) {
    throw new TallyboxError('RECEIPT_INVALID', `RECEIPT_INVALID: unexpected receipt type/version/keyId (${String(receipt.type)} v${String(receipt.v)})`);
  }
  return receipt;
}
