/**
 * Storage that never silently loses or reuses (issue 8 §4), on real SQLite
 * files damaged the way devices damage them: a 0-byte outbox, garbage in the
 * -wal after a SIGKILL, a corrupt row page (at start and at run time), a
 * damaged or missing sequence mark, and two agents on one data directory.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, writeSync, closeSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { Outbox, seqMarkPath } from '../../src/outbox/outbox.js';
import { AlarmCode, PunchMethod } from '../../src/proto/index.js';
import { SeqMark } from '../../src/store/seq-mark.js';
import { Sqlite } from '../../src/store/sqlite.js';
import { isTallyboxError } from '../../src/util/errors.js';
import { silentLogger, type Logger } from '../../src/util/log.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { testConfig } from '../helpers/agent-config.js';
import { AgentProcess, CLI, postPunch, writeConfig } from '../helpers/agent-process.js';
import { freePort, sleep, waitUntil } from '../helpers/ports.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tbx-damage-'));
  dirs.push(d);
  return d;
}
const procs: AgentProcess[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) await p.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A logger that keeps every line (as JSON) for the assertions. */
function captureLogger(lines: string[]): Logger {
  const fn = (f: unknown, msg?: string) => void lines.push(typeof f === 'string' ? f : `${JSON.stringify(f)} ${msg ?? ''}`);
  const l: Logger = { level: 'trace', trace: fn, debug: fn, info: fn, warn: fn, error: fn, fatal: fn, child: () => l };
  return l;
}

const punch = (i: number) => ({ orgId: 'org-a', subjectId: `s-${i}`, method: PunchMethod.PUNCH_METHOD_CARD });
const digest = (dir: string) =>
  readdirSync(dir)
    .sort()
    .map(
      (f) =>
        `${f}:${createHash('sha256')
          .update(readFileSync(join(dir, f)))
          .digest('hex')}`,
    );

async function fill(path: string, n: number, opts: { concurrent?: boolean } = {}): Promise<number[]> {
  const o = await Outbox.open({ path, capacity: 1_000_000 });
  const seqs: number[] = [];
  if (opts.concurrent) seqs.push(...(await Promise.all(Array.from({ length: n }, (_, i) => o.accept(punch(i))))).map((r) => r.seq));
  else for (let i = 0; i < n; i++) seqs.push((await o.accept(punch(i))).seq);
  await o.close();
  return seqs;
}

describe('a lost or damaged outbox file', () => {
  it('0-byte outbox.db: STORAGE_LOST with the range, numbering continues, nothing reused', async () => {
    const dir = tmp();
    const path = join(dir, 'outbox.db');
    await fill(path, 400, { concurrent: true });
    truncateSync(path, 0);
    rmSync(`${path}-wal`, { force: true });
    rmSync(`${path}-shm`, { force: true });

    const alarms: string[] = [];
    const o = await Outbox.open({ path, capacity: 1000, onAlarm: (a, on, d) => alarms.push(`${a}:${on}:${d}`) });
    expect(o.loss).toEqual({ from: 1, to: 400, skippedTo: 400 });
    expect([...o.activeAlarms().keys()]).toEqual(['STORAGE_LOST']);
    expect(o.activeAlarms().get('STORAGE_LOST')).toMatch(/400 accepted punches lost .*seq 1\.\.400.*continues at 401/);
    expect((await o.accept(punch(1))).seq).toBe(401);
    await o.close();
  });

  it('the alarm reaches DeviceState, and stays raised across restarts until a punch was delivered after it', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir);
    const path = join(dataDir, 'outbox.db');
    await fill(path, 30, { concurrent: true });
    rmSync(path);
    rmSync(`${path}-wal`, { force: true });
    const port = await freePort();
    const config = validateConfig(testConfig({ dataDir, brokerUrl: `mqtt://127.0.0.1:${port}` }));
    // Broker down: the loss cannot be reported yet, so a restart raises it again.
    let agent = await Agent.start({ config, logger: silentLogger() });
    expect(agent.state().alarms?.find((a) => a.code === AlarmCode.ALARM_CODE_STORAGE_LOST)?.detail).toMatch(/seq 1\.\.30/);
    await agent.stop();
    agent = await Agent.start({ config, logger: silentLogger() });
    expect(agent.state().alarms?.map((a) => a.code)).toContain(AlarmCode.ALARM_CODE_STORAGE_LOST);
    const broker = await startEmbeddedBroker({ port });
    try {
      expect((await agent.punch(punch(1))).seq).toBe(31);
      await waitUntil(() => agent.outbox.depth === 0, 10_000, 'the new punch delivered');
      // Still raised in this run; the next start does not raise it again.
      expect(agent.state().alarms?.map((a) => a.code)).toContain(AlarmCode.ALARM_CODE_STORAGE_LOST);
      await agent.stop();
      agent = await Agent.start({ config, logger: silentLogger() });
      expect(agent.state().alarms?.map((a) => a.code) ?? []).not.toContain(AlarmCode.ALARM_CODE_STORAGE_LOST);
      expect((await agent.punch(punch(2))).seq).toBe(32);
    } finally {
      await agent.stop();
      await broker.close();
    }
  });

  it('a lost file whose punches had all been delivered: no alarm, but no number is reused either', async () => {
    const dir = tmp();
    const path = join(dir, 'outbox.db');
    const o1 = await Outbox.open({ path, capacity: 1000 });
    const rows = await Promise.all(Array.from({ length: 50 }, (_, i) => o1.accept(punch(i))));
    for (const r of rows) o1.ack(r.seq);
    await o1.flushAcks();
    await o1.close();
    rmSync(path);
    rmSync(`${path}-wal`, { force: true });
    const o = await Outbox.open({ path, capacity: 1000 });
    expect(o.loss).toBeUndefined();
    expect(o.activeAlarms().size).toBe(0);
    expect((await o.accept(punch(1))).seq).toBe(51);
    await o.close();
  });

  it('the connection counter (bd_seq) is not reused after the file is lost', async () => {
    const dir = tmp();
    const path = join(dir, 'outbox.db');
    const o1 = await Outbox.open({ path, capacity: 10 });
    for (let i = 0; i < 3; i++) await o1.nextBdSeq();
    await o1.close();
    rmSync(path);
    rmSync(`${path}-wal`, { force: true });
    const o = await Outbox.open({ path, capacity: 10 });
    expect(await o.nextBdSeq()).toBe(4);
    await o.close();
  });

  it('garbage in the -wal after a SIGKILL: the lost tail is an alarm with its range, and the next punch reuses no number', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const apiPort = await freePort();
    // Broker unreachable: every accepted punch stays in the outbox (in the WAL: no checkpoint at this size).
    const file = writeConfig(dir, testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1', apiPort }));
    const agent = new AgentProcess(file, apiPort);
    procs.push(agent);
    await agent.start();
    const accepted: number[] = [];
    for (let i = 0; i < 120; i++) {
      const r = await postPunch(apiPort, { orgId: 'org-a', subjectId: `s-${i}`, method: 'CARD' });
      if (r.status !== 'accepted') throw new Error(`punch ${i}: ${r.status}`);
      accepted.push(r.seq);
    }
    await agent.kill('SIGKILL');
    const wal = join(dataDir, 'outbox.db-wal');
    const size = statSync(wal).size;
    expect(size).toBeGreaterThan(100 * 4096);
    // Overwrite 4 KiB about two thirds in: SQLite's recovery stops at the first bad frame.
    const fd = openSync(wal, 'r+');
    writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, Math.floor((size * 2) / 3));
    closeSync(fd);

    // What SQLite itself now sees: the tail is gone.
    const ro = await Sqlite.open(join(dataDir, 'outbox.db'), { readonly: true });
    const left = (await ro.get<{ n: number; m: number }>('SELECT count(*) AS n, max(seq) AS m FROM punches'))!;
    await ro.close();
    expect(left.n).toBeLessThan(accepted.length);

    await agent.start();
    const state = (await (await fetch(`http://127.0.0.1:${apiPort}/v1/state`)).json()) as { alarms?: { code: string; detail: string }[] };
    const lost = state.alarms?.find((a) => a.code === 'ALARM_CODE_STORAGE_LOST');
    expect(lost?.detail).toContain(`seq ${left.m + 1}..${accepted.at(-1)}`);
    const next = await postPunch(apiPort, { orgId: 'org-a', subjectId: 's-next', method: 'CARD' });
    expect(next.status).toBe('accepted');
    expect(next.status === 'accepted' && next.seq).toBeGreaterThan(accepted.at(-1)!);
    expect(agent.stderr).toMatch(/STORAGE_LOST/);
  }, 60_000);

  it('a damaged sequence mark: refused with STORAGE_CORRUPT, nothing changed; a torn slot falls back to the other', async () => {
    const dir = tmp();
    const path = join(dir, 'outbox.db');
    await fill(path, 10);
    const mark = seqMarkPath(path);
    const good = readFileSync(mark);
    // Tear the newer slot: the older one still says where numbering stands.
    const torn = Buffer.from(good);
    torn.fill(0x00, 72 + 20, 72 + 40);
    torn.fill(0x00, 20, 40);
    writeFileSync(mark, torn);
    const before = digest(dir);
    await expect(Outbox.open({ path, capacity: 100 })).rejects.toMatchObject({ code: 'STORAGE_CORRUPT', message: expect.stringMatching(/outbox\.seq is damaged/) });
    expect(digest(dir)).toEqual(before);

    writeFileSync(mark, Buffer.concat([good.subarray(0, 72), Buffer.alloc(72, 0x33)]));
    const o = await Outbox.open({ path, capacity: 100 });
    expect(o.lastSeq).toBe(10);
    expect((await o.accept(punch(1))).seq).toBe(11);
    await o.close();

    writeFileSync(mark, Buffer.alloc(0));
    await expect(Outbox.open({ path, capacity: 100 })).rejects.toMatchObject({ code: 'STORAGE_CORRUPT' });
  });

  it('a missing mark beside a healthy outbox is rebuilt from it (and says so)', async () => {
    const dir = tmp();
    const path = join(dir, 'outbox.db');
    await fill(path, 7);
    rmSync(seqMarkPath(path));
    const lines: string[] = [];
    const logger = captureLogger(lines);
    const o = await Outbox.open({ path, capacity: 100, logger });
    expect(lines.join()).toMatch(/no sequence mark/);
    expect((await o.accept(punch(1))).seq).toBe(8);
    expect(o.seqMark.accepted).toBe(8);
    await o.close();
  });
});

describe('a commit that never finished (the mark is written alongside each commit)', () => {
  /** The mark as a SIGKILL during a commit of `n` punches leaves it: those numbers recorded, `committing: n`. */
  async function markCommitInFlight(path: string, n: number): Promise<number> {
    const markPath = seqMarkPath(path);
    const found = SeqMark.read(markPath)!;
    const accepted = found.state.accepted + n;
    const m = await SeqMark.open(markPath, found, { ...found.state, reserved: Math.max(found.state.reserved, accepted), accepted, committing: n });
    await m.close();
    return accepted;
  }

  it('its rows missing at the next start: not a loss (they were never reported accepted), said as a warning; numbering goes on from the file (no gap the cloud would take for a loss)', async () => {
    const dir = tmp();
    const path = join(dir, 'outbox.db');
    await fill(path, 10);
    await markCommitInFlight(path, 2);
    const lines: string[] = [];
    const o = await Outbox.open({ path, capacity: 100, logger: captureLogger(lines) });
    expect(o.loss).toBeUndefined();
    expect(o.activeAlarms().size).toBe(0);
    expect(lines.join('\n')).toMatch(/last commit before the agent stopped \(seq 11\.\.12\) did not finish/);
    expect(o.seqMark.committing).toBe(0);
    expect((await o.accept(punch(1))).seq).toBe(11);
    await o.close();
  });

  it('a loss reaching further back is still a loss, up to the last finished commit', async () => {
    const dir = tmp();
    const path = join(dir, 'outbox.db');
    await fill(path, 10);
    await markCommitInFlight(path, 3);
    truncateSync(path, 0);
    rmSync(`${path}-wal`, { force: true });
    rmSync(`${path}-shm`, { force: true });
    const o = await Outbox.open({ path, capacity: 100 });
    expect(o.loss).toEqual({ from: 1, to: 10, skippedTo: 13 });
    expect(o.activeAlarms().get('STORAGE_LOST')).toMatch(/10 accepted punches lost .*seq 1\.\.10.*continues at 14/);
    expect((await o.accept(punch(1))).seq).toBe(14);
    await o.close();
  });

  it('a mark claiming more numbers in flight than it accepted is damage: refused, never read as a state', async () => {
    const dir = tmp();
    const path = join(dir, 'outbox.db');
    await fill(path, 3);
    const markPath = seqMarkPath(path);
    const found = SeqMark.read(markPath)!;
    // One slot written with a valid CRC but contradictory numbers (the other keeps the last good state) ...
    const m = await SeqMark.open(markPath, found, { ...found.state, committing: found.state.accepted + 5 });
    await m.close();
    const file = readFileSync(markPath);
    const [a, b] = [file.subarray(0, 72), file.subarray(72, 144)];
    // ... so one of the two files made of a single slot twice is the good state, the other is refused.
    const outcomes = [Buffer.concat([a, a]), Buffer.concat([b, b])].map((twice) => {
      writeFileSync(markPath, twice);
      try {
        return `read ${SeqMark.read(markPath)!.state.committing}`;
      } catch (err) {
        return (err as { code?: string }).code;
      }
    });
    expect([...outcomes].sort()).toEqual(['STORAGE_CORRUPT', 'read 0']);
    const bad = outcomes[0] === 'STORAGE_CORRUPT' ? a : b;
    writeFileSync(markPath, Buffer.concat([bad, bad]));
    await expect(Outbox.open({ path, capacity: 100 })).rejects.toMatchObject({ code: 'STORAGE_CORRUPT' });
  });

  it('a commit that finished says so in the file too, without being waited for', async () => {
    const dir = tmp();
    const path = join(dir, 'outbox.db');
    const o = await Outbox.open({ path, capacity: 100 });
    const a = await o.accept(punch(1));
    // Reported accepted: the file's mark already covers it (it was written alongside the commit) ...
    expect(SeqMark.read(seqMarkPath(path))!.state.accepted).toBe(a.seq);
    // ... and its second write, after the producers heard, ends the "may not have finished".
    await waitUntil(() => SeqMark.read(seqMarkPath(path))!.state.committing === 0, 5000, 'the commit recorded as finished');
    await o.close();
  });
});

/** Overwrite one leaf page of the punches table (found with the dbstat table) with garbage. */
async function corruptRowPage(path: string): Promise<number> {
  const ro = await Sqlite.open(path, { readonly: true });
  const pages = await ro.all<{ pageno: number }>("SELECT pageno FROM dbstat WHERE name = 'punches' AND pagetype = 'leaf' ORDER BY pageno");
  await ro.close();
  expect(pages.length).toBeGreaterThan(4);
  const page = pages[Math.floor(pages.length / 2)]!.pageno;
  const fd = openSync(path, 'r+');
  const junk = Buffer.alloc(4096 - 100);
  for (let i = 0; i < junk.length; i++) junk[i] = (i * 131 + 7) & 0xff;
  writeSync(fd, junk, 0, junk.length, (page - 1) * 4096 + 100);
  closeSync(fd);
  return page;
}

describe('a corrupt row page', () => {
  it('at start: STORAGE_CORRUPT, exit 1 from `tallybox run`, every file left untouched, nothing created', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir);
    const path = join(dataDir, 'outbox.db');
    await fill(path, 2000, { concurrent: true });
    rmSync(join(dataDir, 'tallybox.lock'));
    await corruptRowPage(path);
    const before = digest(dataDir);
    const file = writeConfig(dir, testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1' }));
    const r = await runCli(['run', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/tallybox: STORAGE_CORRUPT: .*outbox\.db failed its integrity check/);
    expect(digest(dataDir)).toEqual(before);
  }, 30_000);

  it('at run time: STORAGE_ERROR, the drain stops (no reconnect loop), new punches are refused', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir);
    const path = join(dataDir, 'outbox.db');
    await fill(path, 2000, { concurrent: true });
    const port = await freePort();
    const config = validateConfig(testConfig({ dataDir, brokerUrl: `mqtt://127.0.0.1:${port}` }));
    const lines: string[] = [];
    const logger = captureLogger(lines);
    // Started healthy (the check passes), then a page goes bad under it.
    const agent = await Agent.start({ config, logger });
    await corruptRowPage(path);
    const broker = await startEmbeddedBroker({ port });
    try {
      await waitUntil(() => agent.outbox.failed !== undefined, 10_000, 'the drain meets the corrupt page');
      expect(agent.state().alarms?.map((a) => a.code)).toContain(AlarmCode.ALARM_CODE_STORAGE_ERROR);
      const refusal = await agent.punch(punch(1)).catch((e: unknown) => e);
      expect(isTallyboxError(refusal, 'STORAGE_ERROR'), String(refusal)).toBe(true);
      await sleep(1500);
      const recycles = lines.filter((l) => l.includes('"link_recycle"') || l.includes('"drain_failed"')).length;
      expect(recycles).toBe(0);
      expect(lines.filter((l) => l.includes('"drain_stopped"')).length).toBe(1);
      expect(agent.link.state).toBe('online'); // still reporting its state to the cloud
    } finally {
      await agent.stop();
      await broker.close();
    }
  }, 30_000);
});

function runCli(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stderr }));
  });
}

describe('one agent per data directory', () => {
  it('a second `tallybox run` on the same directory exits 1 with DATA_DIR_LOCKED; after a SIGKILL of the first, a new one starts', async () => {
    const dir = tmp();
    const dataDir = join(dir, 'data');
    const apiPort = await freePort();
    const file = writeConfig(dir, testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1', apiPort }));
    const first = new AgentProcess(file, apiPort);
    procs.push(first);
    await first.start();
    const r = await runCli(['run', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/tallybox: DATA_DIR_LOCKED: data directory .*data is in use by another tallybox process/);
    expect(first.running).toBe(true);
    // The kernel drops the lock with the process: no stale lock after a crash.
    await first.kill('SIGKILL');
    await first.start();
    expect(first.running).toBe(true);
    expect(existsSync(join(dataDir, 'tallybox.lock'))).toBe(true);
  }, 30_000);

  it('in one process too: a second Outbox on the same directory is refused', async () => {
    const dir = tmp();
    const o = await Outbox.open({ path: join(dir, 'outbox.db'), capacity: 10 });
    await expect(Outbox.open({ path: join(dir, 'outbox.db'), capacity: 10 })).rejects.toMatchObject({ code: 'DATA_DIR_LOCKED' });
    await o.close();
    const again = await Outbox.open({ path: join(dir, 'outbox.db'), capacity: 10 });
    await again.close();
  });
});
