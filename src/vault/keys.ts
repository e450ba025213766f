/**
 * Device keys: the key-encryption key (KEK) that wraps every organisation's
 * data key, and the device's Ed25519 identity key that signs erasure receipts.
 * Neither lives in a database (privacy rule 2): the default provider reads
 * files outside the data directory, the systemd provider reads
 * $CREDENTIALS_DIRECTORY (LoadCredential= / LoadCredentialEncrypted=).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as edSign, type KeyObject } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, open, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { TallyboxError, errorMessage } from '../util/errors.js';
import { isInsideReal, secretFileProblem } from '../util/private-fs.js';
import { KEY_BYTES } from './crypto.js';

export const DEFAULT_KEK_FILE = 'tallybox.kek';
export const DEFAULT_IDENTITY_FILE = 'device-identity.pem';
export const SYSTEMD_KEK_CREDENTIAL = 'tallybox-kek';
export const SYSTEMD_IDENTITY_CREDENTIAL = 'tallybox-identity';

/** The device's Ed25519 identity: signs receipts and results. */
export class DeviceIdentity {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** SPKI PEM of the public key: what the cloud pins. */
  readonly publicKeyPem: string;
  /** First 16 hex digits of SHA-256 over the SPKI DER: names the key in receipts. */
  readonly keyId: string;

  constructor(opts: { privateKey: KeyObject }) {
    if (opts.privateKey.asymmetricKeyType !== 'ed25519') {
      throw new TallyboxError('IDENTITY_KEY_INVALID', `IDENTITY_KEY_INVALID: device identity key must be ed25519, got ${opts.privateKey.asymmetricKeyType ?? 'unknown'}`);
    }
    this.privateKey = opts.privateKey;
    this.publicKey = createPublicKey(opts.privateKey);
    this.publicKeyPem = this.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    this.keyId = publicKeyId(this.publicKey);
  }

  static fromPem(pem: string | Buffer, source: string): DeviceIdentity {
    let key: KeyObject;
    try {
      key = createPrivateKey(pem);
    } catch (err) {
      throw new TallyboxError('IDENTITY_KEY_INVALID', `IDENTITY_KEY_INVALID: ${source} is not a PEM private key`, { source }, { cause: err });
    }
    return new DeviceIdentity({ privateKey: key });
  }

  sign(data: Buffer): Buffer {
    return edSign(null, data, this.privateKey);
  }
}

export function publicKeyId(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex')
    .slice(0, 16);
}

export interface KekContext {
  /** The directory holding the databases: the KEK must not be inside it. */
  dataDir: string;
}

/** Where the device keys come from. One implementation per storage mechanism. */
export interface KeyProvider {
  /** 'file' | 'systemd-credentials' | …, for `tallybox doctor`. */
  readonly kind: string;
  /** Load the 32-byte KEK, refusing insecure storage with a clear error. */
  loadKek(ctx: KekContext): Promise<Buffer>;
  loadDeviceIdentity(): Promise<DeviceIdentity>;
  /**
   * Destroy the KEK where it is stored (tamper response): every sealed record
   * on the device becomes unreadable for good. Throws KEY_ZEROISE_UNSUPPORTED
   * where the storage is read-only (systemd credentials).
   */
  zeroiseKek(): Promise<void>;
}

/** By real path: a symlink in the key's path or in the data directory's does not hide a key inside it. */
const isInside = isInsideReal;

/**
 * Read a secret file after checking, on the open descriptor (no race between
 * check and read), that it is a regular file readable by its owner only.
 */
async function readSecretFile(path: string, what: string, fixHint: string): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, fsc.O_RDONLY | (fsc.O_NOFOLLOW ?? 0));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new TallyboxError('KEY_FILE_MISSING', `KEY_FILE_MISSING: ${what} ${path} does not exist; ${fixHint}`, { path }, { cause: err });
    }
    if (code === 'ELOOP') {
      throw new TallyboxError('KEY_FILE_INSECURE', `KEY_FILE_INSECURE: ${what} ${path} is a symbolic link; point the config at the real file`, { path }, { cause: err });
    }
    throw new TallyboxError('KEY_FILE_UNREADABLE', `KEY_FILE_UNREADABLE: cannot open ${what} ${path} (${code ?? 'error'})`, { path, errno: code }, { cause: err });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      throw new TallyboxError('KEY_FILE_INVALID', `KEY_FILE_INVALID: ${what} ${path} is not a regular file`, { path });
    }
    // Owner, mode, and the directory it sits in: see secretFileProblem.
    const problem = secretFileProblem(path, st, what);
    if (problem !== undefined) {
      throw new TallyboxError('KEY_FILE_INSECURE', problem, { path, mode: (st.mode & 0o777).toString(8).padStart(4, '0'), uid: st.uid });
    }
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

function checkKek(bytes: Buffer, path: string): Buffer {
  if (bytes.length !== KEY_BYTES) {
    bytes.fill(0);
    throw new TallyboxError('KEY_FILE_INVALID', `KEY_FILE_INVALID: ${path} must hold exactly ${KEY_BYTES} raw bytes, found ${bytes.length}`, { path, length: bytes.length });
  }
  return bytes;
}

export interface FileKeyProviderOptions {
  /** Path of the 32-byte KEK file. */
  kekPath: string;
  /** Path of the PEM identity key; default `device-identity.pem` next to the KEK file. */
  identityPath?: string;
}

/** Default provider: a raw 32-byte key file, mode 0600, outside the data directory. */
export class FileKeyProvider implements KeyProvider {
  readonly kind = 'file';
  readonly kekPath: string;
  readonly identityPath: string;

  constructor(opts: FileKeyProviderOptions) {
    this.kekPath = resolve(opts.kekPath);
    this.identityPath = resolve(opts.identityPath ?? join(dirname(this.kekPath), DEFAULT_IDENTITY_FILE));
  }

  async loadKek(ctx: KekContext): Promise<Buffer> {
    if (isInside(this.kekPath, ctx.dataDir)) {
      throw new TallyboxError(
        'KEY_FILE_IN_DATA_DIR',
        `KEY_FILE_IN_DATA_DIR: key file ${this.kekPath} is inside the data directory ${resolve(ctx.dataDir)}; a copy of the data directory would carry its own key. Move it elsewhere (e.g. /etc/tallybox/${DEFAULT_KEK_FILE})`,
        { path: this.kekPath },
      );
    }
    return checkKek(await readSecretFile(this.kekPath, 'key file', 'run `tallybox provision` to create it'), this.kekPath);
  }

  async loadDeviceIdentity(): Promise<DeviceIdentity> {
    const pem = await readSecretFile(this.identityPath, 'device identity key', 'run `tallybox provision` to create it');
    return DeviceIdentity.fromPem(pem, this.identityPath);
  }

  /**
   * Overwrite the key file in place with random bytes, sync, then unlink it.
   * When the overwrite fails the file is still unlinked, and the error says
   * so (KEY_ZEROISE_FAILED, details.overwritten=false): the old bytes may
   * remain on the medium, which the caller must report rather than claim
   * the key destroyed.
   */
  async zeroiseKek(): Promise<void> {
    let fh;
    try {
      fh = await open(this.kekPath, fsc.O_WRONLY | (fsc.O_NOFOLLOW ?? 0));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // already gone
      throw new TallyboxError('KEY_ZEROISE_FAILED', `cannot open key file ${this.kekPath} to overwrite it: ${errorMessage(err)}`, { path: this.kekPath, overwritten: false, removed: false }, { cause: err });
    }
    let overwriteError: unknown;
    try {
      await fh.write(randomBytes(KEY_BYTES), 0, KEY_BYTES, 0);
      await fh.sync();
    } catch (err) {
      overwriteError = err;
    } finally {
      await fh.close().catch(() => undefined); // the outcome is decided by the write and the unlink
    }
    let removed = true;
    let unlinkError: unknown;
    await unlink(this.kekPath).catch((err: unknown) => {
      removed = false;
      unlinkError = err;
    });
    if (overwriteError !== undefined || unlinkError !== undefined) {
      const what = [overwriteError !== undefined ? `overwrite failed (${errorMessage(overwriteError)})` : 'overwritten', removed ? 'unlinked' : `not unlinked (${errorMessage(unlinkError)})`].join(', ');
      throw new TallyboxError(
        'KEY_ZEROISE_FAILED',
        `key file ${this.kekPath}: ${what}; its bytes may remain on the storage medium`,
        { path: this.kekPath, overwritten: overwriteError === undefined, removed },
        { cause: overwriteError ?? unlinkError },
      );
    }
  }
}

export interface SystemdCredentialsKeyProviderOptions {
  /** Environment to read CREDENTIALS_DIRECTORY from (default process.env). */
  env?: NodeJS.ProcessEnv;
  kekName?: string;
  identityName?: string;
}

/**
 * systemd credentials: the unit declares
 *   LoadCredentialEncrypted=tallybox-kek:/etc/credstore.encrypted/tallybox-kek
 *   LoadCredentialEncrypted=tallybox-identity:/etc/credstore.encrypted/tallybox-identity
 * and systemd decrypts them (TPM-bound if asked) into a private, non-swappable
 * directory named by $CREDENTIALS_DIRECTORY for this service only.
 */
export class SystemdCredentialsKeyProvider implements KeyProvider {
  readonly kind = 'systemd-credentials';
  private readonly env: NodeJS.ProcessEnv;
  private readonly kekName: string;
  private readonly identityName: string;

  constructor(opts: SystemdCredentialsKeyProviderOptions = {}) {
    this.env = opts.env ?? process.env;
    this.kekName = opts.kekName ?? SYSTEMD_KEK_CREDENTIAL;
    this.identityName = opts.identityName ?? SYSTEMD_IDENTITY_CREDENTIAL;
  }

  private dir(): string {
    const dir = this.env.CREDENTIALS_DIRECTORY;
    if (!dir) {
      throw new TallyboxError(
        'KEY_PROVIDER_UNAVAILABLE',
        'KEY_PROVIDER_UNAVAILABLE: CREDENTIALS_DIRECTORY is not set; run under systemd with LoadCredential=/LoadCredentialEncrypted= for ' + `${this.kekName} and ${this.identityName}, or use the file key provider`,
      );
    }
    return dir;
  }

  async loadKek(ctx: KekContext): Promise<Buffer> {
    const path = join(this.dir(), this.kekName);
    if (isInside(path, ctx.dataDir)) {
      throw new TallyboxError('KEY_FILE_IN_DATA_DIR', `KEY_FILE_IN_DATA_DIR: credential ${path} is inside the data directory ${resolve(ctx.dataDir)}`, { path });
    }
    return checkKek(await readSecretFile(path, 'systemd credential', `add LoadCredentialEncrypted=${this.kekName}:… to the unit`), path);
  }

  async loadDeviceIdentity(): Promise<DeviceIdentity> {
    const path = join(this.dir(), this.identityName);
    const pem = await readSecretFile(path, 'systemd credential', `add LoadCredentialEncrypted=${this.identityName}:… to the unit`);
    return DeviceIdentity.fromPem(pem, path);
  }

  /** Credentials are read-only copies made by systemd: the sealed original is the TPM's/host's to destroy. */
  async zeroiseKek(): Promise<void> {
    throw new TallyboxError('KEY_ZEROISE_UNSUPPORTED', 'KEY_ZEROISE_UNSUPPORTED: systemd credentials are read-only; destroy the encrypted credential on the host (and rotate the TPM-bound key)');
  }
}

export interface ProvisionKeysOptions {
  kekPath: string;
  identityPath?: string;
  /** The data directory: provisioning refuses to put keys inside it. */
  dataDir: string;
}

export interface ProvisionedKeys {
  kekPath: string;
  identityPath: string;
  publicKeyPem: string;
  keyId: string;
}

/**
 * Create the KEK and the device identity key, each 0600 in a 0700 directory.
 * Existing files are never overwritten (KEY_FILE_EXISTS): replacing a KEK
 * would make every sealed record unreadable.
 */
export async function provisionKeyFiles(opts: ProvisionKeysOptions): Promise<ProvisionedKeys> {
  const kekPath = resolve(opts.kekPath);
  const identityPath = resolve(opts.identityPath ?? join(dirname(kekPath), DEFAULT_IDENTITY_FILE));
  for (const p of [kekPath, identityPath]) {
    if (isInside(p, opts.dataDir)) {
      throw new TallyboxError('KEY_FILE_IN_DATA_DIR', `KEY_FILE_IN_DATA_DIR: refusing to create ${p} inside the data directory ${resolve(opts.dataDir)}`, { path: p });
    }
    if (
      await stat(p).then(
        () => true,
        () => false,
      )
    ) {
      throw new TallyboxError('KEY_FILE_EXISTS', `KEY_FILE_EXISTS: ${p} already exists; refusing to replace a device key (sealed data would become unreadable)`, { path: p });
    }
  }
  await mkdir(dirname(kekPath), { recursive: true, mode: 0o700 });
  await mkdir(dirname(identityPath), { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('ed25519');
  const identity = new DeviceIdentity({ privateKey });
  const kek = randomBytes(KEY_BYTES);
  try {
    await writeExclusive(kekPath, kek);
  } finally {
    kek.fill(0);
  }
  await writeExclusive(identityPath, Buffer.from(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()));
  return { kekPath, identityPath, publicKeyPem: identity.publicKeyPem, keyId: identity.keyId };
}

async function writeExclusive(path: string, data: Buffer): Promise<void> {
  // O_EXCL: never follow or clobber something planted at the path; 0600 from birth, not chmod'ed after.
  const fh = await open(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
