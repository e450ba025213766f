/**
 * Provisioning by claim (issue 11 §3), with the built CLIs as IT runs them:
 * `tallybox-sim cloud` issues a code (HTTP API and --issue-claim), `tallybox
 * provision --claim` makes keys and config, `tallybox run` delivers a punch
 * through the punch API to the same emulator. Then each failure path: wrong
 * code, reused code, region mismatch (in the grant and in the broker URL),
 * broker unreachable, TLS failure, no trust anchor, a non-empty --out, and a
 * LAN attacker answering the claim with its own key. Each gives its coded
 * error and exit status, and leaves the directory exactly as it was.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createTlsServer } from 'node:tls';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { ClaimService } from '../../simulators/cloud/claims.js';
import { loadConfigFile } from '../../src/config/load.js';
import { CLAIM_REQUEST_FILTER, claimResponseTopic, parseClaimTopic } from '../../src/link/claim.js';
import { provisionByClaim } from '../../src/provision/claim.js';
import { CLAIM_RESPONSE_DOMAIN } from '../../src/provision/response.js';
import { pb } from '../../src/proto/index.js';
import { AgentProcess, CLI, postPunch } from '../helpers/agent-process.js';
import { freePort, waitUntil } from '../helpers/ports.js';
import { systemPeer } from '../helpers/system-peer.js';

const SIM = resolve(import.meta.dirname, '../../dist/simulators/cli.js');
const root = mkdtempSync(join(tmpdir(), 'tbx-claim-'));
const children: ChildProcess[] = [];

interface Cli {
  status: number | null;
  stdout: string;
  stderr: string;
}
function tallybox(args: string[], timeoutMs = 30_000): Promise<Cli> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (status) => {
      clearTimeout(t);
      res({ status, stdout, stderr });
    });
  });
}

/** Every entry under dir, recursively (dot files too): what "nothing half-written" is checked against. */
function tree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

let cloud: ChildProcess;
let api: string;
let brokerUrl: string;
let cloudKey: string;
let cliClaim: string;

beforeAll(async () => {
  const [port, http] = [await freePort(), await freePort()];
  cloud = spawn(process.execPath, [SIM, 'cloud', '--port', String(port), '--http-port', String(http), '--issue-claim', 'device=dev-cli-1,kind=sim,region=sg,orgs=org-a,code=CLI-0001'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(cloud);
  let out = '';
  cloud.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  api = `http://127.0.0.1:${http}`;
  brokerUrl = `mqtt://127.0.0.1:${port}`;
  await waitUntil(async () => (await fetch(`${api}/api/key`).catch(() => undefined))?.ok === true, 20_000, 'cloud emulator up');
  // The flag's claim is announced on stdout, with the key to pin.
  const line = out.split('\n').find((l) => l.includes('CLI-0001'))!;
  const issued = (JSON.parse(line) as { body: { issued: { code: string; cloudKey: string } } }).body.issued;
  cliClaim = issued.code;
  cloudKey = issued.cloudKey;
}, 30_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGTERM');
  rmSync(root, { recursive: true, force: true });
});

async function issue(spec: Record<string, unknown>): Promise<{ code: string; cloudKey: string }> {
  const r = await fetch(`${api}/api/claims`, { method: 'POST', body: JSON.stringify(spec), headers: { 'content-type': 'application/json' } });
  expect(r.status).toBe(201);
  return (await r.json()) as { code: string; cloudKey: string };
}

const claimArgs = (code: string, out: string, extra: string[] = []) => [
  'provision',
  '--claim',
  code,
  '--region',
  'sg',
  '--broker',
  brokerUrl,
  '--allow-loopback',
  '--cloud-key',
  cloudKey,
  '--out',
  out,
  '--data-dir',
  join(root, 'data-' + code),
  '--timeout',
  '5',
  ...extra,
];

describe('tallybox provision --claim', () => {
  it('from nothing to a running agent that delivers a punch to the cloud emulator', async () => {
    const c = await issue({ deviceId: 'dev-claim-1', kind: 'sim', region: 'sg', orgId: 'org-a', servedOrgs: ['org-a', 'org-b'] });
    expect(c.cloudKey).toBe(cloudKey);
    const out = join(root, 'etc-ok');
    const apiPort = await freePort();
    const r = await tallybox(claimArgs(c.code, out, ['--punch-api-port', String(apiPort)]));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const printed = JSON.parse(r.stdout) as { deviceId: string; servedOrgs: string[]; configFile: string; next: string };
    expect(printed).toMatchObject({ deviceId: 'dev-claim-1', servedOrgs: ['org-a', 'org-b'], configFile: join(out, 'tallybox.yaml') });
    expect(printed.next).toMatch(/tallybox doctor --config .*tallybox run --config/);
    // Keys 0600 in a 0700 directory; the config is the real schema's and carries the grant.
    expect(tree(out)).toEqual(['device-identity.pem', 'tallybox.kek', 'tallybox.yaml']);
    expect(statSync(out).mode & 0o777).toBe(0o700);
    for (const f of tree(out)) expect(statSync(join(out, f)).mode & 0o777, f).toBe(0o600);
    const config = loadConfigFile(printed.configFile);
    expect(config.device).toEqual({ id: 'dev-claim-1', kind: 'sim', orgId: 'org-a', servedOrgs: ['org-a', 'org-b'] });
    expect(config.cloud.commandKeys).toEqual([{ id: cloudKey.split(':')[0], publicKey: cloudKey.split(':')[1] }]);
    expect(readFileSync(join(out, 'tallybox.kek')).length).toBe(32);
    // No staging directory is left next to it.
    expect(readdirSync(root).filter((n) => n.includes('.claim-'))).toEqual([]);

    const agent = new AgentProcess(printed.configFile, apiPort);
    await agent.start();
    try {
      const p = await postPunch(apiPort, { orgId: 'org-b', subjectId: 's-claim', method: 'PIN' });
      expect(p.status).toBe('accepted');
      await waitUntil(
        async () => {
          const ev = (await (await fetch(`${api}/api/events`)).json()) as { type: string; body: Record<string, unknown> }[];
          return ev.some((e) => e.type === 'punch' && e.body.eventId === p.eventId && e.body.deviceId === 'dev-claim-1' && e.body.orgId === 'org-b');
        },
        20_000,
        'the punch at the cloud emulator',
      );
    } finally {
      await agent.kill('SIGTERM');
    }
  }, 60_000);

  it('the --issue-claim flag issues a code too; used once, then CLAIM_CODE_USED (78) and nothing written', async () => {
    const ok = await tallybox(claimArgs(cliClaim, join(root, 'etc-cli')));
    expect(ok.status, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ deviceId: 'dev-cli-1' });
    const before = tree(root);
    const again = await tallybox(claimArgs(cliClaim, join(root, 'etc-cli-again')));
    expect(again.status).toBe(78);
    expect(again.stderr).toMatch(/^tallybox: CLAIM_CODE_USED: the cloud refused the claim: this claim code was used at /);
    expect(tree(root)).toEqual(before);
  }, 60_000);

  it('a wrong code: CLAIM_CODE_UNKNOWN (78), nothing written', async () => {
    const before = tree(root);
    const r = await tallybox(claimArgs('NOPE-NOPE-NOPE', join(root, 'etc-wrong')));
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/^tallybox: CLAIM_CODE_UNKNOWN: the cloud refused the claim: no such claim code/);
    expect(tree(root)).toEqual(before);
  }, 30_000);

  it('a code issued for another region: REGION_MISMATCH (78), and the code stays usable in its region', async () => {
    const c = await issue({ deviceId: 'dev-cn-1', kind: 'sim', region: 'cn', servedOrgs: ['org-a'] });
    const before = tree(root);
    const r = await tallybox(claimArgs(c.code, join(root, 'etc-region')));
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/^tallybox: REGION_MISMATCH: the cloud refused the claim: this claim code is for region cn/);
    expect(tree(root)).toEqual(before);
  }, 30_000);

  it('a broker URL outside the region: REGION_MISMATCH (78) before any key is made', async () => {
    const before = tree(root);
    const r = await tallybox(['provision', '--claim', 'ABCD-EFGH', '--region', 'sg', '--broker', 'mqtts://mqtt.cn.tallybox.cloud:8883', '--cloud-key', cloudKey, '--out', join(root, 'etc-cn'), '--data-dir', join(root, 'data-cn')]);
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/^tallybox: REGION_MISMATCH: broker mqtt\.cn\.tallybox\.cloud is not a "sg" region broker/);
    expect(tree(root)).toEqual(before);
  });

  it('an unreachable broker: CLAIM_BROKER_UNREACHABLE (1), nothing written', async () => {
    const dead = await freePort();
    const before = tree(root);
    const r = await tallybox([
      'provision',
      '--claim',
      'ABCD-EFGH',
      '--region',
      'sg',
      '--broker',
      `mqtt://127.0.0.1:${dead}`,
      '--allow-loopback',
      '--cloud-key',
      cloudKey,
      '--out',
      join(root, 'etc-dead'),
      '--data-dir',
      join(root, 'data-dead'),
      '--timeout',
      '3',
    ]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^tallybox: CLAIM_BROKER_UNREACHABLE: cannot reach the broker mqtt:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);
    expect(tree(root)).toEqual(before);
  });

  it('no trust anchor (no --cloud-key, none compiled in): CLAIM_TRUST_ANCHOR_MISSING (78) before anything happens', async () => {
    const before = tree(root);
    const r = await tallybox(['provision', '--claim', 'ABCD-EFGH', '--region', 'sg', '--broker', brokerUrl, '--allow-loopback', '--out', join(root, 'etc-anchor'), '--data-dir', join(root, 'data-anchor')]);
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/^tallybox: CLAIM_TRUST_ANCHOR_MISSING: this build carries no cloud key for region sg; pass --cloud-key/);
    expect(tree(root)).toEqual(before);
  });

  it('a non-empty --out: PROVISION_OUT_EXISTS (78), the files in it untouched', async () => {
    const out = join(root, 'etc-full');
    mkdirSync(out, { mode: 0o700 });
    writeFileSync(join(out, 'tallybox.kek'), 'old key, must survive');
    const c = await issue({ deviceId: 'dev-full', kind: 'sim', region: 'sg', servedOrgs: ['org-a'] });
    const before = tree(root);
    const r = await tallybox(claimArgs(c.code, out));
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/^tallybox: PROVISION_OUT_EXISTS: --out .* is not empty \(tallybox\.kek\)/);
    expect(tree(root)).toEqual(before);
    expect(readFileSync(join(out, 'tallybox.kek'), 'utf8')).toBe('old key, must survive');
    // The code was not spent on a refused local precondition.
    expect((await tallybox(claimArgs(c.code, join(root, 'etc-full-2')))).status).toBe(0);
  }, 60_000);

  const openssl = systemPeer('openssl', { pkg: 'openssl' });
  it.runIf(openssl.available)(
    'a TLS failure (certificate not from the given CA, or no CA): CLAIM_TLS_FAILED (78), nothing written',
    async () => {
      const pki = mkdtempSync(join(tmpdir(), 'tbx-claim-pki-'));
      try {
        const f = (n: string) => join(pki, n);
        const ossl = (...a: string[]) => execFileSync('openssl', a, { stdio: 'pipe' });
        for (const ca of ['ca', 'other-ca']) ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${ca}`, '-keyout', f(`${ca}.key`), '-out', f(`${ca}.crt`));
        writeFileSync(f('ext'), 'subjectAltName=IP:127.0.0.1\n');
        ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=broker', '-keyout', f('srv.key'), '-out', f('srv.csr'));
        ossl('x509', '-req', '-in', f('srv.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-out', f('srv.crt'), '-extfile', f('ext'));
        const server = createTlsServer({ key: readFileSync(f('srv.key')), cert: readFileSync(f('srv.crt')) }, (s) => s.destroy());
        server.on('tlsClientError', () => undefined); // the client hanging up mid-handshake is the point
        await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
        const port = (server.address() as { port: number }).port;
        try {
          const before = tree(root);
          const base = [
            'provision',
            '--claim',
            'ABCD-EFGH',
            '--region',
            'sg',
            '--broker',
            `mqtts://127.0.0.1:${port}`,
            '--allow-loopback',
            '--cloud-key',
            cloudKey,
            '--out',
            join(root, 'etc-tls'),
            '--data-dir',
            join(root, 'data-tls'),
            '--timeout',
            '5',
          ];
          const wrongCa = await tallybox([...base, '--ca', f('other-ca.crt')]);
          expect(wrongCa.status).toBe(78);
          expect(wrongCa.stderr).toMatch(/^tallybox: CLAIM_TLS_FAILED: TLS to mqtts:\/\/127\.0\.0\.1:\d+ failed: .*; check --ca/);
          const noCa = await tallybox(base);
          expect(noCa.status).toBe(78);
          expect(noCa.stderr).toMatch(/^tallybox: CLAIM_TLS_FAILED: /);
          expect(tree(root)).toEqual(before);
        } finally {
          server.close();
        }
      } finally {
        rmSync(pki, { recursive: true, force: true });
      }
    },
    60_000,
  );
});

describe('a LAN attacker answering the claim', () => {
  let broker: EmbeddedBroker;
  beforeAll(async () => {
    broker = await startEmbeddedBroker();
  });
  afterAll(async () => {
    await broker.close();
  });

  /** Answers every claim request at once, with a grant signed by its own key (and one replaying a foreign nonce). */
  async function attacker(): Promise<() => Promise<void>> {
    const evil = generateKeyPairSync('ed25519').privateKey;
    const c = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
    await c.subscribeAsync(CLAIM_REQUEST_FILTER);
    c.on('message', (t, payload) => {
      const req = pb.ClaimRequest.decode(payload);
      const nonce = parseClaimTopic(t)!.nonceHex;
      const body = pb.ClaimResponseBody.encode({
        nonce: req.nonce,
        devicePublicKey: req.devicePublicKey,
        region: req.region,
        deviceId: 'evil-dev',
        deviceKind: 'sim',
        orgId: 'evil-org',
        servedOrgs: ['evil-org'],
        commandKeyId: 'evil',
        commandPublicKey: Buffer.alloc(32, 7),
      }).finish();
      const signature = sign(null, Buffer.concat([CLAIM_RESPONSE_DOMAIN, body]), evil);
      void c.publishAsync(claimResponseTopic(nonce), Buffer.from(pb.SignedClaimResponse.encode({ body, signature, keyId: 'cloud-sim' }).finish()));
    });
    return () => c.endAsync();
  }

  it('alone: its forged grant is refused (CLAIM_RESPONSE_INVALID) and nothing is written', async () => {
    const dir = mkdtempSync(join(root, 'lan-'));
    const stop = await attacker();
    try {
      const cloudKeyPair = generateKeyPairSync('ed25519');
      const pub = Buffer.from(cloudKeyPair.publicKey.export({ format: 'jwk' }).x!, 'base64url').toString('base64');
      await expect(
        provisionByClaim({ claimCode: 'ABCD-EFGH', region: 'sg', brokerUrl: broker.url, allowLoopback: true, outDir: join(dir, 'etc'), dataDir: join(dir, 'data'), cloudKey: { id: 'cloud-sim', publicKey: pub }, timeoutMs: 1500 }),
      ).rejects.toMatchObject({
        code: 'CLAIM_RESPONSE_INVALID',
        message: expect.stringMatching(/signature does not verify with the trusted cloud key cloud-sim/),
      });
      expect(tree(dir)).toEqual([]);
    } finally {
      await stop();
    }
  });

  it('racing the real cloud: the forged answer comes first and is ignored; the real grant is taken', async () => {
    const dir = mkdtempSync(join(root, 'lan-'));
    const stop = await attacker();
    // The real cloud answers 300 ms late: the attacker's answer is surely first.
    const service = new ClaimService({ privateKey: generateKeyPairSync('ed25519').privateKey, keyId: 'cloud-sim', answerDelayMs: 300 });
    try {
      await service.connect(broker.url);
      const issued = service.issue({ deviceId: 'dev-race', kind: 'sim', region: 'sg', servedOrgs: ['org-a'] });
      const [id, pub] = issued.cloudKey.split(':') as [string, string];
      const r = await provisionByClaim({ claimCode: issued.code, region: 'sg', brokerUrl: broker.url, allowLoopback: true, outDir: join(dir, 'etc'), dataDir: join(dir, 'data'), cloudKey: { id, publicKey: pub }, timeoutMs: 5000 });
      expect(r.grant.deviceId).toBe('dev-race');
      expect(loadConfigFile(r.configFile).device.orgId).toBe('org-a');
    } finally {
      await service.close();
      await stop();
    }
  });
});
