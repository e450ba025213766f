/**
 * A CUPS queue pointed at the simulator: a private `cupsd` (packages cups-daemon, cups-client) with
 * its own configuration, spool and state directories in a temp dir, listening on a free port; a raw
 * queue made with `lpadmin -v ipp://…/ipp/print` and a file printed with `lp`. CUPS's ipp backend
 * (Get-Printer-Attributes, Create-Job + Send-Document, Get-Job-Attributes until done) drives the
 * simulator; the document arrives byte for byte and CUPS reports the job completed.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freePort, waitUntil } from '../../helpers/ports.js';
import { describeWithPeer, systemPeer } from '../../helpers/system-peer.js';
import { type SimHarness, startSim, tinyPdf } from './helpers.js';

const run = promisify(execFile);
const cupsd = systemPeer('cupsd', { pkg: 'cups-daemon' });
const lp = systemPeer('lp', { pkg: 'cups-client' });
const lpadmin = systemPeer('lpadmin', { pkg: 'cups-client' });
const lpstat = systemPeer('lpstat', { pkg: 'cups-client' });

describeWithPeer([cupsd, lp, lpadmin, lpstat], 'a CUPS queue printing to the simulator', () => {
  let sim: SimHarness;
  let dir: string;
  let proc: ChildProcess | undefined;
  let server: string;
  let log = '';

  beforeAll(async () => {
    sim = await startSim();
    dir = mkdtempSync(join(tmpdir(), 'tallybox-cups-'));
    for (const d of ['etc', 'spool', 'tmp', 'cache', 'state', 'log']) mkdirSync(join(dir, d));
    // cupsd runs its backends and filters as user lp: the directories it writes must be open to it.
    chmodSync(dir, 0o755);
    for (const d of ['spool', 'tmp', 'cache', 'state', 'log']) chmodSync(join(dir, d), 0o777);
    const port = await freePort();
    server = `127.0.0.1:${port}`;
    writeFileSync(
      join(dir, 'etc', 'cupsd.conf'),
      [
        `Listen ${server}`,
        'LogLevel info',
        'Browsing Off',
        'WebInterface No',
        'DefaultAuthType None',
        '<Location />',
        '  Order allow,deny',
        '  Allow all',
        '</Location>',
        '<Policy default>',
        '  <Limit All>',
        '    Order deny,allow',
        '  </Limit>',
        '</Policy>',
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(dir, 'etc', 'cups-files.conf'),
      [
        `ServerRoot ${join(dir, 'etc')}`,
        `RequestRoot ${join(dir, 'spool')}`,
        `TempDir ${join(dir, 'tmp')}`,
        `CacheDir ${join(dir, 'cache')}`,
        `StateDir ${join(dir, 'state')}`,
        `ErrorLog ${join(dir, 'log', 'error_log')}`,
        `AccessLog ${join(dir, 'log', 'access_log')}`,
        `PageLog ${join(dir, 'log', 'page_log')}`,
        'SystemGroup root',
        '',
      ].join('\n'),
    );
    proc = spawn(cupsd.path!, ['-f', '-c', join(dir, 'etc', 'cupsd.conf'), '-s', join(dir, 'etc', 'cups-files.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    await waitUntil(
      async () => {
        if (proc!.exitCode !== null) throw new Error(`cupsd exited ${proc!.exitCode}: ${log}`);
        return run(lpstat.path!, ['-h', server, '-r']).then(
          () => true,
          () => false,
        );
      },
      30_000,
      'cupsd to answer',
      200,
    );
    await run(lpadmin.path!, ['-h', server, '-p', 'tallybox-sim', '-E', '-v', sim.url]);
  }, 60_000);

  afterAll(async () => {
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc!.once('exit', r));
      proc.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
    await sim?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('lp prints a file through the queue: the simulator records it byte for byte and CUPS says completed', async () => {
    const file = join(dir, 'tmp', 'page.pdf');
    const pdf = tinyPdf('through cups');
    writeFileSync(file, pdf);
    const { stdout } = await run(lp.path!, ['-h', server, '-d', 'tallybox-sim', '-o', 'raw', '-t', 'job-cups-1', file]);
    const id = /request id is (\S+)/.exec(stdout)?.[1];
    expect(id).toBe('tallybox-sim-1');
    await waitUntil(() => sim.recorder.jobs().some((j) => j.state === 'completed'), 60_000, 'the simulator to record the job');
    const job = sim.recorder.jobs()[0]!;
    expect(job).toMatchObject({ protocol: 'ipp', state: 'completed', bytes: pdf.length });
    expect(sim.bytesOf(job).equals(pdf)).toBe(true);
    await waitUntil(async () => (await run(lpstat.path!, ['-h', server, '-W', 'completed', '-o', 'tallybox-sim'])).stdout.includes(id!), 60_000, 'CUPS to list the job as completed', 250);
    expect(readFileSync(join(dir, 'log', 'error_log'), 'utf8')).toContain('Job completed');
  }, 120_000);
});
