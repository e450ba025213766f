/**
 * The cloud emulator's print hook (`tallybox-sim cloud --print-docs [--device-key ID=PEMFILE]...`):
 * HTTP routes that sign and send P1 print commands over MQTT and show what the devices answered.
 *
 *   POST /api/print          {"orgId","deviceId","jobId","printer","inline"?: base64, "file"?: path,
 *                             "copies"?, "format"?: "PDF"|"PWG_RASTER"|"PRINTER_READY", "printAfterMs"?}
 *                            inline: the document rides in the command; file: served over HTTPS by
 *                            the emulator's document service (its CA file is printed at start: the
 *                            device's p1.fetch.caFile), hashed, and fetched by the device.
 *                            → 202 {"counter","fetch"?: {"url","size"}}
 *   POST /api/print/cancel   {"orgId","deviceId","jobId"} → 202 {"counter"}
 *   POST /api/print/reprint  {"orgId","deviceId","jobId"} → 202 {"counter"}
 *   GET  /api/print          {"devices": {ID: {jobs: [...newest status per job], receiptsVerified, receiptsBad, resultsBad}}}
 *
 * Results and erasure receipts are verified against a device's identity key when one is given
 * (--device-key ID=FILE, the public key `tallybox provision` prints); without it receipts count as bad.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { PrintDocumentFormat } from '../../src/proto/index.js';
import { HttpBodyError, readJsonBody } from '../../src/util/http-body.js';
import { makePrivateCa, PrintDocServer } from './print-docs.js';
import { PrintCloud, type PrintResultSource } from './print-jobs.js';
import type { CommandSigner } from './signer.js';

export interface PrintDesk {
  /** Handles the request if it is one of the print routes; false otherwise. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /** The document service's CA file (for the device's p1.fetch.caFile), when --print-docs is on. */
  readonly caFile: string | undefined;
  close(): Promise<void>;
}

/** `ID=PEMFILE` → the device's identity public key. */
export function parseDeviceKey(spec: string): [string, KeyObject] {
  const at = spec.indexOf('=');
  if (at < 1) throw new Error(`--device-key ${spec}: expected DEVICE_ID=PUBLIC_KEY_PEM_FILE`);
  return [spec.slice(0, at), createPublicKey(readFileSync(spec.slice(at + 1)))];
}

const FORMATS: Record<string, PrintDocumentFormat> = {
  PDF: PrintDocumentFormat.PRINT_DOCUMENT_FORMAT_PDF,
  PWG_RASTER: PrintDocumentFormat.PRINT_DOCUMENT_FORMAT_PWG_RASTER,
  PRINTER_READY: PrintDocumentFormat.PRINT_DOCUMENT_FORMAT_PRINTER_READY,
};

export async function startPrintDesk(o: { sink: PrintResultSource; signer: CommandSigner; deviceKeys: Map<string, KeyObject>; docs: boolean }): Promise<PrintDesk> {
  const ca = o.docs ? await makePrivateCa() : undefined;
  const docs = ca ? await PrintDocServer.start({ ca }) : undefined;
  const desks = new Map<string, PrintCloud>();
  const desk = (deviceId: string) => {
    let d = desks.get(deviceId);
    if (!d) {
      const key = o.deviceKeys.get(deviceId);
      desks.set(deviceId, (d = new PrintCloud({ sink: o.sink, signer: o.signer, deviceId, ...(key ? { deviceKey: key } : {}) })));
    }
    return d;
  };
  let served = 0;
  const str = (v: unknown, what: string): string => {
    if (typeof v !== 'string' || !v) throw new HttpBodyError(400, 'BAD_REQUEST', `${what} must be a non-empty string`);
    return v;
  };
  const route = async (req: IncomingMessage, res: ServerResponse, path: string) => {
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    try {
      if (req.method === 'GET') {
        const devices: Record<string, unknown> = {};
        for (const [id, d] of desks) devices[id] = d.summary();
        return json(200, { devices });
      }
      const body = (await readJsonBody(req, { maxBytes: 16 * 1024 * 1024, timeoutMs: 30_000 })) as Record<string, unknown>;
      const orgId = str(body.orgId, 'orgId');
      const d = desk(str(body.deviceId, 'deviceId'));
      const jobId = str(body.jobId, 'jobId');
      if (path === '/api/print/cancel') return json(202, { counter: await d.cancelJob(orgId, jobId) });
      if (path === '/api/print/reprint') return json(202, { counter: await d.reprintJob(orgId, jobId) });
      const format = body.format === undefined ? undefined : FORMATS[String(body.format)];
      if (body.format !== undefined && format === undefined) throw new HttpBodyError(400, 'BAD_REQUEST', 'format must be PDF, PWG_RASTER or PRINTER_READY');
      const common = {
        jobId,
        printer: str(body.printer, 'printer'),
        ...(format !== undefined ? { format } : {}),
        ...(typeof body.copies === 'number' ? { copies: body.copies } : {}),
        ...(typeof body.printAfterMs === 'number' ? { printAfterMs: body.printAfterMs } : {}),
      };
      if (typeof body.inline === 'string') return json(202, { counter: await d.printJob(orgId, { ...common, inline: Buffer.from(body.inline, 'base64') }) });
      if (typeof body.file === 'string') {
        if (!docs) throw new HttpBodyError(400, 'BAD_REQUEST', 'fetched documents need the document service: start with --print-docs');
        const doc = await docs.addFile(`${++served}-${basename(body.file)}`, body.file);
        return json(202, { counter: await d.printJob(orgId, { ...common, fetch: doc }), fetch: { url: doc.url, size: doc.size } });
      }
      throw new HttpBodyError(400, 'BAD_REQUEST', 'a print job needs "inline" (base64) or "file" (a path the emulator serves)');
    } catch (err) {
      if (err instanceof HttpBodyError) json(err.status, { error: err.message, code: err.code });
      else json(400, { error: (err as Error).message });
    }
  };
  return {
    caFile: ca?.caFile,
    handle(req, res) {
      const path = (req.url ?? '').split('?')[0] ?? '';
      const ok = (req.method === 'GET' && path === '/api/print') || (req.method === 'POST' && ['/api/print', '/api/print/cancel', '/api/print/reprint'].includes(path));
      if (ok) void route(req, res, path);
      return ok;
    },
    async close() {
      await docs?.close();
      await ca?.cleanup();
    },
  };
}
