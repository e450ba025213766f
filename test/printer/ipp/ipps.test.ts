/**
 * IPPS (RFC 7472): IppPrinter over HTTPS to the simulator serving TLS, with certificates made by
 * openssl for the test. The printer's certificate is verified against the CA file given (or the
 * system's store) and its name checked: an unknown CA and a name mismatch both fail as
 * PRINTER_UNREACHABLE (reason 'tls'), and nothing is printed.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IppPrinter } from '../../../firmware-bridge/printer/ipp/client.js';
import { startIppServer, type IppSimServer } from '../../../simulators/printer/ipp-server.js';
import { NO_FAULTS } from '../../../simulators/printer/types.js';
import { once, TempRecorder, tinyPdf } from './helpers.js';

const openssl = (cwd: string, ...args: string[]) => execFileSync('openssl', args, { cwd, stdio: 'pipe' });

describe('IPPS: IppPrinter over TLS to the simulator', () => {
  let dir: string;
  let recorder: TempRecorder;
  const servers: IppSimServer[] = [];
  let good: number;
  let wrongName: number;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tallybox-ipps-'));
    openssl(dir, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=tallybox-test-ca', '-keyout', 'ca.key', '-out', 'ca.crt');
    for (const [name, san] of [
      ['printer', 'IP:127.0.0.1,DNS:localhost'],
      ['other', 'DNS:other.example'],
    ] as const) {
      writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
      openssl(dir, 'req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
      openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`);
    }
    recorder = new TempRecorder();
    const ctx = { recorder, faults: { ...NO_FAULTS }, status: () => ({ state: 'idle' as const, reasons: [] }) };
    const tls = (n: string) => ({ key: readFileSync(join(dir, `${n}.key`)), cert: readFileSync(join(dir, `${n}.crt`)) });
    servers.push(await startIppServer(ctx, { host: '127.0.0.1', port: 0, tls: tls('printer') }));
    servers.push(await startIppServer(ctx, { host: '127.0.0.1', port: 0, tls: tls('other') }));
    good = servers[0]!.port;
    wrongName = servers[1]!.port;
  }, 60_000);

  afterAll(async () => {
    for (const s of servers) await s.close();
    recorder?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('prints with the CA file given; printer-uri is ipps:// and uri-security-supported tls', async () => {
    const p = new IppPrinter({ url: `ipps://127.0.0.1:${good}/ipp/print`, caFile: join(dir, 'ca.crt'), confirmWaitMs: 2_000, pollIntervalMs: 50 });
    expect(await p.probe()).toEqual({ state: 'idle', reasons: ['none'] });
    const pdf = tinyPdf('ipps');
    const r = await p.send({ jobName: 'job-tls', format: 'application/pdf', copies: 1, document: once(pdf) });
    expect(r.jobState).toBe('completed');
    const job = recorder.jobs().find((j) => j.name === 'job-tls')!;
    expect(recorder.bytesOf(job).equals(pdf)).toBe(true);
  });

  it('without the CA file (the system store does not know this CA): PRINTER_UNREACHABLE, reason tls', async () => {
    const p = new IppPrinter({ url: `ipps://127.0.0.1:${good}/ipp/print` });
    await expect(p.probe()).rejects.toMatchObject({ code: 'PRINTER_UNREACHABLE', details: { reason: 'tls' } });
  });

  it("a certificate for another name fails the name check: PRINTER_UNREACHABLE, reason tls, nothing printed", async () => {
    const before = recorder.jobs().length;
    const p = new IppPrinter({ url: `ipps://127.0.0.1:${wrongName}/ipp/print`, caFile: join(dir, 'ca.crt') });
    await expect(p.send({ jobName: 'x', format: 'application/pdf', copies: 1, document: once(tinyPdf()) })).rejects.toMatchObject({ code: 'PRINTER_UNREACHABLE', details: { reason: 'tls', cause: 'ERR_TLS_CERT_ALTNAME_INVALID' } });
    expect(recorder.jobs().length).toBe(before);
  });

  it('a CA file that cannot be read is a configuration error at construction', () => {
    expect(() => new IppPrinter({ url: `ipps://127.0.0.1:${good}/ipp/print`, caFile: join(dir, 'missing.crt') })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(() => new IppPrinter({ url: 'ipp://127.0.0.1/ipp/print', caFile: join(dir, 'ca.crt') })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(() => new IppPrinter({ url: 'lpd://127.0.0.1/q' })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });
});
