/**
 * The cloud emulator's document service for P1 fetched print jobs: HTTPS with
 * a private CA made for this run (openssl: a CA certificate and a server
 * certificate for 127.0.0.1/localhost signed by it), so the agent is
 * configured to trust exactly that CA (p1.fetch.caFile) and nothing is
 * verified loosely. Documents are streamed from memory or from a file.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PrivateCa {
  dir: string;
  caFile: string;
  caPem: string;
  key: string;
  cert: string;
  cleanup(): Promise<void>;
}

/** A CA and a server certificate (SAN 127.0.0.1, ::1, localhost), 2 days. Needs the openssl program. */
export async function makePrivateCa(): Promise<PrivateCa> {
  const dir = await mkdtemp(join(tmpdir(), 'tbx-cloud-ca-'));
  const o = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  o(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=tallybox test cloud CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  );
  o('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  await writeFile(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  o('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf');
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    caPem: await readFile(join(dir, 'ca.pem'), 'utf8'),
    key: await readFile(join(dir, 'server.key'), 'utf8'),
    cert: await readFile(join(dir, 'server.pem'), 'utf8'),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface ServedDocument {
  url: string;
  sha256: Buffer;
  size: number;
}

/** Serves documents at https://127.0.0.1:PORT/doc/NAME; counts the requests per document. */
export class PrintDocServer {
  readonly #docs = new Map<string, { bytes?: Buffer; file?: string; size: number }>();
  readonly requests = new Map<string, number>();
  private constructor(
    readonly server: Server,
    readonly port: number,
    readonly ca: PrivateCa,
  ) {}

  static async start(opts: { ca: PrivateCa; host?: string }): Promise<PrintDocServer> {
    let self: PrintDocServer | undefined;
    const server = createServer({ key: opts.ca.key, cert: opts.ca.cert }, (req, res) => {
      const name = decodeURIComponent((req.url ?? '').replace(/^\/doc\//, ''));
      const d = self?.docs(name);
      if (!d || req.method !== 'GET') {
        res.writeHead(404).end();
        return;
      }
      self?.requests.set(name, (self.requests.get(name) ?? 0) + 1);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(d.size) });
      if (d.bytes) res.end(d.bytes);
      else createReadStream(d.file ?? '').pipe(res);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, opts.host ?? '127.0.0.1', () => resolve());
    });
    self = new PrintDocServer(server, (server.address() as AddressInfo).port, opts.ca);
    return self;
  }

  private docs(name: string) {
    return this.#docs.get(name);
  }

  url(name: string): string {
    return `https://127.0.0.1:${this.port}/doc/${encodeURIComponent(name)}`;
  }

  /** Serve bytes under a name; the hash and size a PrintJob needs come back. */
  add(name: string, bytes: Buffer): ServedDocument {
    this.#docs.set(name, { bytes, size: bytes.length });
    return { url: this.url(name), sha256: createHash('sha256').update(bytes).digest(), size: bytes.length };
  }

  /** Serve a file (large documents: streamed, never read whole). */
  async addFile(name: string, file: string): Promise<ServedDocument> {
    const size = (await stat(file)).size;
    this.#docs.set(name, { file, size });
    const h = createHash('sha256');
    for await (const c of createReadStream(file)) h.update(c as Buffer);
    return { url: this.url(name), sha256: h.digest(), size };
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}
