import { describe, expect, it, vi } from 'vitest';
import { WedgeDecoder, cardToReports, decodeBootReport, usageToChar } from './keyboard.js';
import { HidCardReader, createCardReader } from './reader.js';
import { NodeHidTransport, SimHidTransport, udevRule } from './transport.js';

const r = (...b: number[]) => Uint8Array.from(b);

describe('boot report decoding', () => {
  it('reads usage codes, with and without a report id', () => {
    expect(decodeBootReport(r(0, 0, 0x1e, 0, 0, 0, 0, 0))).toEqual({ modifiers: 0, keys: [0x1e] });
    expect(decodeBootReport(r(2, 0, 0, 0x27, 0, 0, 0, 0, 0))).toEqual({ modifiers: 0, keys: [0x27] }); // id 2 stripped
    expect(decodeBootReport(r(2, 0, 0, 0x27, 0, 0, 0, 0, 0), 2)).toEqual({ modifiers: 0, keys: [0x27] });
    expect(decodeBootReport(r(2, 0, 0, 0x27, 0, 0, 0, 0, 0), 'none')).toBeNull();
    expect(decodeBootReport(r(0, 0, 0, 0, 0, 0, 0, 0))).toEqual({ modifiers: 0, keys: [] }); // release
    expect(decodeBootReport(r(1, 2, 3))).toBeNull();
    expect([0x1e, 0x26, 0x27, 0x04, 0x1d, 0x62, 0x28].map((u) => usageToChar(u))).toEqual(['1', '9', '0', 'a', 'z', '0', null]);
  });

  it('turns press/release sequences into card numbers, Enter-terminated', () => {
    const d = new WedgeDecoder();
    const cards: string[] = [];
    d.on('card', (c) => cards.push(c));
    for (const rep of cardToReports('0011223344')) d.push(rep);
    for (const rep of cardToReports('98765', { reportId: 1 })) d.push(rep);
    expect(cards).toEqual(['0011223344', '98765']);
  });

  it('a key held over several reports counts once; rollover reports add nothing', () => {
    const d = new WedgeDecoder();
    const cards: string[] = [];
    d.on('card', (c) => cards.push(c));
    d.push(r(0, 0, 0x1e, 0, 0, 0, 0, 0));
    d.push(r(0, 0, 0x1e, 0, 0, 0, 0, 0)); // still down
    d.push(r(0, 0, 0x1e, 0x1f, 0, 0, 0, 0)); // 2 pressed while 1 held
    d.push(r(0, 0, 1, 1, 1, 1, 1, 1)); // phantom
    d.push(r(0, 0, 0, 0, 0, 0, 0, 0));
    d.push(r(0, 0, 0x28, 0, 0, 0, 0, 0));
    expect(cards).toEqual(['12']);
  });

  it('drops timed-out partial input, over-long input and empty reads', () => {
    let t = 0;
    const d = new WedgeDecoder({ now: () => t, interKeyTimeoutMs: 500, maxLength: 6 });
    const cards: string[] = [];
    const discards: string[] = [];
    d.on('card', (c) => cards.push(c));
    d.on('discard', (x) => discards.push(x));
    const reps = cardToReports('123');
    d.push(reps[0]!);
    d.push(reps[1]!);
    t = 2000; // a truncated read, then a full one
    for (const rep of cardToReports('456')) d.push(rep);
    for (const rep of cardToReports('12345678')) d.push(rep);
    for (const rep of cardToReports('')) d.push(rep);
    expect(cards).toEqual(['456']);
    expect(discards).toEqual(['timeout', 'too-long', 'empty']);
  });
});

describe('HidCardReader', () => {
  it('hands card numbers from the transport to the callback and never logs them', async () => {
    const transport = new SimHidTransport();
    const cards: string[] = [];
    const lines: unknown[] = [];
    const logger = { debug: (...a: unknown[]) => lines.push(a), info: () => undefined, warn: () => undefined, error: () => undefined };
    const reader = new HidCardReader({ transport, onCard: (c) => cards.push(c), logger: logger as never });
    await reader.start();
    for (const rep of cardToReports('5550001234', { reportId: 0 })) transport.inject(rep);
    expect(cards).toEqual(['5550001234']);
    expect(JSON.stringify(lines)).not.toContain('5550001234');
    await reader.stop();
    transport.inject(cardToReports('1')[0]!);
    expect(reader.stats.reads).toBe(1);
  });

  it('loads no node-hid when no reader is configured', () => {
    expect(createCardReader({ config: undefined, onCard: () => undefined })).toBeNull();
  });

  it('explains a missing libusb, a missing device and a permission problem', async () => {
    const missingLib = new NodeHidTransport({ vendorId: 0xffff, productId: 0x0035, loadHid: () => Promise.reject(new Error('libusb-1.0.so.0: cannot open shared object file')) });
    await expect(missingLib.open()).rejects.toMatchObject({ code: 'HID_LIBRARY_UNAVAILABLE', message: expect.stringContaining('libusb') });
    expect(missingLib.status).toBe('closed');

    const fakeHid = (open: () => unknown) => async () => ({ devices: () => [{ vendorId: 0xffff, productId: 0x0035, path: '/dev/hidraw3', usagePage: 1, usage: 6 }], HID: vi.fn().mockImplementation(open) });
    const none = new NodeHidTransport({ vendorId: 0x1234, productId: 0x0001, loadHid: fakeHid(() => ({})) });
    await expect(none.open()).rejects.toMatchObject({ code: 'HID_DEVICE_NOT_FOUND', message: expect.stringContaining('0x1234') });

    const denied = new NodeHidTransport({
      vendorId: 0xffff,
      productId: 0x0035,
      loadHid: fakeHid(() => {
        throw new Error('cannot open device with path /dev/hidraw3');
      }),
      canRead: async () => false,
    });
    const err = await denied.open().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'HID_PERMISSION_DENIED' });
    expect((err as Error).message).toContain(udevRule(0xffff, 0x0035));
    expect((err as Error).message).toContain('/dev/hidraw3');
  });

  it('opens a reader through node-hid and delivers its reports', async () => {
    let onData: ((d: Buffer) => void) | undefined;
    const dev = { on: (ev: string, fn: (d: never) => void) => ev === 'data' && (onData = fn as never), removeAllListeners: () => undefined, close: vi.fn() };
    const transport = new NodeHidTransport({
      vendorId: 0xffff,
      productId: 0x0035,
      loadHid: async () => ({
        default: {
          devices: () => [{ vendorId: 0xffff, productId: 0x0035, path: '/dev/hidraw1' }],
          HID: function () {
            return dev;
          },
        },
      }),
    });
    const cards: string[] = [];
    const reader = new HidCardReader({ transport, onCard: (c) => cards.push(c) });
    await reader.start();
    for (const rep of cardToReports('42')) onData!(rep);
    expect(cards).toEqual(['42']);
    await reader.stop();
    expect(dev.close).toHaveBeenCalled();
  });
});
