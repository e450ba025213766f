/**
 * Command results, signed with the device's Ed25519 identity key.
 *
 * Signing rule: Ed25519 over RESULT_SIGNING_DOMAIN ("tallybox.v1.CommandResult\0")
 * followed by the CommandResult encoded with its `signature` field (15) empty.
 * The device encodes the result once, signs those exact bytes, and the signature
 * is field 15 (the highest field number, so protobufjs writes it last).
 *
 * Verification of *bytes* is byte-exact: every field-15 entry is removed at the
 * wire level and the remaining bytes are verified as they are, so a verifier
 * never depends on re-encoding a decoded message the same way (unknown fields,
 * field order, default values). Verification of *props* (an object the device
 * handed to publishResult) re-encodes them without the signature, which is how
 * the device produced the signed bytes.
 */
import { createPublicKey, verify as edVerify, type KeyObject } from 'node:crypto';
import protobuf from 'protobufjs/minimal.js';
import { pb, type CommandResultProps } from '../../proto/index.js';

export const RESULT_SIGNING_DOMAIN = Buffer.from('tallybox.v1.CommandResult\0', 'latin1');
const SIGNATURE_FIELD = 15;

/** The bytes a device signs for a result: the domain, then the result encoded without a signature. */
export function resultSigningBytes(result: CommandResultProps): Buffer {
  const { signature: _omit, ...unsigned } = result;
  return Buffer.concat([RESULT_SIGNING_DOMAIN, pb.CommandResult.encode(unsigned).finish()]);
}

/**
 * Remove every field-15 entry from an encoded CommandResult, returning the
 * remaining bytes untouched, and the (last) signature found. Throws on bytes
 * that are not a well-formed protobuf message.
 */
export function splitResultSignature(bytes: Uint8Array): { unsigned: Buffer; signature: Uint8Array | undefined } {
  const r = protobuf.Reader.create(bytes);
  const keep: Buffer[] = [];
  let signature: Uint8Array | undefined;
  while (r.pos < r.len) {
    const start = r.pos;
    const tag = r.uint32();
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === 0) throw new RangeError('field number 0');
    if (field === SIGNATURE_FIELD && wireType === 2) {
      signature = r.bytes();
      continue;
    }
    r.skipType(wireType);
    keep.push(Buffer.from(bytes.subarray(start, r.pos)));
  }
  return { unsigned: Buffer.concat(keep), signature };
}

/** A raw 32-byte Ed25519 public key (bytes or base64), or a KeyObject. */
export type Ed25519PublicKey = KeyObject | Uint8Array | string;

/** Build a KeyObject from a raw 32-byte Ed25519 key; throws on anything else. */
export function ed25519PublicKey(key: Ed25519PublicKey): KeyObject {
  if (typeof key === 'object' && !(key instanceof Uint8Array)) return key;
  const raw = typeof key === 'string' ? Buffer.from(key, 'base64') : Buffer.from(key);
  if (raw.length !== 32) throw new RangeError(`an Ed25519 public key is 32 bytes, got ${raw.length}`);
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
}

/**
 * True when `result` (encoded bytes, or the props the device published) carries
 * a valid Ed25519 signature by `publicKey` under the result-signing rule.
 * Never throws: anything malformed is simply not verified.
 */
export function verifyCommandResult(result: Uint8Array | CommandResultProps, publicKey: Ed25519PublicKey): boolean {
  try {
    const key = ed25519PublicKey(publicKey);
    let signed: Buffer;
    let signature: Uint8Array | null | undefined;
    if (result instanceof Uint8Array) {
      const split = splitResultSignature(result);
      signed = Buffer.concat([RESULT_SIGNING_DOMAIN, split.unsigned]);
      signature = split.signature;
    } else {
      signed = resultSigningBytes(result);
      signature = result.signature;
    }
    if (!signature || signature.length !== 64) return false;
    return edVerify(null, signed, key, signature);
  } catch {
    return false;
  }
}
