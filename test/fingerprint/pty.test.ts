/**
 * The simulators' pseudo-terminal (simulators/lib/pty.ts, openpty(3) via the
 * native/ptypair addon) seen by the production host transport: raw bytes both
 * ways, the host may close and reopen, close() is a hangup the host notices
 * even with a read in flight, children do not keep the pty alive, and no link
 * outlives its process.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { SerialTransport } from '../../firmware-bridge/transport/serial.js';
import type { ByteTransport, TransportStatus } from '../../firmware-bridge/transport/types.js';
import { createPtyPair, type PtyPair } from '../../simulators/lib/pty.js';

const dir = mkdtempSync(join(tmpdir(), 'tallybox-pty-'));
let n = 0;
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function pair(): Promise<PtyPair> {
  const p = await createPtyPair({ link: join(dir, `tty-${++n}`) });
  cleanups.push(() => p.close());
  return p;
}

async function host(path: string): Promise<SerialTransport> {
  const t = new SerialTransport({ path, writeTimeoutMs: 500 });
  await t.open();
  cleanups.push(() => t.close());
  return t;
}

/** Collect `count` bytes from a transport (chunk boundaries mean nothing). */
function collect(t: ByteTransport, count: number, timeoutMs = 3000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`got ${got} of ${count} bytes`)), timeoutMs);
    const onData = (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= count) {
        clearTimeout(timer);
        t.off('data', onData);
        resolve(Buffer.concat(parts));
      }
    };
    t.on('data', onData);
  });
}

function closedWithin(t: ByteTransport, ms: number): Promise<TransportStatus> {
  return new Promise((resolve) => {
    if (t.status === 'closed') return resolve('closed');
    const timer = setTimeout(() => resolve(t.status), ms);
    t.on('status', (s) => {
      if (s === 'closed') {
        clearTimeout(timer);
        resolve('closed');
      }
    });
  });
}

describe('pseudo-terminal pair without socat', () => {
  it('links to a /dev/pts slave and carries every byte value unchanged both ways (raw mode)', async () => {
    const p = await pair();
    expect(lstatSync(p.link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(p.link)).toBe(p.slavePath);
    expect(p.slavePath).toMatch(/^\/dev\/pts\/\d+$/);
    const h = await host(p.link);
    // Every byte, including CR/LF, ^C, ^D, XON/XOFF and DEL, which a cooked tty would translate or eat.
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const toDevice = collect(p.device, 256);
    await h.write(all);
    expect((await toDevice).equals(all)).toBe(true);
    const toHost = collect(h, 256);
    await p.device.write(all);
    expect((await toHost).equals(all)).toBe(true);
  });

  it('the host may close and reopen the link: the pair stays, like a cable left plugged in', async () => {
    const p = await pair();
    const h1 = await host(p.link);
    await h1.close();
    expect(p.device.status).toBe('open');
    const h2 = await host(p.link);
    const got = collect(h2, 3);
    await p.device.write(Buffer.from('abc'));
    expect((await got).toString()).toBe('abc');
  });

  it('close() is a hangup: the link goes and the host port closes, even right after a reply (a read in flight)', async () => {
    // Without the hangup-aware binding, a host read in flight at the hangup returns
    // end of file forever and serialport retries it without end: the port never closes.
    for (let i = 0; i < 10; i++) {
      const p = await pair();
      const h = await host(p.link);
      const reply = collect(h, 4);
      await p.device.write(Buffer.from('pong'));
      await reply; // the host's next read starts now
      await p.close();
      expect(existsSync(p.link)).toBe(false);
      expect(await closedWithin(h, 2000)).toBe('closed');
      await expect(new SerialTransport({ path: p.link }).open()).rejects.toMatchObject({ code: 'TRANSPORT_OPEN_FAILED' });
    }
  });

  it('hangup() closes the device end without being asked: `closed` resolves and the host notices', async () => {
    const p = await pair();
    const h = await host(p.link);
    const reasons: (Error | undefined)[] = [];
    p.device.on('status', (s, reason) => s === 'closed' && reasons.push(reason));
    p.hangup();
    await p.closed;
    expect(reasons).toHaveLength(1);
    expect(reasons[0]?.message).toMatch(/hung up/);
    expect(existsSync(p.link)).toBe(false);
    expect(await closedWithin(h, 2000)).toBe('closed');
    await expect(p.device.open()).rejects.toMatchObject({ code: 'TRANSPORT_OPEN_FAILED' });
  });

  it('a child process does not inherit the pty (close-on-exec): closing still hangs the host up', async () => {
    const p = await pair();
    const h = await host(p.link);
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    cleanups.push(async () => child.kill('SIGKILL'));
    await p.close();
    expect(await closedWithin(h, 2000)).toBe('closed');
  });

  it('replaces a stale symlink left by a killed run, and refuses a regular file', async () => {
    const link = join(dir, `stale-${++n}`);
    symlinkSync('/dev/pts/999999', link);
    const p = await createPtyPair({ link });
    cleanups.push(() => p.close());
    expect(readlinkSync(link)).toBe(p.slavePath);
    await expect(createPtyPair({ link: join(dir) })).rejects.toMatchObject({ code: 'PTY_PATH_EXISTS' });
  });

  it('a process that exits without close() leaves no link behind', () => {
    const link = join(dir, `exit-${++n}`);
    const script = `import { createPtyPair } from ${JSON.stringify(new URL('../../dist/simulators/lib/pty.js', import.meta.url).href)};
      const p = await createPtyPair({ link: ${JSON.stringify(link)} });
      console.log(p.slavePath); process.exit(0);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^\/dev\/pts\/\d+/);
    expect(existsSync(link)).toBe(false);
  });

  it('pauseReading(): the host write stops draining until resumeReading()', async () => {
    const p = await pair();
    const h = await host(p.link);
    p.pauseReading();
    let failure: unknown;
    for (let i = 0; i < 64 && !failure; i++) await h.write(Buffer.alloc(8192, 0x55)).catch((err: unknown) => (failure = err));
    expect(failure).toMatchObject({ code: 'TRANSPORT_WRITE_FAILED' });
    const flowing = collect(p.device, 1, 3000);
    p.resumeReading();
    await flowing;
  });
});
