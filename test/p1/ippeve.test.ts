/**
 * The P1 role over a real IPP printer: a real `tallybox run` child (device.kind p1) takes signed
 * PrintJob / CancelJob commands from the cloud emulator over MQTT and prints through IPP to Debian's
 * `ippeveprinter` (cups-ipp-utils), started here with `-k` so it keeps every document it receives.
 * - inline and fetched (HTTPS, private CA) jobs: the kept document equals the one sent, byte for byte;
 *   the job ends `confirmed` (the printer's IPP job-state, not delivery) and is shredded: the signed
 *   receipt verifies, the spool directory is empty, the spool database has no row, and no sample of
 *   the document is found in any file of the data directory;
 * - a fetched job whose bytes do not match their SHA-256 fails, nothing reaches the printer;
 * - a job cancelled while it is being sent over IPP (a relay in front of ippeveprinter slows the
 *   transfer so the CancelJob lands mid-stream) ends `cancelled` and shredded, ippeveprinter ends
 *   its job canceled (never completed), and the next job prints.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createPublicKey, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { dump as yaml } from 'js-yaml';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IppPrinter } from '../../firmware-bridge/printer/ipp/client.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { makePrivateCa, PrintDocServer, type PrivateCa } from '../../simulators/cloud/print-docs.js';
import { cancelJobBody, printJobBody, PrintStatusBook, type PrintJobSpec } from '../../simulators/cloud/print-jobs.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { PrintDocumentFormat, ResultCode } from '../../src/proto/index.js';
import { Sqlite } from '../../src/store/sqlite.js';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { CLI } from '../helpers/agent-process.js';
import { freePort, waitUntil } from '../helpers/ports.js';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';
import { ensureDnsSdDaemons } from '../printer/ipp/daemons.js';
import { tinyPdf } from '../printer/ipp/helpers.js';

const eve = systemPeer('ippeveprinter', { pkg: 'cups-ipp-utils' });
const peers = [eve, systemPeer('avahi-daemon', { pkg: 'avahi-daemon' }), systemPeer('dbus-daemon', { pkg: 'dbus' }), systemPeer('openssl', { pkg: 'openssl' })];

const DEVICE = 'p1-eve';
const ORG = 'org-a';
const PDF = PrintDocumentFormat.PRINT_DOCUMENT_FORMAT_PDF;

/** A PDF of about `size` bytes whose body is random (so a sample of it cannot occur by chance anywhere else). */
function pdf(size: number): Buffer {
  return Buffer.concat([tinyPdf('tallybox p1 ippeve'), Buffer.from('%'), randomBytes(size), Buffer.from('\n%%EOF\n')]);
}

/** 48-byte windows of the document at spread offsets: what must not survive the job anywhere on disk. */
function samplesOf(doc: Buffer, n = 16): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const at = Math.floor(((doc.length - 48) * i) / Math.max(1, n - 1));
    out.push(Buffer.from(doc.subarray(at, at + 48)));
  }
  return out;
}

/**
 * A TCP relay in front of ippeveprinter. With `slow` on, what the agent sends is passed on in 16 KiB
 * steps 10 ms apart (~1.6 MB/s), so a job is still being sent when a CancelJob arrives however fast
 * the machine is. Not a fake printer: every byte still goes to ippeveprinter and back unchanged.
 */
async function slowableRelay(upstreamPort: number) {
  const sockets = new Set<Socket>();
  const state = { slow: false };
  const server = createServer((client) => {
    const up = connect({ host: '127.0.0.1', port: upstreamPort });
    sockets.add(client).add(up);
    const drop = () => (client.destroy(), up.destroy());
    client.on('error', drop).on('close', drop);
    up.on('error', drop).on('close', drop);
    up.pipe(client);
    client.on('data', (d: Buffer) => {
      if (!state.slow) return void up.write(d);
      client.pause();
      void (async () => {
        for (let o = 0; o < d.length && !up.destroyed; o += 16 * 1024) {
          up.write(d.subarray(o, o + 16 * 1024));
          await new Promise((r) => setTimeout(r, 10));
        }
        client.resume();
      })();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    state,
    close: () => new Promise<void>((r) => (sockets.forEach((s) => s.destroy()), server.close(() => r()))),
  };
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

describeWithPeer(peers, 'the P1 role (tallybox run) printing to a real ippeveprinter over IPP', () => {
  let dir: string;
  let keptDir: string;
  let dataDir: string;
  let eveProc: ChildProcess | undefined;
  let eveLog = '';
  let agent: ChildProcess | undefined;
  let agentLog = '';
  const states: Array<{ jobId: string; to: string }> = [];
  let broker: EmbeddedBroker;
  let ca: PrivateCa;
  let docs: PrintDocServer;
  let sink: CloudSink;
  let book: PrintStatusBook;
  const signer = new CommandSigner({ keyId: 'cloud-eve' });
  let printerUrl: string;
  let relay: Awaited<ReturnType<typeof slowableRelay>> | undefined;

  beforeAll(async () => {
    ensureDnsSdDaemons();
    dir = mkdtempSync(join(tmpdir(), 'tbx-p1-ippeve-'));
    keptDir = join(dir, 'kept');
    mkdirSync(keptDir);
    // ippeveprinter runs this with each spooled file; "slow" jobs stay processing a while.
    const cmd = join(dir, 'print.sh');
    writeFileSync(cmd, '#!/bin/sh\ncase "$1" in *slow*) sleep 4;; esac\nexit 0\n');
    chmodSync(cmd, 0o700);
    const port = await freePort();
    eveProc = spawn(eve.path!, ['-k', '-c', cmd, '-p', String(port), '-d', keptDir, '-n', 'localhost', '-f', 'application/pdf,image/pwg-raster,application/octet-stream', `tallybox-p1-${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    eveProc.stdout!.on('data', (d: Buffer) => (eveLog = (eveLog + d.toString()).slice(-20_000)));
    eveProc.stderr!.on('data', (d: Buffer) => (eveLog = (eveLog + d.toString()).slice(-20_000)));
    const probe = new IppPrinter({ url: `ipp://127.0.0.1:${port}/ipp/print`, timeoutMs: 5_000 });
    await waitUntil(async () => (await probe.probe().catch(() => undefined)) !== undefined || eveProc!.exitCode !== null, 30_000, 'ippeveprinter to answer');
    if (eveProc.exitCode !== null) throw new Error(`ippeveprinter exited ${eveProc.exitCode}: ${eveLog}`);

    relay = await slowableRelay(port);
    printerUrl = `ipp://127.0.0.1:${relay.port}/ipp/print`;
    broker = await startEmbeddedBroker();
    ca = await makePrivateCa();
    docs = await PrintDocServer.start({ ca });
    dataDir = join(dir, 'data');
    const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    book = new PrintStatusBook({ deviceKey: createPublicKey(keys.publicKeyPem) });
    sink = await CloudSink.connect({
      url: broker.url,
      onResult: () => {
        const last = sink.rawResults().at(-1)!;
        book.add(last.result, last.raw);
      },
    });
    const config = {
      version: 1,
      device: { id: DEVICE, kind: 'p1', orgId: ORG },
      region: 'sg',
      dataDir,
      broker: { url: broker.url, allowLoopback: true, reconnectMinMs: 50, reconnectMaxMs: 300 },
      vault: { kekFile: keys.kekPath },
      cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
      clock: { source: 'assume-synced' },
      outbox: { backlogRatePerSec: 0 },
      log: { level: 'info' },
      p1: {
        printers: { eve: { url: printerUrl } },
        inlineMaxBytes: 512 * 1024,
        fetch: { caFile: ca.caFile, timeoutMs: 60_000 },
        retry: { minMs: 200, maxMs: 2_000 },
        heartbeatMs: 2_000,
      },
    };
    const configFile = join(dir, 'tallybox.yaml');
    writeFileSync(configFile, yaml(config));
    agent = spawn(process.execPath, [CLI, 'run', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    createInterface({ input: agent.stderr! }).on('line', (line) => {
      agentLog = (agentLog + line + '\n').slice(-30_000);
      if (!line.includes('"p1_job_state"')) return;
      try {
        const j = JSON.parse(line) as { jobId: string; to: string };
        states.push({ jobId: j.jobId, to: j.to });
      } catch {
        // not a JSON log line: nothing to record
      }
    });
    await waitUntil(() => sink.state(DEVICE) !== undefined || agent!.exitCode !== null, 60_000, 'the agent to come online');
    if (agent.exitCode !== null) throw new Error(`agent exited ${agent.exitCode}: ${agentLog}`);
    // The print role starts after the link; until then a PrintJob is answered print_role_not_started.
    await waitUntil(() => agentLog.includes('"peripheral":"printer:eve","online":true') || agent!.exitCode !== null, 60_000, 'the printer supervisor to see ippeveprinter');
  }, 120_000);

  afterAll(async () => {
    const stop = async (p: ChildProcess | undefined) => {
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    };
    await stop(agent);
    await sink?.close();
    await docs?.close();
    await broker?.close();
    await ca?.cleanup();
    await relay?.close();
    await stop(eveProc);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  /** Sign and publish a PrintJob; resolves with the command's own answer. */
  async function submit(spec: PrintJobSpec) {
    await sink.sendCommand(signer, ORG, DEVICE, printJobBody(spec));
    return (await sink.waitForResult(signer.lastCounter, 60_000)).result;
  }

  const ended = (jobId: string) => waitUntil(() => ['confirmed', 'failed', 'cancelled', 'uncertain'].includes(book.state(jobId) ?? ''), 90_000, `job ${jobId} to end (is ${book.state(jobId)}; agent log: ${agentLog.slice(-2000)})`, 50);

  /** The documents ippeveprinter kept for a job: IPPJOBID-JOBNAME.pdf (its print command's output, .prn, is not one). */
  const kept = (jobId: string) => readdirSync(keptDir).filter((n) => /^\d+-/.test(n) && n.replace(/^\d+-/, '') === `${jobId}.pdf`);

  /** The shred, checked from outside: receipt verified, spool dir empty, no row, no sample anywhere in the data dir. */
  async function expectShredded(jobId: string, samples: Buffer[]) {
    const view = book.jobs.get(jobId)!;
    expect(view.receiptError).toBeUndefined();
    expect(view.receipt).toMatchObject({ kind: 'print_job', requestRef: `print:${jobId}`, ok: true, verification: 'verified', counts: { jobKeysDestroyed: 1, spoolFilesRemoved: 1 } });
    expect(readdirSync(join(dataDir, 'spool'))).toEqual([]);
    const db = await Sqlite.open(join(dataDir, 'p1-spool.db'), { readonly: true });
    try {
      expect(await db.all('SELECT job_id FROM p1_jobs WHERE job_id = ?', [jobId])).toEqual([]);
    } finally {
      await db.close();
    }
    const files = filesUnder(dataDir);
    expect(files.some((f) => f.endsWith('.db'))).toBe(true);
    for (const f of files) {
      const bytes = readFileSync(f);
      for (const s of samples) expect(bytes.includes(s), `a sample of job ${jobId}'s document in ${f}`).toBe(false);
    }
  }

  it('an inline PDF job: kept byte for byte by ippeveprinter, confirmed by IPP job-state, shredded', async () => {
    const doc = pdf(200_000);
    const samples = samplesOf(doc);
    const r = await submit({ jobId: 'eve-inline-1', printer: 'eve', format: PDF, inline: doc });
    expect(r).toMatchObject({ code: ResultCode.RESULT_CODE_OK, reason: 'job_queued' });
    await ended('eve-inline-1');
    expect(book.state('eve-inline-1')).toBe('confirmed');
    expect(book.jobs.get('eve-inline-1')!.bytes).toBe(doc.length);
    const files = kept('eve-inline-1');
    expect(files, readdirSync(keptDir).join(', ')).toHaveLength(1);
    expect(readFileSync(join(keptDir, files[0]!)).equals(doc)).toBe(true);
    await expectShredded('eve-inline-1', samples);
  }, 120_000);

  it('a fetched PDF job (HTTPS, hash ok, 3 MB): kept byte for byte, confirmed, shredded', async () => {
    const doc = pdf(3 * 1024 * 1024);
    const samples = samplesOf(doc);
    const served = docs.add('eve-fetched-2', doc);
    const r = await submit({ jobId: 'eve-fetched-2', printer: 'eve', format: PDF, fetch: served });
    expect(r).toMatchObject({ code: ResultCode.RESULT_CODE_OK, reason: 'job_queued' });
    await ended('eve-fetched-2');
    expect(book.state('eve-fetched-2')).toBe('confirmed');
    expect(docs.requests.get('eve-fetched-2')).toBe(1);
    const files = kept('eve-fetched-2');
    expect(files, readdirSync(keptDir).join(', ')).toHaveLength(1);
    expect(readFileSync(join(keptDir, files[0]!)).equals(doc)).toBe(true);
    await expectShredded('eve-fetched-2', samples);
  }, 120_000);

  it('a fetched job whose bytes do not match their SHA-256: failed, nothing reaches the printer, nothing left', async () => {
    const doc = pdf(100_000);
    const served = docs.add('eve-badhash-3', doc);
    const wrong = Buffer.from(served.sha256);
    wrong[0]! ^= 1;
    await submit({ jobId: 'eve-badhash-3', printer: 'eve', format: PDF, fetch: { ...served, sha256: wrong } });
    await ended('eve-badhash-3');
    expect(book.jobs.get('eve-badhash-3')).toMatchObject({ stateName: 'failed', errorCode: 'FETCH_HASH_MISMATCH' });
    expect(kept('eve-badhash-3')).toEqual([]);
    expect(states.filter((s) => s.jobId === 'eve-badhash-3').map((s) => s.to)).not.toContain('sending');
    expect(readdirSync(join(dataDir, 'spool'))).toEqual([]);
    for (const f of filesUnder(dataDir)) for (const s of samplesOf(doc)) expect(readFileSync(f).includes(s), `a sample in ${f}`).toBe(false);
  }, 120_000);

  it('a job cancelled while it is being sent over IPP: cancelled, shredded, never completed at the printer', async () => {
    // 8 MB through the slowed relay: several seconds of sending, so the CancelJob lands mid-transfer.
    const doc = pdf(8 * 1024 * 1024);
    const served = docs.add('eve-slow-cancel-4', doc);
    const samples = samplesOf(doc);
    await submit({ jobId: 'eve-slow-cancel-4', printer: 'eve', format: PDF, fetch: served });
    relay!.state.slow = true;
    let c: Awaited<ReturnType<typeof sink.waitForResult>>['result'];
    try {
      await waitUntil(() => states.some((s) => s.jobId === 'eve-slow-cancel-4' && s.to === 'sending'), 90_000, 'the job to be sending');
      await sink.sendCommand(signer, ORG, DEVICE, cancelJobBody('eve-slow-cancel-4'));
      c = (await sink.waitForResult(signer.lastCounter, 60_000)).result;
      await ended('eve-slow-cancel-4');
    } finally {
      relay!.state.slow = false;
    }
    const seen = states.filter((s) => s.jobId === 'eve-slow-cancel-4').map((s) => s.to);
    // Cancelled in `sending`: the transfer was aborted, it never reached `sent`.
    expect(c, JSON.stringify(seen)).toMatchObject({ code: ResultCode.RESULT_CODE_OK, reason: 'job_cancelled', detail: 'cancelled while it was being fetched or sent' });
    expect(seen).not.toContain('sent');
    const view = book.jobs.get('eve-slow-cancel-4')!;
    expect(view).toMatchObject({ stateName: 'cancelled', errorCode: 'CANCELLED' });
    expect(view.bytes).toBeLessThan(doc.length);
    await expectShredded('eve-slow-cancel-4', samples);
    // ippeveprinter either dropped the partial document or kept a part of it: never the whole.
    const partial = kept('eve-slow-cancel-4');
    for (const f of partial) expect(statSync(join(keptDir, f)).size).toBeLessThan(doc.length);
    // And ippeveprinter itself ends the job it created (its id prefixes the kept file's name) canceled
    // or aborted, never completed. (It may show `processing` briefly: the aborted stream reaches it
    // before the Cancel-Job does.)
    const ipp = new IppPrinter({ url: printerUrl, timeoutMs: 10_000 });
    for (const f of partial) {
      const ref = f.split('-')[0]!;
      let st = '';
      await waitUntil(async () => ['canceled', 'aborted', 'completed'].includes((st = await ipp.jobState(ref))), 60_000, `ippeveprinter job ${ref} to end`);
      expect(st).not.toBe('completed');
    }
    // The printer is left usable: the next job prints.
    const next = pdf(10_000);
    await submit({ jobId: 'eve-after-5', printer: 'eve', format: PDF, inline: next });
    await ended('eve-after-5');
    expect(book.state('eve-after-5')).toBe('confirmed');
    expect(readFileSync(join(keptDir, kept('eve-after-5')[0]!)).equals(next)).toBe(true);
  }, 240_000);
});
