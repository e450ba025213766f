/**
 * The printer simulator's run-time control, two ways in, one set of commands:
 *
 *   stdin lines (one JSON reply line each on stdout):
 *     fault offline on|off      fault busy on|off        fault never-confirm on|off
 *     fault slow BPS            fault paper-out BYTES    fault close-after BYTES   (0 = off)
 *     resume                    (paper loaded: a job stopped by paper-out goes on)
 *     clear                     (every fault off, and resume)
 *     status                    jobs
 *   HTTP/JSON on 127.0.0.1 only:
 *     GET /state                → {ok, faults, status, jobs}
 *     POST /faults {"paperOutAfterBytes":1000, ...}   (PrinterFaults keys; a bad value changes nothing)
 *     POST /resume | /clear
 *
 * Replies {"ok":true,...} or {"ok":false,"error":"..."}.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Interface } from 'node:readline';
import { readJsonBody, sendBodyError } from '../../src/util/http-body.js';
import { errorMessage } from '../../src/util/errors.js';
import type { SimPrinterContext } from './context.js';
import { NO_FAULTS, type PrinterFaults } from './types.js';

type Reply = Record<string, unknown> & { ok: boolean };

function state(ctx: SimPrinterContext): Reply {
  // Job names are the client's; the control shows ids, sizes and states only.
  return { ok: true, faults: { ...ctx.faults }, status: ctx.status(), jobs: ctx.recorder.jobs().map(({ name: _n, ...j }) => j) };
}

const SWITCHES: Record<string, keyof PrinterFaults> = {
  offline: 'offline',
  busy: 'busy',
  'never-confirm': 'neverConfirm',
  slow: 'slowBytesPerSec',
  'paper-out': 'paperOutAfterBytes',
  'close-after': 'closeAfterBytes',
};

/** One control line → reply. Never throws. */
export function controlLine(ctx: SimPrinterContext, line: string): Reply {
  const words = line.trim().split(/\s+/).filter(Boolean);
  try {
    switch (words[0]) {
      case undefined:
        return { ok: true };
      case 'status':
      case 'jobs':
        return state(ctx);
      case 'resume':
        ctx.resume();
        return { ok: true, status: ctx.status() };
      case 'clear':
        ctx.setFaults({ ...NO_FAULTS });
        ctx.resume();
        return { ok: true, faults: { ...ctx.faults }, status: ctx.status() };
      case 'fault': {
        const key = SWITCHES[words[1] ?? ''];
        if (!key || words.length !== 3) return { ok: false, error: `usage: fault ${Object.keys(SWITCHES).join('|')} VALUE` };
        const raw = words[2]!;
        let value: boolean | number;
        if (typeof NO_FAULTS[key] === 'boolean') {
          if (raw !== 'on' && raw !== 'off') return { ok: false, error: `fault ${words[1]} takes on or off` };
          value = raw === 'on';
        } else {
          if (!/^\d{1,15}$/.test(raw)) return { ok: false, error: `fault ${words[1]} takes a whole number (0 = off)` };
          value = Number(raw);
        }
        return { ok: true, faults: ctx.setFaults({ [key]: value }), status: ctx.status() };
      }
      default:
        return { ok: false, error: `unknown command "${words[0]}" (fault, resume, clear, status, jobs)` };
    }
  } catch (err) {
    return { ok: false, error: errorMessage(err) };
  }
}

export function attachStdinControl(ctx: SimPrinterContext, rl: Interface, out: (line: string) => void): void {
  rl.on('line', (line) => out(JSON.stringify(controlLine(ctx, line))));
}

export async function startPrinterControl(ctx: SimPrinterContext, port = 0): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const send = (status: number, body: Reply) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    void (async () => {
      const path = (req.url ?? '/').split('?')[0];
      try {
        if (req.method === 'GET' && path === '/state') return send(200, state(ctx));
        if (req.method !== 'POST') return send(404, { ok: false, error: `no route ${req.method} ${path}` });
        if (path === '/resume') return send(200, controlLine(ctx, 'resume'));
        if (path === '/clear') return send(200, controlLine(ctx, 'clear'));
        if (path !== '/faults') return send(404, { ok: false, error: `no route POST ${path}` });
        const body = await readJsonBody(req, { maxBytes: 4096 });
        if (!body || typeof body !== 'object' || Array.isArray(body)) return send(400, { ok: false, error: 'body must be a JSON object of PrinterFaults keys' });
        const change = body as Record<string, unknown>;
        const unknown = Object.keys(change).filter((k) => !(k in NO_FAULTS));
        if (unknown.length) return send(400, { ok: false, error: `unknown fault keys: ${unknown.join(', ')}` });
        try {
          return send(200, { ok: true, faults: ctx.setFaults(change as Partial<PrinterFaults>), status: ctx.status() });
        } catch (err) {
          return send(400, { ok: false, error: errorMessage(err) });
        }
      } catch (err) {
        if (!sendBodyError(res, err)) send(400, { ok: false, error: errorMessage(err) });
      }
    })();
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
