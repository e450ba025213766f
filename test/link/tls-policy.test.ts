/**
 * TLS is required to reach a broker (issue 9 §1), as configuration policy:
 * plaintext or unverified TLS to a broker that is not on this machine is
 * refused with CONFIG_INVALID naming the key (and `tallybox run` exits 78
 * having written nothing), unless `broker.insecure` says so explicitly — then
 * it is logged as an error at every start, and `tallybox doctor` reports a
 * failure. Loopback stays usable for the demo, tests and a local bridge.
 * (Region pinning on the certificate, against a real Mosquitto: test/e2e/tls.test.ts.)
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import type { Config, ConfigInput } from '../../src/config/schema.js';
import { MqttLink } from '../../src/link/connection.js';
import { EgressGate } from '../../src/link/egress.js';
import { brokerSecurity, brokerSecurityCheck, certificateDnsNames, regionServerIdentity } from '../../src/link/security.js';
import { CLI, writeConfig } from '../helpers/agent-process.js';
import { captureLogger } from './capture-logger.js';

const dir = mkdtempSync(join(tmpdir(), 'tbx-tlspolicy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cfg(broker: Record<string, unknown>, region: 'sg' | 'cn' = 'sg'): Config {
  return validateConfig({ version: 1, device: { id: 'd-tls', kind: 'sim', orgId: 'o' }, region, dataDir: join(dir, 'data'), broker: broker as ConfigInput['broker'], clock: { source: 'assume-synced' } });
}

describe('broker transport policy', () => {
  it('plaintext to a region broker is refused, naming the key and the explicit setting', () => {
    for (const url of ['mqtt://mqtt.sg.tallybox.cloud:1883', 'tcp://a.sg.tallybox.cloud']) {
      const c = cfg({ url });
      expect(() => brokerSecurity(c.broker, c.region)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(/broker\.url: plaintext .*broker\.insecure: plaintext-site-bridge/) }));
    }
  });

  it('rejectUnauthorized: false to a region broker is refused', () => {
    const c = cfg({ url: 'mqtts://mqtt.sg.tallybox.cloud:8883', tls: { rejectUnauthorized: false } });
    expect(() => brokerSecurity(c.broker, c.region)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(/broker\.tls\.rejectUnauthorized: false .*unverified-tls-site-bridge/) }));
  });

  it('verified TLS to a region broker is allowed and pinned on the certificate', () => {
    const c = cfg({ url: 'mqtts://mqtt.sg.tallybox.cloud:8883' });
    expect(brokerSecurity(c.broker, c.region)).toMatchObject({ transport: 'tls', allowedBy: 'verified-tls', certificatePinned: true, host: 'mqtt.sg.tallybox.cloud', port: 8883 });
    expect(brokerSecurityCheck(c)).toMatchObject({ verdict: 'ok', detail: expect.stringMatching(/pinned to region sg/) });
  });

  it('the explicit site-bridge settings allow exactly what they name, and doctor reports them as failures', () => {
    const plain = cfg({ url: 'mqtt://bridge.site-7.sg.tallybox.cloud:1883', insecure: 'plaintext-site-bridge' });
    expect(brokerSecurity(plain.broker, plain.region)).toMatchObject({ transport: 'plaintext', allowedBy: 'site-bridge' });
    expect(brokerSecurityCheck(plain)).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/^INSECURE: plaintext .*broker\.insecure: plaintext-site-bridge/) });
    const unverified = cfg({ url: 'mqtts://bridge.site-7.sg.tallybox.cloud', tls: { rejectUnauthorized: false }, insecure: 'unverified-tls-site-bridge' });
    expect(brokerSecurity(unverified.broker, unverified.region)).toMatchObject({ transport: 'unverified-tls', allowedBy: 'site-bridge' });
    expect(brokerSecurityCheck(unverified)).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(/^INSECURE: unverified TLS/) });
    // A setting that does not describe the link is an error, not a silent no-op.
    for (const broker of [
      { url: 'mqtts://mqtt.sg.tallybox.cloud', insecure: 'plaintext-site-bridge' },
      { url: 'mqtt://mqtt.sg.tallybox.cloud', insecure: 'unverified-tls-site-bridge' },
    ]) {
      const c = cfg(broker);
      expect(() => brokerSecurity(c.broker, c.region)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(/^broker\.insecure: .* does not describe this link/) }));
      expect(brokerSecurityCheck(c).verdict).toBe('fail');
    }
    // Neither setting widens the region.
    const c = cfg({ url: 'mqtt://mqtt.cn.tallybox.cloud', insecure: 'plaintext-site-bridge' });
    expect(() => brokerSecurity(c.broker, c.region)).toThrow(expect.objectContaining({ code: 'REGION_MISMATCH' }));
  });

  it('loopback: plaintext allowed (ok), unverified TLS allowed (warn); TLS settings with a plaintext URL are an error', () => {
    expect(brokerSecurityCheck(cfg({ url: 'mqtt://127.0.0.1:1883', allowLoopback: true }))).toMatchObject({ verdict: 'ok' });
    expect(brokerSecurityCheck(cfg({ url: 'mqtts://localhost:8883', allowLoopback: true, tls: { rejectUnauthorized: false } }))).toMatchObject({ verdict: 'warn' });
    const c = cfg({ url: 'mqtt://127.0.0.1:1883', allowLoopback: true, tls: { caFile: '/x' } });
    expect(() => brokerSecurity(c.broker, c.region)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(/^broker\.tls is set but broker\.url/) }));
  });

  it('an allowed insecure link is logged as an error when the link is built (every start)', () => {
    const log = captureLogger();
    const c = cfg({ url: 'mqtt://bridge.site-7.sg.tallybox.cloud:1883', insecure: 'plaintext-site-bridge' });
    new MqttLink({ config: c, egress: new EgressGate({ deviceId: 'd-tls', operatorOrgId: 'o' }), logger: log, nextBdSeq: async () => 1, state: () => ({}) });
    const line = log.lines.find((l) => l.fields.event === 'link_transport');
    expect(line).toMatchObject({ level: 'error', msg: expect.stringMatching(/^INSECURE broker link: plaintext to bridge\.site-7\.sg\.tallybox\.cloud, allowed only by broker\.insecure: plaintext-site-bridge/) });
  });

  it('`tallybox run` with plaintext to a region broker: exit 78, tallybox: CONFIG_INVALID, nothing written', async () => {
    const dataDir = join(dir, 'run-data');
    const file = writeConfig(dir, { version: 1, device: { id: 'd-run', kind: 'sim', orgId: 'o' }, region: 'sg', dataDir, broker: { url: 'mqtt://mqtt.sg.tallybox.cloud:1883' }, clock: { source: 'assume-synced' } });
    const r = await new Promise<{ code: number | null; stderr: string }>((res) => {
      const p = execFile(process.execPath, [CLI, 'run', '--config', file], { timeout: 20_000 }, (_e, _o, stderr) => res({ code: p.exitCode, stderr: String(stderr) }));
    });
    expect(r.code).toBe(78);
    expect(r.stderr).toMatch(/tallybox: CONFIG_INVALID: broker\.url: plaintext mqtt:\/\/ to mqtt\.sg\.tallybox\.cloud is refused/);
    expect(existsSync(dataDir)).toBe(false);
  });
});

describe('`tallybox doctor` on each unsafe setting', () => {
  const doctor = (file: string) =>
    new Promise<{ code: number | null; report: { checks: { name: string; verdict: string; detail: string }[] } }>((res) => {
      const p = execFile(process.execPath, [CLI, 'doctor', '--config', file, '--json'], { timeout: 30_000 }, (_e, stdout) => res({ code: p.exitCode, report: JSON.parse(String(stdout)) }));
    });
  it.each([
    ['plaintext to a region broker', { url: 'mqtt://mqtt.sg.tallybox.cloud:1883' }, /^CONFIG_INVALID: broker\.url: plaintext/],
    ['unverified TLS to a region broker', { url: 'mqtts://mqtt.sg.tallybox.cloud', tls: { rejectUnauthorized: false } }, /^CONFIG_INVALID: broker\.tls\.rejectUnauthorized: false/],
    ['plaintext site bridge (allowed, insecure)', { url: 'mqtt://bridge.site-7.sg.tallybox.cloud:1883', insecure: 'plaintext-site-bridge', connectTimeoutMs: 1000 }, /^INSECURE: plaintext/],
    ['unverified-TLS site bridge (allowed, insecure)', { url: 'mqtts://bridge.site-7.sg.tallybox.cloud', tls: { rejectUnauthorized: false }, insecure: 'unverified-tls-site-bridge', connectTimeoutMs: 1000 }, /^INSECURE: unverified TLS/],
  ])('%s: broker-tls fails, exit 1', async (name, broker, detail) => {
    const sub = mkdtempSync(join(dir, 'doctor-'));
    const file = writeConfig(sub, { version: 1, device: { id: 'd-doc', kind: 'sim', orgId: 'o' }, region: 'sg', dataDir: join(sub, 'data'), broker: broker as ConfigInput['broker'], clock: { source: 'assume-synced' } });
    const { code, report } = await doctor(file);
    expect(code, name).toBe(1);
    expect(
      report.checks.find((c) => c.name === 'broker-tls'),
      name,
    ).toMatchObject({ verdict: 'fail', detail: expect.stringMatching(detail) });
  });
});

describe('region pinning on certificate names', () => {
  const check = regionServerIdentity('sg');
  const cert = (san: string) => ({ subject: { CN: 'x' }, subjectaltname: san }) as unknown as import('node:tls').PeerCertificate;

  it('accepts a certificate whose every DNS name is in the region', () => {
    expect(check('mqtt.sg.tallybox.cloud', cert('DNS:mqtt.sg.tallybox.cloud, DNS:*.sg.tallybox.cloud'))).toBeUndefined();
  });

  it('refuses one that also names another region, or any other host, though the host name matches', () => {
    expect(check('mqtt.sg.tallybox.cloud', cert('DNS:mqtt.sg.tallybox.cloud, DNS:mqtt.cn.tallybox.cloud'))).toMatchObject({
      code: 'REGION_MISMATCH',
      message: expect.stringMatching(/also names mqtt\.cn\.tallybox\.cloud, outside region "sg"/),
    });
    expect(check('mqtt.sg.tallybox.cloud', cert('DNS:mqtt.sg.tallybox.cloud, DNS:broker.example.net'))).toMatchObject({ code: 'REGION_MISMATCH' });
    expect(check('10.0.0.1', cert('IP Address:10.0.0.1'))).toMatchObject({ code: 'REGION_MISMATCH', message: expect.stringMatching(/names no DNS host/) });
  });

  it("Node's host-name check still comes first", () => {
    expect(check('mqtt.sg.tallybox.cloud', cert('DNS:mqtt.cn.tallybox.cloud'))).toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('reads DNS names only from subjectAltName', () => {
    expect(certificateDnsNames({ subjectaltname: 'DNS:A.sg.tallybox.cloud, IP Address:10.0.0.1, DNS:b' })).toEqual(['a.sg.tallybox.cloud', 'b']);
  });
});
