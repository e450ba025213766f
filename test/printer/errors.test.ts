/**
 * The one place printer drivers make the contract's errors (firmware-bridge/printer/errors.ts): the
 * code a situation gets decides whether the spool retries the job, so it is pinned here; each
 * driver's own tests (usblp, ipp) break the link for real and see the same codes.
 */
import { describe, expect, it } from 'vitest';
import { cancelledError, linkError, stoppedError } from '../../firmware-bridge/printer/errors.js';
import { pause } from '../../firmware-bridge/printer/pause.js';

describe('printer errors', () => {
  it('a link error before the link was up is PRINTER_UNREACHABLE; after, PRINTER_CLOSED; the errno is kept', () => {
    expect(linkError('ECONNREFUSED', false, 'm', { bytesSent: 0 })).toMatchObject({ code: 'PRINTER_UNREACHABLE', details: { errno: 'ECONNREFUSED', bytesSent: 0 } });
    expect(linkError('EPIPE', true, 'm', { bytesSent: 10, accepted: true })).toMatchObject({ code: 'PRINTER_CLOSED', details: { errno: 'EPIPE', bytesSent: 10, accepted: true } });
  });

  it('a stopped printer is PRINTER_STOPPED with its reasons in details and message', () => {
    const e = stoppedError('usblp:/dev/usb/lp0', { state: 'stopped', reasons: ['media-empty'] }, { bytesSent: 0 });
    expect(e).toMatchObject({ code: 'PRINTER_STOPPED', details: { reasons: ['media-empty'], bytesSent: 0 } });
    expect(e.message).toContain('stopped: media-empty');
    expect(stoppedError('the printer', { state: 'idle', reasons: [] }, {}, ', not accepting jobs').message).toContain('idle, not accepting jobs: no reason given');
  });

  it('a cancel is PRINTER_CANCELLED saying how far the job got', () => {
    expect(cancelledError('after 5 bytes', { bytesSent: 5 })).toMatchObject({ code: 'PRINTER_CANCELLED', message: 'the job was cancelled after 5 bytes', details: { bytesSent: 5 } });
  });

  it('pause() ends early when the signal aborts', async () => {
    const ac = new AbortController();
    const t0 = performance.now();
    const p = pause(600_000, ac.signal);
    ac.abort();
    await p;
    expect(performance.now() - t0).toBeLessThan(60_000);
  });
});
