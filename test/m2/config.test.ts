// The M2 config fragment and the wiring helper.
import { describe, expect, it } from 'vitest';
import { SimHidTransport } from '../../firmware-bridge/hid/transport.js';
import { MemoryTransport } from '../../firmware-bridge/transport/mock.js';
import { createM2Role } from '../../src/roles/m2/create.js';
import { M2ConfigSchema } from '../../src/roles/m2/config.js';

describe('M2 config fragment', () => {
  it('has defaults for everything', () => {
    expect(M2ConfigSchema.parse({})).toEqual({
      bridge: { port: '/dev/ttyS2', baudRate: 921600, timeoutMs: 1000 },
      cardReader: null,
      face: {
        dim: 512,
        threshold: 0.4,
        livenessThreshold: 0.5,
        duplicateThreshold: 0.55,
        enrolCaptures: 3,
        enrolTimeoutMs: 20_000,
        scoreBuckets: { medium: 0.5, high: 0.65 },
        livenessBuckets: { medium: 0.75, high: 0.9 },
      },
      display: { showFirstName: false, feedbackMs: 3000 },
      repeatWindowSec: 60,
      tamperResponse: 'alarm',
      backoff: { minMs: 250, maxMs: 30_000 },
      heartbeatMs: 5000,
      enrolOnUpsert: true,
    });
  });

  it('takes a card reader as a report socket (device), exclusive with vendor/product ids', () => {
    expect(M2ConfigSchema.parse({ cardReader: { device: '/run/tallybox/card.sock' } }).cardReader).toMatchObject({ device: '/run/tallybox/card.sock', reportId: 'auto' });
    expect(() => M2ConfigSchema.parse({ cardReader: {} })).toThrow(/vendorId/);
    expect(() => M2ConfigSchema.parse({ cardReader: { device: '/x.sock', vendorId: 1, productId: 2 } })).toThrow(/device/);
  });

  it('takes a card reader by vendor/product id and rejects bad input naming the key', () => {
    const c = M2ConfigSchema.parse({ cardReader: { vendorId: 0xffff, productId: 0x0035 }, tamperResponse: 'zeroise', bridge: { port: '/dev/ttyAMA1', baudRate: 115200 } });
    expect(c.cardReader).toEqual({ vendorId: 0xffff, productId: 0x0035, reportId: 'auto', interKeyTimeoutMs: 1000 });
    expect(c.tamperResponse).toBe('zeroise');
    const bad = (input: unknown) => {
      const r = M2ConfigSchema.safeParse(input);
      expect(r.success).toBe(false);
      return r.error!.issues.map((i) => i.path.join('.')).join(' ');
    };
    expect(bad({ bridge: { baud: 9600 } })).toMatch(/bridge/);
    expect(bad({ bridge: { baudRate: 12345 } })).toMatch(/bridge.baudRate/);
    expect(bad({ tamperResponse: 'explode' })).toMatch(/tamperResponse/);
    expect(bad({ face: { threshold: 2 } })).toMatch(/face.threshold/);
    expect(bad({ face: { scoreBuckets: { medium: 0.8, high: 0.6 } } })).toMatch(/face.scoreBuckets.high/);
    expect(bad({ cardReader: { vendorId: 70000, productId: 1 } })).toMatch(/cardReader.vendorId/);
    expect(bad({ repeatWindowSec: -1 })).toMatch(/repeatWindowSec/);
  });

  it('createM2Role wires the driver and, only when configured, the card reader', () => {
    const agent = { punch: async () => undefined, setPeripheral: () => undefined };
    const vault = {} as never;
    const none = createM2Role({ config: {}, agent, vault, transport: new MemoryTransport({ description: 'mem:test' }) });
    expect(none.role.cardReader).toBeNull();
    expect(none.driver.timeoutMs).toBe(1000);
    const hid = new SimHidTransport();
    const withCard = createM2Role({ config: { cardReader: { vendorId: 1, productId: 2 }, bridge: { timeoutMs: 500 } }, agent, vault, transport: new MemoryTransport({ description: 'mem:test' }), cardTransport: hid });
    expect(withCard.role.cardReader?.transport).toBe(hid);
    expect(withCard.driver.timeoutMs).toBe(500);
    // The production HID transport is created lazily: node-hid is not loaded until the reader opens.
    const prod = createM2Role({ config: { cardReader: { vendorId: 0xffff, productId: 0x35 } }, agent, vault, transport: new MemoryTransport({ description: 'mem:test' }) });
    expect(prod.role.cardReader?.transport.description).toBe('hid:ffff:0035');
  });
});
