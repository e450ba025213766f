/**
 * The cloud's command signer: an Ed25519 key pair (node:crypto), and the
 * exact signing rule the device verifies — signature over the domain string
 * "tallybox.v1.SignedCommand\0" followed by the serialised CommandBody.
 */
import { createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { pb, type CommandBodyProps } from '../../src/proto/index.js';

export const COMMAND_SIGNING_DOMAIN = Buffer.from('tallybox.v1.SignedCommand\0', 'latin1');

export class CommandSigner {
  readonly publicKey: KeyObject;
  private readonly privateKey: KeyObject;
  private counter: number;

  constructor(opts: { keyId?: string; startCounter?: number; privateKey?: KeyObject } = {}) {
    const privateKey = opts.privateKey ?? generateKeyPairSync('ed25519').privateKey;
    this.publicKey = createPublicKey(privateKey);
    this.privateKey = privateKey;
    this.keyId = opts.keyId ?? 'cloud-1';
    this.counter = opts.startCounter ?? Date.now();
  }

  readonly keyId: string;

  /** The same key signs claim responses (simulators/cloud/claims.ts): the emulator is one cloud with one key. */
  privateKeyForClaims(): KeyObject {
    return this.privateKey;
  }

  /** Counter of the last command signed (to match its result). */
  get lastCounter(): number {
    return this.counter;
  }

  /** Raw 32-byte public key, base64 — the value pinned in a device config. */
  publicKeyBase64(): string {
    const jwk = this.publicKey.export({ format: 'jwk' });
    return Buffer.from(jwk.x ?? '', 'base64url').toString('base64');
  }

  /** Fill in the envelope fields a caller did not set, sign, and serialise. */
  sign(body: CommandBodyProps, ttlMs = 60_000): Buffer {
    const now = Date.now();
    const full: CommandBodyProps = {
      issuedAtMs: now,
      expiresAtMs: now + ttlMs,
      nonce: randomBytes(16),
      counter: ++this.counter,
      ...body,
    };
    return this.signBytes(pb.CommandBody.encode(full).finish());
  }

  /** Sign arbitrary body bytes as they are (tests: a correctly signed body that is not a valid CommandBody). */
  signBytes(bodyBytes: Uint8Array): Buffer {
    const signature = sign(null, Buffer.concat([COMMAND_SIGNING_DOMAIN, bodyBytes]), this.privateKey);
    return Buffer.from(pb.SignedCommand.encode({ body: bodyBytes, signature, keyId: this.keyId }).finish());
  }
}
