/**
 * RawPrinter's checks against printers that misbehave in ways the simulator does not: a scripted TCP
 * peer stands in for the printer's back channel (the one thing these tests are about). And the
 * simulator's PJL reading, with the job torn into tiny pieces.
 */
import { createHash } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { pjlJobFooter, pjlJobHeader } from '../../firmware-bridge/printer/pjl.js';
import { RawPrinter } from '../../firmware-bridge/printer/raw9100.js';
import { fileHash, type Sim, startSim } from './helpers.js';

const servers: Server[] = [];
let sim: Sim | undefined;
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  await sim?.close();
  sim = undefined;
});

/** A "printer" that reads everything and answers with `script(socket, received)` at the events given. */
async function peer(onJob: (s: Socket, ev: 'header' | 'end', got: () => Buffer) => void): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    const parts: Buffer[] = [];
    let headerSeen = false;
    s.on('data', (d: Buffer) => {
      parts.push(d);
      if (!headerSeen && Buffer.concat(parts).includes('@PJL JOB')) {
        headerSeen = true;
        onJob(s, 'header', () => Buffer.concat(parts));
      }
    });
    s.on('end', () => onJob(s, 'end', () => Buffer.concat(parts)));
    s.on('error', () => {
      // the client resets on failures: expected
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return (server.address() as { port: number }).port;
}

const doc = (text: string) =>
  (async function* () {
    yield Buffer.from(text);
  })();

describe('RawPrinter checks (scripted printer)', () => {
  it('END for another job name is not our completion: jobState stays unknown', async () => {
    const port = await peer((s, ev) => {
      if (ev === 'header') s.write('@PJL USTATUS JOB\r\nSTART\r\nNAME="mine"\r\n\f');
      if (ev === 'end') s.end('@PJL USTATUS JOB\r\nEND\r\nNAME="someone-else"\r\nPAGES=1\r\n\f');
    });
    const p = new RawPrinter({ host: '127.0.0.1', port, pjl: true });
    const r = await p.send({ jobName: 'mine', format: 'application/pdf', copies: 1, document: doc('x') });
    expect(r.jobState).toBe('unknown');
    expect(await p.jobState('mine')).toBe('unknown');
    expect(await p.jobState('someone-else')).toBe('completed');
  });

  it('a printer that ignores USTATUS (no START): accepted at the first document byte after the start timeout', async () => {
    const port = await peer((s, ev) => {
      if (ev === 'end') s.end();
    });
    const events: string[] = [];
    const p = new RawPrinter({ host: '127.0.0.1', port, pjl: true, startTimeoutMs: 300 });
    const r = await p.send({ jobName: 'quiet', format: 'application/pdf', copies: 1, document: doc('abc'), onAccepted: (ref) => events.push(`accepted:${ref}`), onProgress: (n) => events.push(`progress:${n}`) });
    expect(events).toEqual(['accepted:quiet', 'progress:3']);
    expect(r).toEqual({ ref: 'quiet', bytesSent: 3, jobState: 'unknown' });
  });

  it('garbage on the back channel: skipped, the job goes on; END still recognised after it', async () => {
    const port = await peer((s, ev) => {
      if (ev === 'header') s.write('\x00\xff garbage \fCODE=1\f@PJL USTATUS JOB\r\nSTART\r\nNAME="g"\r\n\f');
      if (ev === 'end') s.end('@PJL USTATUS JOB\r\nEND\r\nNAME="g"\r\nPAGES=x\r\n\f@PJL USTATUS JOB\r\nEND\r\nNAME="g"\r\nPAGES=2\r\n\f');
    });
    const p = new RawPrinter({ host: '127.0.0.1', port, pjl: true });
    const r = await p.send({ jobName: 'g', format: 'application/pdf', copies: 1, document: doc('x') });
    expect(r).toEqual({ ref: 'g', bytesSent: 1, jobState: 'completed', pages: 2 });
  });

  it('a probe answered with garbage, or not at all: PRINTER_PROTOCOL', async () => {
    const garbage = createServer((s) => {
      s.on('data', () => s.end('not pjl\f'));
      s.on('error', () => {
        // reset by the client: expected
      });
    });
    const silent = createServer((s) => {
      s.on('error', () => {
        // reset by the client: expected
      });
    });
    servers.push(garbage, silent);
    for (const s of [garbage, silent]) await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const g = new RawPrinter({ host: '127.0.0.1', port: (garbage.address() as { port: number }).port, pjl: true });
    await expect(g.probe()).rejects.toMatchObject({ code: 'PRINTER_PROTOCOL' });
    const q = new RawPrinter({ host: '127.0.0.1', port: (silent.address() as { port: number }).port, pjl: true, probeTimeoutMs: 300 });
    await expect(q.probe()).rejects.toMatchObject({ code: 'PRINTER_PROTOCOL' });
  });

  it('a printer that accepts the connection but never reads: PRINTER_STOPPED after the stall timeout', async () => {
    const held: Socket[] = [];
    const server = createServer({ pauseOnConnect: true }, (s) => {
      held.push(s);
      s.on('error', () => {
        // reset by the client: expected
      });
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const p = new RawPrinter({ host: '127.0.0.1', port: (server.address() as { port: number }).port, stallTimeoutMs: 500 });
    const big = (async function* () {
      for (let i = 0; i < 2000; i++) yield Buffer.alloc(64 * 1024, i);
    })();
    await expect(p.send({ jobName: 'x', format: 'application/octet-stream', copies: 1, document: big })).rejects.toMatchObject({ code: 'PRINTER_STOPPED', details: { accepted: true } });
    // a printer that never reads never sees the reset either
    for (const s of held) s.destroy();
  });
});

describe('the simulator reads PJL torn anywhere', () => {
  it('a PJL job written in pieces of 1..9 bytes is recorded exactly (property, 15 runs)', async () => {
    sim = await startSim();
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 40 }), fc.uint8Array({ minLength: 1, maxLength: 300 }), async (sizes, body) => {
        const name = `torn-${++n}`;
        const all = Buffer.concat([pjlJobHeader(name), body, pjlJobFooter(name)]);
        const s = connect({ host: '127.0.0.1', port: sim!.port, allowHalfOpen: true, noDelay: true });
        await new Promise<void>((r) => s.once('connect', () => r()));
        const back: Buffer[] = [];
        s.on('data', (d: Buffer) => back.push(d));
        const closed = new Promise<void>((r) => s.once('close', () => r()));
        for (let off = 0, i = 0; off < all.length; i++) {
          const k = sizes[i % sizes.length]!;
          s.write(all.subarray(off, off + k));
          off += k;
          await new Promise((r) => setImmediate(r));
        }
        s.end();
        await closed;
        const jobs = sim!.recorder.jobs().filter((j) => j.name === name);
        expect(jobs).toHaveLength(1);
        expect(jobs[0]).toMatchObject({ bytes: body.length, state: 'completed' });
        expect(await fileHash(join(sim!.recorder.dir, jobs[0]!.file))).toBe(createHash('sha256').update(body).digest('hex'));
        expect(Buffer.concat(back).toString('latin1')).toContain(`END\r\nNAME="${name}"`);
      }),
      { numRuns: 15 },
    );
  });
});
