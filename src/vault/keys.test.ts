import { createPrivateKey, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeviceIdentity, FileKeyProvider, provisionKeyFiles, SystemdCredentialsKeyProvider } from './keys.js';
import { Vault } from './vault.js';

let root: string;
let dataDir: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'tallybox-keys-'));
  dataDir = join(root, 'data');
});
afterEach(() => rm(root, { recursive: true, force: true }));

describe('provisioning', () => {
  it('creates a 32-byte KEK and an Ed25519 identity key, both 0600 in a 0700 directory', async () => {
    const p = await provisionKeyFiles({ kekPath: join(root, 'keys', 'tallybox.kek'), dataDir });
    expect((await stat(p.kekPath)).mode & 0o777).toBe(0o600);
    expect((await stat(p.identityPath)).mode & 0o777).toBe(0o600);
    expect((await stat(join(root, 'keys'))).mode & 0o777).toBe(0o700);
    expect(p.identityPath).toBe(join(root, 'keys', 'device-identity.pem'));
    const provider = new FileKeyProvider({ kekPath: p.kekPath });
    expect((await provider.loadKek({ dataDir })).length).toBe(32);
    const id = await provider.loadDeviceIdentity();
    expect(id.publicKeyPem).toBe(p.publicKeyPem);
    expect(id.keyId).toMatch(/^[0-9a-f]{16}$/);
    const sig = id.sign(Buffer.from('hello'));
    expect(verify(null, Buffer.from('hello'), id.publicKey, sig)).toBe(true);
  });

  it('never overwrites existing keys', async () => {
    const kekPath = join(root, 'keys', 'tallybox.kek');
    await provisionKeyFiles({ kekPath, dataDir });
    await expect(provisionKeyFiles({ kekPath, dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_EXISTS' });
  });

  it('refuses to put keys inside the data directory', async () => {
    await expect(provisionKeyFiles({ kekPath: join(dataDir, 'tallybox.kek'), dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_IN_DATA_DIR' });
  });
});

describe('FileKeyProvider', () => {
  async function provisioned() {
    const p = await provisionKeyFiles({ kekPath: join(root, 'keys', 'tallybox.kek'), dataDir });
    return { p, provider: new FileKeyProvider({ kekPath: p.kekPath }) };
  }

  it.each([0o644, 0o640, 0o604, 0o660])('refuses a key file with mode %o and says how to fix it', async (mode) => {
    const { p, provider } = await provisioned();
    await chmod(p.kekPath, mode);
    const err = await provider.loadKek({ dataDir }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KEY_FILE_INSECURE' });
    expect((err as Error).message).toContain(`chmod 600 ${p.kekPath}`);
    expect((err as Error).message).toContain(`mode 0${mode.toString(8)}`);
    // The agent refuses to start: Vault.open fails with the same error and creates nothing.
    await expect(Vault.open({ dataDir, keyProvider: provider })).rejects.toMatchObject({ code: 'KEY_FILE_INSECURE' });
  });

  it('refuses a loose identity key too', async () => {
    const { p, provider } = await provisioned();
    await chmod(p.identityPath, 0o644);
    await expect(provider.loadDeviceIdentity()).rejects.toMatchObject({ code: 'KEY_FILE_INSECURE', message: expect.stringContaining(`chmod 600 ${p.identityPath}`) });
  });

  it('names a missing key file and how to create it', async () => {
    const provider = new FileKeyProvider({ kekPath: join(root, 'nope.kek') });
    await expect(provider.loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_MISSING', message: expect.stringContaining('tallybox provision') });
  });

  it('refuses a key file of the wrong length', async () => {
    await mkdir(join(root, 'k'), { mode: 0o700 });
    const path = join(root, 'k', 'short.kek');
    await writeFile(path, randomBytes(16), { mode: 0o600 });
    await expect(new FileKeyProvider({ kekPath: path }).loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_INVALID' });
  });

  it('refuses a symbolic link', async () => {
    const { p } = await provisioned();
    const link = join(root, 'link.kek');
    await symlink(p.kekPath, link);
    await expect(new FileKeyProvider({ kekPath: link, identityPath: p.identityPath }).loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_INSECURE' });
  });

  it('refuses a key file inside the data directory', async () => {
    await mkdir(dataDir, { recursive: true });
    const path = join(dataDir, 'tallybox.kek');
    await writeFile(path, randomBytes(32), { mode: 0o600 });
    await expect(new FileKeyProvider({ kekPath: path }).loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_IN_DATA_DIR' });
  });
});

describe('wrong KEK', () => {
  it('opening a vault with another KEK is KEK_MISMATCH and leaves it readable with the right one', async () => {
    const a = await provisionKeyFiles({ kekPath: join(root, 'a', 'tallybox.kek'), dataDir });
    const b = await provisionKeyFiles({ kekPath: join(root, 'b', 'tallybox.kek'), dataDir });
    const good = new FileKeyProvider({ kekPath: a.kekPath });
    const v = await Vault.open({ dataDir, keyProvider: good });
    await v.upsertSubject('org-a', { subjectId: 'subject-0001', displayName: 'Ada', minor: false });
    await v.close();

    const err = await Vault.open({ dataDir, keyProvider: new FileKeyProvider({ kekPath: b.kekPath }) }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KEK_MISMATCH' });
    expect((err as Error).message).toMatch(/not the one .*vault\.db was sealed with/);

    const again = await Vault.open({ dataDir, keyProvider: good });
    expect((await again.getSubject('org-a', 'subject-0001')).displayName).toBe('Ada');
    await again.close();
  });
});

describe('SystemdCredentialsKeyProvider', () => {
  it('needs $CREDENTIALS_DIRECTORY', async () => {
    const p = new SystemdCredentialsKeyProvider({ env: {} });
    await expect(p.loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_PROVIDER_UNAVAILABLE', message: expect.stringContaining('LoadCredential') });
  });

  it('reads the KEK and identity from the credentials directory and opens a vault', async () => {
    const creds = join(root, 'creds');
    await mkdir(creds, { mode: 0o500 });
    await chmod(creds, 0o700);
    await writeFile(join(creds, 'tallybox-kek'), randomBytes(32), { mode: 0o400 });
    const { privateKey } = generateKeyPairSync('ed25519');
    await writeFile(join(creds, 'tallybox-identity'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o400 });
    const provider = new SystemdCredentialsKeyProvider({ env: { CREDENTIALS_DIRECTORY: creds } });
    const id = await provider.loadDeviceIdentity();
    expect(id).toBeInstanceOf(DeviceIdentity);
    expect(id.publicKeyPem).toBe(new DeviceIdentity({ privateKey: createPrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' })) }).publicKeyPem);
    const v = await Vault.open({ dataDir, keyProvider: provider });
    expect(v.identity.keyId).toBe(id.keyId);
    await v.close();
  });

  it('refuses a group-readable credential', async () => {
    const creds = join(root, 'creds');
    await mkdir(creds);
    await writeFile(join(creds, 'tallybox-kek'), randomBytes(32), { mode: 0o440 });
    await chmod(join(creds, 'tallybox-kek'), 0o440);
    await expect(new SystemdCredentialsKeyProvider({ env: { CREDENTIALS_DIRECTORY: creds } }).loadKek({ dataDir })).rejects.toMatchObject({ code: 'KEY_FILE_INSECURE' });
  });
});
