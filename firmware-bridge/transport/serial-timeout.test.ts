/**
 * A write to a pseudo-terminal nobody reads (the device end stops reading) never drains:
 * the transport fails it after writeTimeoutMs instead of hanging the driver,
 * and close() returns too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createPtyPair } from '../../simulators/lib/pty.js';
import { SerialTransport } from './serial.js';

describe('SerialTransport write timeout', () => {
  it('fails a write that cannot drain, and still closes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-wto-'));
    const pty = await createPtyPair({ link: join(dir, 'tty') });
    const t = new SerialTransport({ path: join(dir, 'tty'), writeTimeoutMs: 300 });
    try {
      await t.open();
      pty.pauseReading(); // the other side stops reading: the pty buffer fills
      const t0 = performance.now();
      let failure: unknown;
      for (let i = 0; i < 64 && !failure; i++) {
        await t.write(Buffer.alloc(8192, 0x55)).catch((err: unknown) => (failure = err));
      }
      expect(failure).toMatchObject({ code: 'TRANSPORT_WRITE_FAILED', message: expect.stringMatching(/not drained after 300 ms/) });
      expect(performance.now() - t0).toBeLessThan(10_000);
      const c0 = performance.now();
      await t.close();
      expect(performance.now() - c0).toBeLessThan(2000);
    } finally {
      pty.resumeReading();
      await pty.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
