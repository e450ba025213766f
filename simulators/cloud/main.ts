/**
 * `tallybox-sim cloud`: the cloud side on one machine, for developers of
 * device apps and of the real cloud.
 *
 *   tallybox-sim cloud [--port 1883] [--broker-url URL] [--http-port 8080] [--key-file FILE]
 *                      [--issue-claim device=ID,kind=K,region=R,orgs=A+B[,code=C]]...
 *
 * - an embedded MQTT broker on 127.0.0.1:PORT (or an existing broker with --broker-url);
 * - a sink that decodes every punch, state and command result, printed as JSON lines;
 * - a command signer (Ed25519; --key-file keeps the key across runs) whose public
 *   key a device pins in `cloud.commandKeys`;
 * - an HTTP page on 127.0.0.1:HTTP_PORT:
 *     GET  /               a page that shows the latest punches, states and results
 *     GET  /api/events     the same as JSON
 *     GET  /api/key        {"id","publicKey"} to paste into a device config
 *     POST /api/commands   {"orgId","deviceId","command":{"orgWithdraw":{}}}  → signed, sent; {"counter"}
 *     POST /api/claims     {"deviceId","kind","region","servedOrgs":[…],"orgId"?,"code"?} → a one-time
 *                          claim code and the --cloud-key for `tallybox provision --claim` (claims.ts)
 *     POST /api/print[/cancel|/reprint], GET /api/print   P1 print jobs (print-http.ts; --print-docs
 *                          serves fetched documents over HTTPS, --device-key ID=PEM verifies receipts)
 */
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { HttpBodyError, readJsonBody } from '../../src/util/http-body.js';
import { parseArgs } from 'node:util';
import { pb } from '../../src/proto/index.js';
import { startEmbeddedBroker } from './broker.js';
import { ClaimService, parseClaimSpec, type ClaimSpec } from './claims.js';
import { IncidentDesk } from './incidents.js';
import { parseDeviceKey, startPrintDesk } from './print-http.js';
import { CommandSigner } from './signer.js';
import { CloudSink } from './sink.js';

const HELP = `usage: tallybox-sim cloud [--port 1883] [--broker-url URL] [--http-port 8080] [--key-file FILE]
                          [--issue-claim device=ID,kind=K,region=R,orgs=A+B[,code=C]]...
                          [--print-docs] [--device-key DEVICE_ID=PUBLIC_KEY_PEM_FILE]...`;

interface EventLine {
  at: string;
  type: 'punch' | 'state' | 'result' | 'claim' | 'incident';
  topic?: string;
  body: Record<string, unknown>;
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>Tallybox cloud emulator</title>
<style>body{font:14px system-ui;margin:2em}td,th{padding:2px 8px;text-align:left}tr:nth-child(even){background:#f4f4f4}</style>
<h1>Tallybox cloud emulator</h1><p id="k"></p><table id="t"><tr><th>at</th><th>type</th><th>device</th><th>detail</th></tr></table>
<script>
fetch('/api/key').then(r=>r.json()).then(k=>document.getElementById('k').textContent='command key '+k.id+': '+k.publicKey);
async function tick(){const ev=await (await fetch('/api/events')).json();const t=document.getElementById('t');
t.innerHTML='<tr><th>at</th><th>type</th><th>device</th><th>detail</th></tr>'+ev.slice(-200).reverse().map(e=>'<tr><td>'+e.at+'</td><td>'+e.type+'</td><td>'+(e.body.deviceId||'')+'</td><td><code>'+JSON.stringify(e.body).replace(/</g,'&lt;')+'</code></td></tr>').join('');}
tick();setInterval(tick,1000);
</script>`;

function loadSigner(keyFile: string | undefined): CommandSigner {
  // One key signs commands and claim responses: the device pins the key that answered its claim.
  if (!keyFile) return new CommandSigner({ keyId: 'cloud-sim', privateKey: generateKeyPairSync('ed25519').privateKey });
  if (!existsSync(keyFile)) {
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  }
  return new CommandSigner({ keyId: 'cloud-sim', privateKey: createPrivateKey(readFileSync(keyFile)) });
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '1883' },
      'broker-url': { type: 'string' },
      'http-port': { type: 'string', default: '8080' },
      'key-file': { type: 'string' },
      'issue-claim': { type: 'string', multiple: true },
      'print-docs': { type: 'boolean' },
      'device-key': { type: 'string', multiple: true },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const broker = values['broker-url'] ? undefined : await startEmbeddedBroker({ port: Number(values.port) });
  const url = values['broker-url'] ?? broker!.url;
  const signer = loadSigner(values['key-file']);
  const claims = new ClaimService({ privateKey: signer.privateKeyForClaims(), keyId: signer.keyId, onEvent: (e) => emit({ type: 'claim', body: { ...e } }) });
  const events: EventLine[] = [];
  const emit = (e: Omit<EventLine, 'at'>) => {
    const line = { at: new Date().toISOString(), ...e };
    events.push(line);
    if (events.length > 5000) events.splice(0, events.length - 5000);
    process.stdout.write(JSON.stringify(line) + '\n');
  };
  const opts = { longs: Number, enums: String, bytes: String } as const;
  const sink = await CloudSink.connect({
    url,
    onPunch: (p, { duplicate }) => emit({ type: 'punch', body: { ...pb.PunchEvent.toObject(p, opts), duplicate } }),
    onState: (s, topic) => emit({ type: 'state', topic, body: pb.DeviceState.toObject(s, opts) }),
    onResult: (r, topic) => emit({ type: 'result', topic, body: pb.CommandResult.toObject(r, opts) }),
  });
  await claims.connect(url);
  // Incident records (tallybox/v1/+/+/incident): printed and acknowledged with a signed IncidentAck.
  const desk = await IncidentDesk.connect({ url, sink, signer, autoAck: true, onIncident: (i) => emit({ type: 'incident', body: { ...i } }) });
  for (const spec of values['issue-claim'] ?? []) emit({ type: 'claim', body: { issued: claims.issue(parseClaimSpec(spec)) } });
  // P1 print jobs: signed PrintJob/CancelJob/ReprintJob over MQTT, statuses and receipts verified (print-http.ts).
  const print = await startPrintDesk({ sink, signer, deviceKeys: new Map((values['device-key'] ?? []).map(parseDeviceKey)), docs: values['print-docs'] ?? false });
  if (print.caFile) process.stderr.write(`cloud emulator: print documents served over HTTPS; device p1.fetch.caFile: ${print.caFile}\n`);

  const http = createServer((req, res) => {
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (print.handle(req, res)) return;
    if (req.method === 'GET' && req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else if (req.method === 'GET' && req.url === '/api/events') json(200, events);
    else if (req.method === 'GET' && req.url === '/api/key') json(200, { id: signer.keyId, publicKey: signer.publicKeyBase64() });
    else if (req.method === 'POST' && req.url === '/api/commands') {
      void (async () => {
        let parsed: unknown;
        try {
          // The shared bounded reader: JSON only, 64 KiB (a command's own limit), 10 s.
          parsed = await readJsonBody(req, { maxBytes: 64 * 1024, timeoutMs: 10_000 });
        } catch (err) {
          if (err instanceof HttpBodyError) json(err.status, { error: err.message, code: err.code });
          else json(400, { error: (err as Error).message });
          return;
        }
        try {
          const { orgId, deviceId, command } = parsed as { orgId: string; deviceId: string; command: Record<string, unknown> };
          const fields = pb.CommandBody.fromObject({ ...command });
          await sink.sendCommand(signer, orgId, deviceId, fields);
          json(202, { counter: signer.lastCounter });
        } catch (err) {
          json(400, { error: (err as Error).message });
        }
      })();
    } else if (req.method === 'POST' && req.url === '/api/claims') {
      void (async () => {
        try {
          const spec = (await readJsonBody(req, { maxBytes: 16 * 1024, timeoutMs: 10_000 })) as ClaimSpec;
          json(201, claims.issue({ ...spec, servedOrgs: Array.isArray(spec.servedOrgs) ? spec.servedOrgs : [] }));
        } catch (err) {
          if (err instanceof HttpBodyError) json(err.status, { error: err.message, code: err.code });
          else json(400, { error: (err as Error).message });
        }
      })();
    } else json(404, { error: 'GET / | GET /api/events | GET /api/key | POST /api/commands | POST /api/claims' });
  });
  await new Promise<void>((r) => http.listen(Number(values['http-port']), '127.0.0.1', () => r()));
  process.stderr.write(`cloud emulator: broker ${url}, page http://127.0.0.1:${values['http-port']}/, command key ${signer.keyId} ${signer.publicKeyBase64()}\n`);

  return new Promise<number>((resolve) => {
    const stop = () => {
      void (async () => {
        http.close();
        await claims.close();
        await desk.close();
        await print.close();
        await sink.close();
        await broker?.close();
        resolve(0);
      })();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
