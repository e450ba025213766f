/**
 * The simulator on a real pseudo-terminal, seen from outside: a datasheet-style
 * client with fixed reads (like the Adafruit CircuitPython library), the HTTP
 * control interface, unplug/replug of the pty, and the CLI entry point.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerialPort } from 'serialport';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { R30xDriver } from '../../firmware-bridge/r30x/driver.js';
import { isR30xError } from '../../firmware-bridge/r30x/errors.js';
import { SerialTransport } from '../../firmware-bridge/transport/serial.js';
import { runFingerprintCli } from '../../simulators/fingerprint/main.js';
import { startFingerprintSimulator, type FingerprintSimulator } from '../../simulators/fingerprint/simulator.js';
import { FingerprintDevice } from '../../simulators/fingerprint/device.js';
import { encodePacket, decodePacket } from '../../firmware-bridge/r30x/codec.js';

const dir = mkdtempSync(join(tmpdir(), 'tallybox-fpsim-'));
let n = 0;
const live = new Set<{ close(): Promise<unknown> }>();
const track = <T extends { close(): Promise<unknown> }>(x: T): T => (live.add(x), x);

afterEach(async () => {
  await Promise.all([...live].map((x) => x.close().catch(() => undefined)));
  live.clear();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function sim(opts: { capacity?: number; password?: number } = {}): Promise<FingerprintSimulator> {
  return track(await startFingerprintSimulator({ link: join(dir, `tty-${++n}`), ...opts }));
}

/** A client written from the datasheet the CircuitPython way: fixed reads, strict header checks, no codec. */
class FixedReadClient {
  #buf = Buffer.alloc(0);
  #wake: (() => void) | null = null;
  private constructor(readonly port: SerialPort) {
    port.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#wake?.();
    });
  }
  static async open(path: string): Promise<FixedReadClient> {
    const port = new SerialPort({ path, baudRate: 57600, autoOpen: false });
    await new Promise<void>((res, rej) => port.open((e) => (e ? rej(e) : res())));
    return new FixedReadClient(port);
  }
  async read(count: number): Promise<Buffer> {
    const deadline = Date.now() + 1000;
    while (this.#buf.length < count) {
      if (Date.now() > deadline) throw new Error(`read(${count}) timed out with ${this.#buf.length} bytes`);
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 20);
      });
    }
    const out = this.#buf.subarray(0, count);
    this.#buf = this.#buf.subarray(count);
    return out;
  }
  /** _send_packet + _get_packet(expected): returns the reply content like the Python client. */
  async exchange(content: number[], expected: number): Promise<number[]> {
    const len = content.length + 2;
    let sum = 0x01 + (len >> 8) + (len & 0xff);
    for (const b of content) sum += b;
    this.port.write(Buffer.from([0xef, 0x01, 0xff, 0xff, 0xff, 0xff, 0x01, len >> 8, len & 0xff, ...content, (sum >> 8) & 0xff, sum & 0xff]));
    const res = await this.read(expected);
    if (res.readUInt16BE(0) !== 0xef01) throw new Error('Incorrect packet data');
    if (res.readUInt32BE(2) !== 0xffffffff) throw new Error('Incorrect address');
    if (res[6] !== 0x07) throw new Error('Incorrect packet data');
    const length = res.readUInt16BE(7);
    return [...res.subarray(9, 9 + length - 2)];
  }
  close(): Promise<void> {
    return new Promise((r) => (this.port.isOpen ? this.port.close(() => r()) : r()));
  }
}

describe('fingerprint simulator over a real pty', () => {
  it('satisfies a fixed-read datasheet client (CircuitPython library sequence)', async () => {
    const s = await sim();
    const c = track(await FixedReadClient.open(s.link as string));
    expect((await c.exchange([0x13, 0, 0, 0, 0], 12))[0]).toBe(0x00); // verify_password
    const sys = await c.exchange([0x0f], 28); // read_sysparam
    expect(sys[0]).toBe(0);
    expect((sys[3]! << 8) | sys[4]!).toBe(0x0009);
    const librarySize = (sys[5]! << 8) | sys[6]!;
    expect(librarySize).toBe(1000);
    expect(sys.slice(9, 13)).toEqual([0xff, 0xff, 0xff, 0xff]);
    expect((sys[13]! << 8) | sys[14]!).toBe(2);
    expect((sys[15]! << 8) | sys[16]!).toBe(6);
    expect((await c.exchange([0x53], 12))[0]).toBe(0x55); // check_module
    expect((await c.exchange([0x35, 1, 0x80, 1, 0], 12))[0]).toBe(0x00); // set_led
    expect((await c.exchange([0x01], 12))[0]).toBe(0x02); // get_image: no finger
    s.device.placeFinger({ person: 'py', finger: 0 });
    expect((await c.exchange([0x01], 12))[0]).toBe(0x00);
    expect((await c.exchange([0x02, 1], 12))[0]).toBe(0x00); // image_2_tz(1)
    expect((await c.exchange([0x01], 12))[0]).toBe(0x00);
    expect((await c.exchange([0x02, 2], 12))[0]).toBe(0x00); // image_2_tz(2)
    expect((await c.exchange([0x05], 12))[0]).toBe(0x00); // create_model
    expect((await c.exchange([0x06, 1, 0x01, 0x2c], 12))[0]).toBe(0x00); // store_model(300)
    const count = await c.exchange([0x1d], 14); // count_templates
    expect(count).toEqual([0, 0, 1]);
    // finger_fast_search: 16 bytes, found...
    const hit = await c.exchange([0x1b, 0x01, 0, 0, librarySize >> 8, librarySize & 0xff], 16);
    expect(hit[0]).toBe(0);
    expect((hit[1]! << 8) | hit[2]!).toBe(300);
    // ...and 16 bytes too when not found.
    s.device.placeFinger({ person: 'nobody', finger: 0 });
    await c.exchange([0x01], 12);
    await c.exchange([0x02, 1], 12);
    expect((await c.exchange([0x04, 0x01, 0, 0, librarySize >> 8, librarySize & 0xff], 16))[0]).toBe(0x09);
    // read_templates: 44-byte index tables for int(librarySize / 256) pages.
    const templates: number[] = [];
    for (let j = 0; j < Math.floor(librarySize / 256); j++) {
      const r = await c.exchange([0x1f, j], 44);
      expect(r[0]).toBe(0);
      for (let i = 0; i < 32; i++) for (let bit = 0; bit < 8; bit++) if (r[i + 1]! & (1 << bit)) templates.push(i * 8 + bit + j * 256);
    }
    expect(templates).toEqual([300]);
    expect((await c.exchange([0x0c, 0x01, 0x2c, 0x00, 0x01], 12))[0]).toBe(0x00); // delete_model
    expect((await c.exchange([0x0d], 12))[0]).toBe(0x00); // empty_library
    expect(s.device.pages()).toEqual([]);
  });

  it('password-protected module: MUST_VERIFY_PASSWORD until VfyPwd succeeds', async () => {
    const s = await sim({ password: 0xa1b2c3d4 });
    const driver = track(new R30xDriver({ transport: new SerialTransport({ path: s.link as string }), timeoutMs: 300, password: 0xa1b2c3d4 }));
    await driver.open();
    await expect(driver.templateNum()).rejects.toMatchObject({ code: 'MUST_VERIFY_PASSWORD', confirmation: 0x21 });
    await expect(driver.vfyPwd(1)).rejects.toMatchObject({ code: 'WRONG_PASSWORD' });
    await driver.vfyPwd();
    expect(await driver.templateNum()).toBe(0);
  });

  it('unplug "close" removes the pty: the host port closes, and replug brings the same path back', async () => {
    const s = await sim();
    const transport = new SerialTransport({ path: s.link as string });
    const driver = track(new R30xDriver({ transport, timeoutMs: 300 }));
    await driver.open();
    s.device.enrolDirect(4, { person: 'z', finger: 0 });
    expect(await driver.templateNum()).toBe(1);
    const closed = new Promise<unknown>((r) => transport.on('status', (st, reason) => st === 'closed' && r(reason)));
    await s.unplug('close');
    expect(existsSync(s.link as string)).toBe(false);
    await closed;
    const err = await driver.templateNum().catch((e: unknown) => e);
    expect(isR30xError(err, 'NOT_OPEN')).toBe(true);
    await expect(transport.open()).rejects.toMatchObject({ code: 'TRANSPORT_OPEN_FAILED' });
    await s.replug();
    expect(existsSync(s.link as string)).toBe(true);
    await driver.open();
    expect(await driver.templateNum()).toBe(1);
  });

  it('the pty hangs up without being asked: the plug reports closed and replug rebuilds the pty', async () => {
    const s = await sim();
    expect(s.pty?.slavePath).toMatch(/^\/dev\/pts\/\d+$/);
    s.pty?.hangup();
    for (let i = 0; i < 100 && s.plug !== 'closed'; i++) await new Promise((r) => setTimeout(r, 10));
    expect(s.plug).toBe('closed');
    await s.replug();
    const driver = track(new R30xDriver({ transport: new SerialTransport({ path: s.link as string }), timeoutMs: 300 }));
    await driver.open();
    expect(await driver.templateNum()).toBe(0);
  });

  it('refuses to put a pty link over an existing file', async () => {
    const path = join(dir, `file-${++n}`);
    writeFileSync(path, 'keep me');
    await expect(startFingerprintSimulator({ link: path, control: false })).rejects.toMatchObject({ code: 'PTY_PATH_EXISTS' });
    expect(readFileSync(path, 'utf8')).toBe('keep me');
  });

  it('a bad frame from the host gets no reply and does not disturb the next command', async () => {
    const s = await sim();
    const c = track(await FixedReadClient.open(s.link as string));
    c.port.write(Buffer.from('EF01FFFFFFFF010003010006', 'hex')); // GenImg with a wrong checksum
    c.port.write(encodePacket({ addr: 0x12345678, pid: 1, content: [0x1d] })); // someone else's module
    expect(await c.exchange([0x1d], 14)).toEqual([0, 0, 0]);
    expect(s.deviceLink.stats.rxRejects).toBe(1);
    expect(s.device.counters.ignored).toBe(1);
  });
});

/** Minimal JSON HTTP client (works over TCP and unix sockets). */
// biome-ignore lint/suspicious/noExplicitAny: JSON from our own control server; every use is checked by an assertion
function call(ctl: { port?: number; socketPath?: string }, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = request({ host: '127.0.0.1', ...(ctl.socketPath ? { socketPath: ctl.socketPath } : { port: ctl.port }), method, path, headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString() || 'null') }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

describe('fingerprint simulator control interface (HTTP/JSON)', () => {
  it('place/lift finger, library edits, faults, unplug/replug, state', async () => {
    const s = await sim({ capacity: 300 });
    const ctl = s.control!;
    expect(ctl.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const driver = track(new R30xDriver({ transport: new SerialTransport({ path: s.link as string }), timeoutMs: 300 }));
    await driver.open();

    expect((await call(ctl, 'GET', '/')).json.endpoints.length).toBeGreaterThan(5);
    expect((await call(ctl, 'POST', '/finger', { person: 'ana', finger: 2 })).json.finger).toMatchObject({ person: 'ana', finger: 2, quality: 'good' });
    await driver.genImg();
    await driver.img2Tz(1);
    await driver.genImg();
    await driver.img2Tz(2);
    await driver.regModel();
    await driver.store(1, 17);
    expect((await call(ctl, 'DELETE', '/finger')).json.finger).toBeNull();
    await expect(driver.genImg()).rejects.toMatchObject({ code: 'NO_FINGER' });

    const lib = (await call(ctl, 'GET', '/library')).json;
    expect(lib).toMatchObject({ capacity: 300, count: 1, pages: [{ page: 17, person: 'ana', finger: 2 }] });
    expect(JSON.stringify(lib)).not.toMatch(/[0-9a-f]{64}/); // digests only, never template bytes

    expect((await call(ctl, 'PUT', '/library/5', { person: 'ben' })).status).toBe(200);
    expect((await call(ctl, 'DELETE', '/library/17')).json).toEqual({ page: 17, deleted: true });
    expect(await driver.listPages()).toEqual([5]);

    expect((await call(ctl, 'POST', '/faults', { delayMs: 500 })).json.faults.delayMs).toBe(500);
    await expect(driver.templateNum()).rejects.toMatchObject({ code: 'TIMEOUT' });
    await call(ctl, 'DELETE', '/faults');
    await new Promise((r) => setTimeout(r, 500)); // let the late reply arrive while nothing is in flight
    await call(ctl, 'POST', '/faults', { noise: 20 });
    expect(await driver.templateNum()).toBe(1);
    expect((await call(ctl, 'POST', '/noise', { bytes: 10 })).json).toEqual({ sent: 10 });

    expect((await call(ctl, 'POST', '/unplug', {})).json.plug).toBe('silent');
    await expect(driver.templateNum()).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect((await call(ctl, 'POST', '/replug')).json.plug).toBe('plugged');
    expect(await driver.templateNum()).toBe(1);

    const state = (await call(ctl, 'GET', '/state')).json;
    expect(state).toMatchObject({ link: s.link, plug: 'plugged', capacity: 300, address: 'FFFFFFFF', packetSize: 128, templateCount: 1, pages: [5] });

    await call(ctl, 'DELETE', '/library');
    expect(await driver.templateNum()).toBe(0);
  });

  it('bad requests get 400/404 with a code and change nothing', async () => {
    const s = await sim();
    const ctl = s.control!;
    const bad = [
      await call(ctl, 'POST', '/finger', { finger: 1 }),
      await call(ctl, 'POST', '/finger', { person: 'x', finger: 12 }),
      await call(ctl, 'POST', '/finger', '{not json'),
      await call(ctl, 'POST', '/faults', { delayMs: -1 }),
      await call(ctl, 'POST', '/faults', { explode: 1 }),
      await call(ctl, 'PUT', '/library/1000', { person: 'x' }),
      await call(ctl, 'POST', '/unplug', { mode: 'yank' }),
    ];
    for (const r of bad) {
      expect(r.status).toBe(400);
      expect(r.json.error.code).toMatch(/^[A-Z_]+$/);
    }
    expect(bad[1]!.json.error.message).toContain('finger');
    expect((await call(ctl, 'GET', '/nope')).status).toBe(404);
    expect(s.state()).toMatchObject({ finger: null, pages: [], plug: 'plugged', faults: { noise: 0, dropByte: 0, corruptChecksum: 0, delayMs: 0 } });
  });

  it('serves on a unix socket with --control-socket', async () => {
    const socketPath = join(dir, `ctl-${++n}.sock`);
    const s = track(await startFingerprintSimulator({ link: join(dir, `tty-${++n}`), control: { socketPath } }));
    expect(s.control).toMatchObject({ socketPath });
    expect((await call({ socketPath }, 'POST', '/finger', { person: 'u' })).status).toBe(200);
    expect(s.device.finger?.person).toBe('u');
  });
});

describe('tallybox-sim fingerprint CLI', () => {
  it('rejects bad arguments with exit code 2 and a message naming them', async () => {
    const errs: string[] = [];
    const io = { stop: Promise.resolve(), out: () => undefined, err: (l: string) => void errs.push(l) };
    expect(await runFingerprintCli([], io)).toBe(2);
    expect(await runFingerprintCli(['--link', join(dir, 'x'), '--capacity', '5000'], io)).toBe(2);
    expect(await runFingerprintCli(['--link', join(dir, 'x'), '--password', 'zz'], io)).toBe(2);
    expect(await runFingerprintCli(['--bogus'], io)).toBe(2);
    expect(errs.join('\n')).toMatch(/--link PATH is required[\s\S]*--capacity 5000[\s\S]*--password zz[\s\S]*bogus/);
    const outs: string[] = [];
    expect(await runFingerprintCli(['--help'], { stop: Promise.resolve(), out: (l) => void outs.push(l) })).toBe(0);
    expect(outs[0]).toContain('--control-socket');
  });

  it('starts on a pty, prints a ready line, serves a host, and cleans up on stop', async () => {
    const link = join(dir, `cli-${++n}`);
    let stop!: () => void;
    const lines: string[] = [];
    const done = runFingerprintCli(['--link', link, '--capacity', '200', '--control', '0'], {
      stop: new Promise<void>((r) => (stop = r)),
      out: (l) => void lines.push(l),
    });
    while (lines.length === 0) await new Promise((r) => setTimeout(r, 10));
    const ready = JSON.parse(lines[0]!);
    expect(ready).toMatchObject({ event: 'ready', link, capacity: 200, control: { url: expect.stringMatching(/^http:/) } });
    const driver = new R30xDriver({ transport: new SerialTransport({ path: link }), timeoutMs: 300 });
    await driver.open();
    expect((await driver.readSysPara()).librarySize).toBe(200);
    await driver.close();
    stop();
    expect(await done).toBe(0);
    expect(existsSync(link)).toBe(false);
  });
});

describe('fingerprint device (pure)', () => {
  it('ignores commands for other addresses and answers its own', () => {
    const d = new FingerprintDevice({ address: 0x01020304 });
    expect(d.handle(decodePacket(encodePacket({ pid: 1, content: [0x1d] })))).toEqual([]);
    const [reply] = d.handle(decodePacket(encodePacket({ addr: 0x01020304, pid: 1, content: [0x1d] })));
    expect(decodePacket(reply!)).toMatchObject({ addr: 0x01020304, pid: 7 });
  });
  it('every reply to a malformed command still has the fixed length', () => {
    const d = new FingerprintDevice();
    for (const [content, length] of [
      [[0x04], 16],
      [[0x1d], 14],
      [[0x0f], 28],
      [[0x1f, 9], 44],
      [[0x06], 12],
      [[0x99], 12],
    ] as const) {
      const [reply] = d.handle(decodePacket(encodePacket({ pid: 1, content: [...content] })));
      expect(reply).toHaveLength(length);
    }
  });
});
