/**
 * Record encryption for the vault: AES-256-GCM with a fresh random 96-bit
 * nonce per write and the record's identity bound as additional authenticated
 * data (privacy rule 2). A ciphertext copied into another row, sealed under
 * another key version, or flipped by a single bit fails authentication.
 *
 * Sealed format (one BLOB): [0x01 format][12-byte nonce][ciphertext][16-byte tag].
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomFillSync } from 'node:crypto';
import { TallyboxError } from '../util/errors.js';

export const KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
const FORMAT_V1 = 0x01;
const HEADER_BYTES = 1 + NONCE_BYTES;
export const SEAL_OVERHEAD = HEADER_BYTES + TAG_BYTES;

/** What a sealed blob is; part of the AAD so a name can never be read back as a template. */
export type RecordKind = 'subject.name' | 'consent.evidence' | 'template' | 'dek.wrap' | 'kek.check' | 'print.job-key';

/** The identity of a record, bound into every ciphertext as AAD. */
export interface AadParts {
  kind: RecordKind;
  orgId: string;
  subjectId: string;
  recordId: string;
  keyVersion: number;
  /**
   * More of the record's plain metadata to bind (a template's modality and
   * slot). Appended after the fixed fields, so records sealed without any keep
   * their exact AAD, and a value moved between fields cannot match.
   */
  bound?: readonly string[];
}

/**
 * Nonces come from the CSPRNG in 4 KiB refills: one syscall per ~340 writes
 * instead of one per write. Each nonce is a fresh slice that is never handed
 * out twice (the offset only moves forward), and a copy is returned so no
 * caller can observe the pool being refilled.
 */
const NONCE_POOL = Buffer.alloc(NONCE_BYTES * 341);
let noncePoolOffset = NONCE_POOL.length;

export function freshNonce(): Buffer {
  if (noncePoolOffset + NONCE_BYTES > NONCE_POOL.length) {
    randomFillSync(NONCE_POOL);
    noncePoolOffset = 0;
  }
  const out = Buffer.from(NONCE_POOL.subarray(noncePoolOffset, noncePoolOffset + NONCE_BYTES));
  // Wipe the handed-out bytes so the pool never holds a used nonce.
  NONCE_POOL.fill(0, noncePoolOffset, noncePoolOffset + NONCE_BYTES);
  noncePoolOffset += NONCE_BYTES;
  return out;
}

/**
 * Length-prefixed encoding: "a|bc" and "ab|c" must not produce the same AAD,
 * so every field is written as a 2-byte length followed by its UTF-8 bytes.
 */
export function encodeAad(p: AadParts): Buffer {
  const fields = ['tallybox.v1', p.kind, p.orgId, p.subjectId, p.recordId, String(p.keyVersion), ...(p.bound ?? [])];
  let total = 0;
  for (const f of fields) total += 2 + Buffer.byteLength(f, 'utf8');
  // One allocation: this runs once per record on every start-up decrypt.
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (const f of fields) {
    const len = out.write(f, at + 2, 'utf8');
    if (len > 0xffff) throw new TallyboxError('INVALID_ARGUMENT', 'INVALID_ARGUMENT: AAD field longer than 65535 bytes');
    out.writeUInt16BE(len, at);
    at += 2 + len;
  }
  return out;
}

function checkKey(key: Buffer): void {
  if (key.length !== KEY_BYTES) {
    throw new TallyboxError('INVALID_KEY', `INVALID_KEY: AES-256 key must be ${KEY_BYTES} bytes, got ${key.length}`);
  }
}

/** Encrypt `plaintext` under `key`, binding `aad`. Every call draws a fresh nonce. */
export function seal(key: Buffer, plaintext: Uint8Array, aad: AadParts | Buffer, nonce: Buffer = freshNonce()): Buffer {
  checkKey(key);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.isBuffer(aad) ? aad : encodeAad(aad));
  const body = cipher.update(plaintext);
  const final = cipher.final();
  return Buffer.concat([Buffer.of(FORMAT_V1), nonce, body, final, cipher.getAuthTag()]);
}

/**
 * Decrypt a sealed blob. Any mismatch (wrong key, AAD of another row, tampered
 * byte, truncation) is DECRYPT_FAILED: GCM cannot tell these apart, and the
 * caller decides whether to quarantine.
 */
export function unseal(key: Buffer, sealed: Uint8Array, aad: AadParts | Buffer): Buffer {
  checkKey(key);
  const buf = Buffer.isBuffer(sealed) ? sealed : Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (buf.length < SEAL_OVERHEAD || buf[0] !== FORMAT_V1) {
    throw new TallyboxError('DECRYPT_FAILED', `DECRYPT_FAILED: sealed blob is malformed (${buf.length} bytes, format byte ${buf[0] ?? 'none'})`);
  }
  const nonce = buf.subarray(1, HEADER_BYTES);
  const tag = buf.subarray(buf.length - TAG_BYTES);
  const body = buf.subarray(HEADER_BYTES, buf.length - TAG_BYTES);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.isBuffer(aad) ? aad : encodeAad(aad));
    decipher.setAuthTag(tag);
    const out = decipher.update(body);
    const rest = decipher.final(); // empty for GCM, but final() is what checks the tag
    return rest.length === 0 ? out : Buffer.concat([out, rest]);
  } catch (err) {
    throw new TallyboxError('DECRYPT_FAILED', 'DECRYPT_FAILED: authentication failed (ciphertext tampered, copied from another record, or sealed under another key)', {}, { cause: err });
  }
}

/**
 * Purposes a data key is split into: no key serves two purposes.
 * row-integrity keys the MACs that bind plain metadata columns (minor, consent
 * kind and time, credential owner, template modality) to their row.
 */
export type KeyPurpose = 'templates' | 'identity' | 'credential-lookup' | 'face-transform' | 'row-integrity';

/** HKDF-SHA256 sub-key of an organisation's data key for one purpose. */
export function deriveSubKey(dek: Buffer, orgId: string, keyVersion: number, purpose: KeyPurpose): Buffer {
  checkKey(dek);
  return Buffer.from(hkdfSync('sha256', dek, `tallybox.v1 org ${orgId}`, `tallybox.v1/${purpose}/v${keyVersion}`, KEY_BYTES));
}

/** HKDF-SHA256 sub-key of the device KEK (only ever used to wrap data keys and check the KEK). */
export function deriveKekWrapKey(kek: Buffer): Buffer {
  checkKey(kek);
  return Buffer.from(hkdfSync('sha256', kek, 'tallybox.v1 kek', 'tallybox.v1/dek-wrap', KEY_BYTES));
}
