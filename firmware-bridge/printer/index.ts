/**
 * `openPrinter(url)`: the one place a printer URL becomes a `Printer`.
 *
 *   raw://host[:9100][?pjl=1]   raw TCP 9100 (AppSocket), PJL job wrapper and status with pjl=1
 *   ipp://host[:631]/path, ipps://…   IPP / IPP over TLS (firmware-bridge/printer/ipp/)
 *   usblp:/dev/usb/lp0          a USB printer-class device file
 *
 * A URL that is not one of these is PRINTER_URL_INVALID (a configuration error: nothing is opened).
 */
import type { Printer } from '../devices.js';
import { TallyboxError } from '../../src/util/errors.js';
import { IppPrinter, type IppPrinterOptions } from './ipp/client.js';
import { RawPrinter, type RawPrinterOptions } from './raw9100.js';

export { IppPrinter } from './ipp/client.js';
export { RawPrinter } from './raw9100.js';

export interface OpenPrinterOptions {
  raw?: Omit<RawPrinterOptions, 'host' | 'port' | 'pjl'>;
  ipp?: Omit<IppPrinterOptions, 'url'>;
}

function invalid(msg: string): TallyboxError {
  return new TallyboxError('PRINTER_URL_INVALID', msg);
}

export function openPrinter(url: string, opts: OpenPrinterOptions = {}): Printer {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalid('the printer URL is not a URL (raw://host:9100, ipp://host:631/ipp/print, usblp:/dev/usb/lp0)');
  }
  switch (u.protocol) {
    case 'raw:': {
      if (!u.hostname) throw invalid('a raw:// printer URL needs a host');
      if (u.pathname && u.pathname !== '/') throw invalid('a raw:// printer URL has no path');
      const pjl = u.searchParams.get('pjl');
      if (pjl !== null && pjl !== '0' && pjl !== '1') throw invalid('raw:// takes pjl=0 or pjl=1');
      for (const k of u.searchParams.keys()) if (k !== 'pjl') throw invalid(`raw:// has no option "${k}"`);
      const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
      return new RawPrinter({ ...opts.raw, host, port: u.port ? Number(u.port) : 9100, pjl: pjl === '1' });
    }
    case 'ipp:':
    case 'ipps:':
      // IppPrinter validates the rest of the URL (port, path, no credentials) and throws CONFIG_INVALID.
      return new IppPrinter({ ...opts.ipp, url });
    case 'usblp:':
      throw new TallyboxError('NOT_BUILT', 'the USB printer-class client is not built yet');
    default:
      throw invalid(`unknown printer URL scheme "${u.protocol}" (raw:, ipp:, ipps:, usblp:)`);
  }
}
