/**
 * TLS and client certificates against a real Mosquitto: the device connects
 * only with the right CA and its own certificate (mTLS); a device without a
 * client certificate, or trusting another CA, never gets online and never
 * delivers (its punches wait safely in the outbox).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
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
  for (const [name, ext] of [['server', ['-extfile', f('server.ext')]], ['device', []]] as const) {
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
