/**
 * TLS and client certificates against a real Mosquitto: the device connects
 * only with the right CA and its own certificate (mTLS); a device without a
 * client certificate, or trusting another CA, never gets online and never
 * delivers (its punches wait safely in the outbox).
 *
 * Region pinning on the certificate (issue 9 §1): the URL names a region
 * host (mqtts://mqtt.sg.tallybox.cloud:PORT) and the link's `lookup` resolves
 * that name to 127.0.0.1 — a DNS spoof, which is exactly the attack pinning
 * must survive, and independent of /etc/hosts. Everything else is as in
 * production: SNI and certificate verification use the URL's name, against
 * the CA the config names. Certificates the trusted CA issued for the region
 * host plus another region, or plus a foreign host, are refused; one for the
 * region host alone is accepted.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LookupFunction } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { MqttLink } from '../../src/link/connection.js';
import { EgressGate } from '../../src/link/egress.js';
import { brokerReachabilityCheck } from '../../src/link/probe.js';
import { PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { captureLogger } from '../link/capture-logger.js';
import { Mosquitto } from '../../simulators/cloud/mosquitto.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { testConfig } from '../helpers/agent-config.js';
import { freePort, sleep, waitUntil } from '../helpers/ports.js';

const dir = mkdtempSync(join(tmpdir(), 'tbx-tls-'));
const f = (name: string) => join(dir, name);
const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

/** A CA, a server certificate for localhost/127.0.0.1, a client certificate for the device, and a stranger CA. */
function makePki(): void {
  for (const ca of ['ca', 'other-ca']) {
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${ca}`, '-keyout', f(`${ca}.key`), '-out', f(`${ca}.crt`));
  }
  writeFileSync(f('server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  for (const [name, ext] of [
    ['server', ['-extfile', f('server.ext')]],
    ['device', []],
  ] as const) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`));
    openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-out', f(`${name}.crt`), ...ext);
  }
  // mosquitto drops root privileges: let it read the files (test material only).
  chmodSync(dir, 0o755);
  for (const n of ['ca.crt', 'server.crt', 'server.key']) chmodSync(f(n), 0o644);
}

const mosquitto = systemPeer('mosquitto', { pkg: 'mosquitto' });
describeWithPeer(mosquitto, 'TLS and mTLS against Mosquitto', () => {
  let mosq: Mosquitto;
  let tlsPort: number;
  let sink: CloudSink;
  beforeAll(async () => {
    makePki();
    tlsPort = await freePort();
    mosq = await Mosquitto.start({
      extraConfig: [`listener ${tlsPort} 127.0.0.1`, `cafile ${f('ca.crt')}`, `certfile ${f('server.crt')}`, `keyfile ${f('server.key')}`, 'require_certificate true', 'tls_version tlsv1.2'],
    });
    sink = await CloudSink.connect({ url: mosq.url }); // the cloud reads on the plain listener
  }, 60_000);
  afterAll(async () => {
    await sink?.close();
    await mosq?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function agentWith(tls: Record<string, unknown>, name: string) {
    const base = testConfig({ dataDir: join(dir, name), brokerUrl: `mqtts://localhost:${tlsPort}`, deviceId: `dev-${name}` });
    return Agent.start({ config: validateConfig({ ...base, broker: { ...base.broker, tls } }), logger: silentLogger() });
  }

  it('with the CA and a client certificate: online, punches delivered', async () => {
    const agent = await agentWith({ caFile: f('ca.crt'), certFile: f('device.crt'), keyFile: f('device.key') }, 'mtls');
    try {
      await waitUntil(() => agent.session !== undefined, 15_000, 'online over mTLS');
      const p = await agent.punch({ orgId: 'org-a', subjectId: 's-1', method: PunchMethod.PUNCH_METHOD_CARD });
      await waitUntil(() => sink.has(p.eventId), 10_000, 'punch at the cloud');
    } finally {
      await agent.stop();
    }
  });

  it('without a client certificate, or trusting another CA: never online, punches kept', async () => {
    for (const [name, tls] of [
      ['nocert', { caFile: f('ca.crt') }],
      ['wrongca', { caFile: f('other-ca.crt'), certFile: f('device.crt'), keyFile: f('device.key') }],
    ] as const) {
      const agent = await agentWith(tls, name);
      try {
        const p = await agent.punch({ orgId: 'org-a', subjectId: 's-2', method: PunchMethod.PUNCH_METHOD_CARD });
        await sleep(1500);
        expect(agent.session, name).toBeUndefined();
        expect(agent.outbox.depth).toBe(1);
        expect(sink.has(p.eventId)).toBe(false);
      } finally {
        await agent.stop();
      }
    }
  });

  it('a certificate file that cannot be read is a config error naming the key', async () => {
    await expect(agentWith({ caFile: f('missing.crt') }, 'missing')).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/broker\.tls\.caFile/) });
  });
});

/** Resolve the region broker's name to this machine (a DNS spoof); refuse every other name. */
const spoofDns: LookupFunction = (hostname, options, callback) => {
  if (hostname !== 'mqtt.sg.tallybox.cloud') return callback(Object.assign(new Error(`test lookup: ${hostname} not mapped`), { code: 'ENOTFOUND' }), '', 4);
  if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: '127.0.0.1', family: 4 }]);
  callback(null, '127.0.0.1', 4);
};

describeWithPeer(mosquitto, 'region pinning on the verified certificate (Mosquitto, spoofed DNS)', () => {
  const pdir = mkdtempSync(join(tmpdir(), 'tbx-tlspin-'));
  const p = (name: string) => join(pdir, name);
  const certs: Record<string, string> = {
    region: 'DNS:mqtt.sg.tallybox.cloud',
    tworegions: 'DNS:mqtt.sg.tallybox.cloud,DNS:mqtt.cn.tallybox.cloud',
    foreign: 'DNS:mqtt.sg.tallybox.cloud,DNS:broker.example.net',
    othername: 'DNS:mqtt.cn.tallybox.cloud',
  };
  const ports: Record<string, number> = {};
  let mosq: Mosquitto;
  beforeAll(async () => {
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=region-ca', '-keyout', p('rca.key'), '-out', p('rca.crt'));
    const lines: string[] = [];
    for (const [name, san] of Object.entries(certs)) {
      writeFileSync(p(`${name}.ext`), `subjectAltName=${san}\n`);
      openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`));
      openssl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p('rca.crt'), '-CAkey', p('rca.key'), '-CAcreateserial', '-days', '2', '-out', p(`${name}.crt`), '-extfile', p(`${name}.ext`));
      ports[name] = await freePort();
      lines.push(`listener ${ports[name]} 127.0.0.1`, `certfile ${p(`${name}.crt`)}`, `keyfile ${p(`${name}.key`)}`, 'tls_version tlsv1.2');
      chmodSync(p(`${name}.crt`), 0o644);
      chmodSync(p(`${name}.key`), 0o644); // mosquitto drops root privileges (test material only)
    }
    chmodSync(pdir, 0o755);
    mosq = await Mosquitto.start({ extraConfig: lines });
  }, 60_000);
  afterAll(async () => {
    await mosq?.stop();
    rmSync(pdir, { recursive: true, force: true });
  });

  const configFor = (listener: string) =>
    validateConfig({
      version: 1,
      device: { id: `dev-pin-${listener}`, kind: 'sim', orgId: 'org-a' },
      region: 'sg',
      dataDir: join(pdir, 'data'),
      broker: { url: `mqtts://mqtt.sg.tallybox.cloud:${ports[listener]}`, tls: { caFile: p('rca.crt') }, reconnectMinMs: 100, reconnectMaxMs: 300, connectTimeoutMs: 2000 },
      clock: { source: 'assume-synced' },
    });

  async function tryLink(listener: string) {
    const log = captureLogger();
    let seq = 0;
    const link = new MqttLink({ config: configFor(listener), egress: new EgressGate({ deviceId: `dev-pin-${listener}`, operatorOrgId: 'org-a' }), logger: log, nextBdSeq: async () => ++seq, state: () => ({}), lookup: spoofDns });
    link.start();
    try {
      const end = Date.now() + 2500;
      while (Date.now() < end && link.state !== 'online') await sleep(25);
      return { online: link.state === 'online', errors: log.lines.filter((l) => l.fields.event === 'link_error') };
    } finally {
      await link.stop();
    }
  }

  it('a certificate for the region host alone: online, pinned', async () => {
    const r = await tryLink('region');
    expect(r.online, JSON.stringify(r.errors)).toBe(true);
    expect(await brokerReachabilityCheck(configFor('region'), { lookup: spoofDns })).toMatchObject({ verdict: 'ok', detail: expect.stringMatching(/\(TLS, MQTT 5\)/) });
  });

  it('a certificate that also names another region, or a foreign host: refused (REGION_MISMATCH), though the URL host is in the region', async () => {
    for (const listener of ['tworegions', 'foreign']) {
      const r = await tryLink(listener);
      expect(r.online, listener).toBe(false);
      expect(r.errors.length, listener).toBeGreaterThan(0);
      for (const e of r.errors) expect(e, listener).toMatchObject({ level: 'error', fields: { code: 'REGION_MISMATCH' } });
      expect(r.errors[0]!.msg).toMatch(/its certificate also names (mqtt\.cn\.tallybox\.cloud|broker\.example\.net), outside region "sg"/);
      expect(await brokerReachabilityCheck(configFor(listener), { lookup: spoofDns })).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/REGION|region/) });
    }
  });

  it('a certificate for another name entirely: refused by the host-name check', async () => {
    const r = await tryLink('othername');
    expect(r.online).toBe(false);
    expect(r.errors[0]?.fields.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });
});
