/**
 * The decommission receipt: one per device retirement, signed with the
 * device identity key before that key is destroyed. Counts, org ids, key
 * versions and the scan result: no personal data. Same envelope as erasure
 * receipts ({alg, keyId, body, signature}), another domain string, so a
 * signature over one can never pass as the other.
 */
import { createPublicKey, verify as edVerify, type KeyObject } from 'node:crypto';
import { TallyboxError } from '../util/errors.js';
import type { ReceiptSigner, SignedErasureReceipt } from '../privacy/receipt.js';
import type { SampleLabel } from '../privacy/types.js';

export const DECOMMISSION_RECEIPT_TYPE = 'tallybox.v1.DecommissionReceipt';
export const DECOMMISSION_RECEIPT_DOMAIN = 'tallybox.v1.DecommissionReceipt\0';

export interface DecommissionReceipt {
  type: typeof DECOMMISSION_RECEIPT_TYPE;
  v: 1;
  receiptId: string;
  decommissionId: string;
  deviceId: string;
  keyId: string;
  requestRef: string;
  /** true only when every org purge verified and the final scan found nothing. */
  ok: boolean;
  verification: 'verified' | 'failed' | 'unverified';
  problem?: string;
  /** Resumed after an interruption at least once. */
  resumed: boolean;
  orgs: Array<{ orgId: string; held: Record<string, number>; counts?: Record<string, number>; keyVersionsDestroyed: number[]; verification?: string; problem?: string; purgeReceiptId?: string; undeliveredPunches: number }>;
  commandJournalRowsErased: number;
  outbox: { punchesDelivered: number; punchesUndelivered: number; resultsUndelivered: number };
  /** Byte scan over every file left in the data and key directories. */
  scan: { ok: boolean; samples: number; hits: number; hitsByLabel: Partial<Record<SampleLabel, number>>; files: number; filesWithHits: string[]; bytesScanned: number };
  /** Destroyed right after this receipt is handed over (the marker records the outcome). */
  keysToDestroy: string[];
  startedAtMs: number;
  signedAtMs: number;
}

function bytes(body: string): Buffer {
  return Buffer.concat([Buffer.from(DECOMMISSION_RECEIPT_DOMAIN, 'utf8'), Buffer.from(body, 'utf8')]);
}

export function signDecommissionReceipt(r: DecommissionReceipt, signer: ReceiptSigner): SignedErasureReceipt {
  const body = JSON.stringify(r);
  return { alg: 'Ed25519', keyId: signer.keyId, body, signature: signer.sign(bytes(body)).toString('base64') };
}

/** Verify against the device public key (SPKI PEM or KeyObject); RECEIPT_INVALID on any mismatch. */
export function verifyDecommissionReceipt(signed: SignedErasureReceipt, publicKey: KeyObject | string): DecommissionReceipt {
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  if (signed?.alg !== 'Ed25519' || typeof signed.body !== 'string' || typeof signed.signature !== 'string') throw new TallyboxError('RECEIPT_INVALID', 'not an Ed25519 signed receipt');
  const sig = Buffer.from(signed.signature, 'base64');
  if (sig.length !== 64 || !edVerify(null, bytes(signed.body), key, sig)) throw new TallyboxError('RECEIPT_INVALID', 'the signature does not verify with the given device public key');
  const r = JSON.parse(signed.body) as DecommissionReceipt;
  if (r.type !== DECOMMISSION_RECEIPT_TYPE || r.v !== 1 || r.keyId !== signed.keyId) throw new TallyboxError('RECEIPT_INVALID', `unexpected receipt type/version/keyId (${String(r.type)})`);
  return r;
}
