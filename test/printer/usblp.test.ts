/**
 * UsbLpPrinter against stand-ins for /dev/usb/lp0: a FIFO (a reader that can stop reading or go away)
 * and a real pty (a character device that answers LPGETSTATUS with ENOTTY, as a non-lp device does).
 * What needs a real USB printer: a status byte from LPGETSTATUS (decoded here from known values),
 * the usblp driver's own EAGAIN/ENODEV behaviour when paper runs out or the cable is pulled.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, constants as fsc, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isDeviceError } from '../../firmware-bridge/devices.js';
import { openPrinter } from '../../firmware-bridge/printer/index.js';
import { decodeLpStatus, lpStatusToPrinterStatus, UsbLpPrinter } from '../../firmware-bridge/printer/usblp.js';
import { createPtyPair } from '../../simulators/lib/pty.js';
import { waitUntil } from '../helpers/ports.js';
import { document, documentHash } from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tallybox-usblp-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function fifo(): string {
  const path = join(tempDir(), 'lp0');
  const r = spawnSync('mkfifo', ['-m', '0600', path]);
  if (r.status !== 0) throw new Error('mkfifo failed');
  return path;
}

/** The printer's end of the FIFO: a non-blocking reader that hashes what it gets. */
function reader(path: string): { socket: Socket; bytes: () => number; hash: () => string } {
  const fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
  // A writer of our own that never writes keeps the FIFO from reading EOF between jobs (as a device
  // file never does): without it, the probe's close would end the reader.
  const keep = openSync(path, fsc.O_WRONLY | fsc.O_NONBLOCK);
  cleanups.push(() => closeSync(keep));
  const socket = new Socket({ fd, readable: true, writable: false });
  const h = createHash('sha256');
  let n = 0;
  socket.on('data', (c: Buffer) => {
    h.update(c);
    n += c.length;
  });
  socket.on('error', () => {
    // the test closes it on purpose
  });
  cleanups.push(() => socket.destroy());
  return { socket, bytes: () => n, hash: () => h.copy().digest('hex') };
}

async function code(p: Promise<unknown>): Promise<{ code: string; details?: Record<string, unknown> }> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  if (!isDeviceError(err)) throw new Error(`expected a device error, got ${String(err)}`);
  return err as unknown as { code: string; details?: Record<string, unknown> };
}

const job = (seed: string, bytes: number, extra = {}) => ({ jobName: seed, format: 'application/octet-stream' as const, copies: 1, document: document(seed, bytes), ...extra });

describe('UsbLpPrinter on a FIFO standing in for /dev/usb/lp0', () => {
  it('streams the document byte for byte; status unknown (ENOTTY) without crashing; job state unknown', async () => {
    const path = fifo();
    const r = reader(path);
    const p = openPrinter(`usblp:${path}`);
    expect(p.protocol).toBe('usblp');
    expect(await p.probe()).toEqual({ state: 'idle', reasons: [] });
    expect(await (p as UsbLpPrinter).portStatus()).toBe('unknown');
    const events: string[] = [];
    const res = await p.send(job('fifo', 5_000_000, { onAccepted: (ref: string | undefined) => events.push(`accepted:${ref ?? '-'}`) }));
    expect(res).toEqual({ ref: undefined, bytesSent: 5_000_000, jobState: 'unknown' });
    expect(events).toEqual(['accepted:-']);
    await waitUntil(() => r.bytes() === 5_000_000, 30_000, 'every byte at the reader');
    expect(r.hash()).toBe(await documentHash('fifo', 5_000_000));
  });

  it('no reader (ENXIO) or no file: PRINTER_UNREACHABLE; a regular file is refused', async () => {
    const path = fifo();
    expect((await code(new UsbLpPrinter({ path }).send(job('x', 10)))).code).toBe('PRINTER_UNREACHABLE');
    expect((await code(new UsbLpPrinter({ path: join(tempDir(), 'absent') }).probe())).code).toBe('PRINTER_UNREACHABLE');
    const file = join(tempDir(), 'file');
    writeFileSync(file, '');
    expect((await code(new UsbLpPrinter({ path: file }).send(job('x', 10)))).code).toBe('PRINTER_URL_INVALID');
  });

  it('a reader that stops reading: PRINTER_STOPPED after the stall timeout, with the bytes known', async () => {
    const path = fifo();
    const r = reader(path);
    r.socket.pause();
    const err = await code(new UsbLpPrinter({ path, stallTimeoutMs: 1000 }).send(job('stall', 10_000_000)));
    expect(err.code).toBe('PRINTER_STOPPED');
    expect(err.details).toMatchObject({ accepted: true });
    expect(err.details!.bytesSent as number).toBeLessThan(10_000_000);
  });

  it('the reader goes away mid-job (unplugged): PRINTER_CLOSED', async () => {
    const path = fifo();
    const r = reader(path);
    const p = new UsbLpPrinter({ path });
    const err = await code(
      p.send(
        job('gone', 50_000_000, {
          onProgress: (n: number) => {
            if (n > 200_000) r.socket.destroy();
          },
        }),
      ),
    );
    expect(err.code).toBe('PRINTER_CLOSED');
    expect(err.details).toMatchObject({ accepted: true, errno: 'EPIPE' });
  });

  it('cancel via AbortSignal while the device takes no data', async () => {
    const path = fifo();
    const r = reader(path);
    r.socket.pause();
    const ac = new AbortController();
    const sending = new UsbLpPrinter({ path, stallTimeoutMs: 60_000 }).send(job('cancel', 10_000_000, { signal: ac.signal }));
    setTimeout(() => ac.abort(), 300);
    const err = await code(sending);
    expect(err.code).toBe('PRINTER_CANCELLED');
  });
});

describe('UsbLpPrinter on a pty (a character device without LPGETSTATUS)', () => {
  it('writes through the pty unchanged and reports status unknown', async () => {
    const dir = tempDir();
    const pair = await createPtyPair({ link: join(dir, 'lp0') });
    cleanups.push(() => pair.close());
    const h = createHash('sha256');
    let n = 0;
    pair.device.on('data', (c) => {
      h.update(c);
      n += c.length;
    });
    const p = new UsbLpPrinter({ path: pair.link });
    expect(await p.probe()).toEqual({ state: 'idle', reasons: [] });
    const res = await p.send(job('pty', 1_000_000));
    expect(res.bytesSent).toBe(1_000_000);
    await waitUntil(() => n === 1_000_000, 30_000, 'every byte at the pty master');
    expect(h.digest('hex')).toBe(await documentHash('pty', 1_000_000));
  });
});

describe('LPGETSTATUS decoding (the part a real printer would exercise)', () => {
  it('maps the 1284 status byte to printer state and reasons', () => {
    // 0x98: not busy, selected, no error: ready
    expect(lpStatusToPrinterStatus(decodeLpStatus(0x98))).toEqual({ state: 'idle', reasons: ['none'] });
    expect(lpStatusToPrinterStatus(decodeLpStatus(0x18))).toEqual({ state: 'processing', reasons: ['none'] });
    // paper empty (usblp reports it with the error line low)
    expect(lpStatusToPrinterStatus(decodeLpStatus(0x30))).toEqual({ state: 'stopped', reasons: ['media-empty'] });
    // deselected (offline button)
    expect(lpStatusToPrinterStatus(decodeLpStatus(0x88))).toEqual({ state: 'stopped', reasons: ['offline-report'] });
    expect(lpStatusToPrinterStatus(decodeLpStatus(0x90))).toEqual({ state: 'stopped', reasons: ['other'] });
  });
});

describe('openPrinter(url)', () => {
  it('opens raw, usblp, ipp and ipps; refuses bad URLs', () => {
    expect(openPrinter('raw://printer.local:9101?pjl=1').description).toBe('raw9100:printer.local:9101+pjl');
    expect(openPrinter('raw://10.0.0.5').description).toBe('raw9100:10.0.0.5:9100');
    expect(openPrinter('raw://[::1]:9100').description).toBe('raw9100:::1:9100');
    expect(openPrinter('usblp:/dev/usb/lp0').description).toBe('usblp:/dev/usb/lp0');
    expect(openPrinter('ipp://printer:631/ipp/print').protocol).toBe('ipp');
    expect(openPrinter('ipps://printer/ipp/print').protocol).toBe('ipp');
    expect(() => openPrinter('ipp://user:pw@printer/ipp/print')).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    for (const bad of ['nonsense', 'http://x', 'raw://', 'raw://h/path', 'raw://h?pjl=yes', 'raw://h?x=1', 'usblp:dev/lp0', 'usblp://host/dev/lp0', 'usblp:/dev/../etc/passwd'])
      expect(() => openPrinter(bad), bad).toThrow(expect.objectContaining({ code: 'PRINTER_URL_INVALID' }));
  });
});
