/**
 * The Wi-Fi simulator's control interface: HTTP/JSON on 127.0.0.1 only.
 *
 *   GET  /state
 *   POST /phones  {"id"?: "phone-1", "randomised"?: true, "androidStyle"?: true}
 *   POST /join    {"phone": "phone-1", "iface"?: "wlan0"}
 *   POST /leave   {"phone": "phone-1"}
 *   POST /roam    {"phone": "phone-1", "iface": "wlan1", "order"?: "disconnect-first"}
 *   POST /rotate  {"phone": "phone-1"}
 *   POST /wrong-password {"phone": "phone-1", "iface"?: "wlan0"}
 *   POST /restart {"iface": "wlan0"}
 *
 * Replies {"ok": true, ...} or {"ok": false, "error": "..."}; a bad body changes nothing.
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readJsonBody, sendBodyError } from '../../src/util/http-body.js';
import type { WifiOffice } from './office.js';

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const NAME = /^[A-Za-z0-9_.-]{1,32}$/;

export async function startWifiControl(opts: { office: WifiOffice; port?: number }): Promise<{ url: string; close(): Promise<void> }> {
  const { office } = opts;
  const server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '/').split('?')[0];
      try {
        if (req.method === 'GET' && path === '/state') return send(res, 200, { ok: true, ...office.state() });
        if (req.method !== 'POST') return send(res, 404, { ok: false, error: `no route ${req.method} ${path}` });
        const v = await readJsonBody(req, { maxBytes: 4096 });
        if (!v || typeof v !== 'object' || Array.isArray(v)) return send(res, 400, { ok: false, error: 'body must be a JSON object' });
        const b = v as Record<string, unknown>;
        const phone = typeof b.phone === 'string' && NAME.test(b.phone) ? b.phone : undefined;
        const iface = typeof b.iface === 'string' && NAME.test(b.iface) ? b.iface : undefined;
        const needPhone = () => {
          if (!phone) throw Object.assign(new Error('"phone" must name a phone'), { status: 400 });
          return phone;
        };
        switch (path) {
          case '/phones': {
            const id = typeof b.id === 'string' && NAME.test(b.id) ? b.id : undefined;
            return send(res, 200, { ok: true, phone: office.addPhone({ ...(id ? { id } : {}), randomised: b.randomised === true, androidStyle: b.androidStyle === true }) });
          }
          case '/join':
            return send(res, 200, { ok: true, phone: office.join(needPhone(), iface) });
          case '/leave':
            return send(res, 200, { ok: true, phone: office.leave(needPhone()) });
          case '/roam':
            if (!iface) return send(res, 400, { ok: false, error: '"iface" is required' });
            return send(res, 200, { ok: true, phone: office.roam(needPhone(), iface, b.order === 'disconnect-first' ? 'disconnect-first' : 'connect-first') });
          case '/rotate':
            return send(res, 200, { ok: true, phone: office.rotate(needPhone()) });
          case '/wrong-password':
            office.wrongPassword(needPhone(), iface);
            return send(res, 200, { ok: true });
          case '/restart':
            if (!iface) return send(res, 400, { ok: false, error: '"iface" is required' });
            office.restartAp(iface);
            return send(res, 200, { ok: true });
          default:
            return send(res, 404, { ok: false, error: `no route POST ${path}` });
        }
      } catch (err) {
        if (sendBodyError(res, err)) return;
        const status = (err as { status?: number }).status ?? 400;
        send(res, status, { ok: false, error: err instanceof Error ? err.message : String(err) });
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise<void>((r) => server.close(() => r())) };
}
