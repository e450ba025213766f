/**
 * A keyboard-wedge card reader in its own process, as the agent in another
 * process sees one: a Unix stream socket serving the HID input reports (one
 * length byte + the report, exactly what hidraw's read() returns), which the
 * agent opens as `m2.cardReader.device: PATH` (SocketHidTransport). The
 * socket is created 0600: only the agent's user may read card numbers.
 *
 * Faults, like a real reader on a USB hub:
 *   unplug()  connections reset, the socket removed (the agent sees a read error)
 *   hang()    the socket node disappears and reports stop, but the connection
 *             stays open without a word (a hub that lost power): only the
 *             agent's presence heartbeat can notice
 *   replug()  serving again at the same path
 */
import { chmod, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { cardToReports } from '../../firmware-bridge/hid/keyboard.js';
import { frameReport } from '../../firmware-bridge/hid/socket.js';

export type CardReaderPlug = 'plugged' | 'hung' | 'unplugged';

export interface CardReaderServerState {
  plug: CardReaderPlug;
  clients: number;
  swipes: number;
}

export class CardReaderServer {
  readonly path: string;
  readonly #reportId: number | undefined;
  #server: Server | null = null;
  readonly #clients = new Set<Socket>();
  #plug: CardReaderPlug = 'unplugged';
  #swipes = 0;

  private constructor(opts: { path: string; reportId?: number }) {
    this.path = opts.path;
    this.#reportId = opts.reportId;
  }

  static async start(opts: { path: string; reportId?: number }): Promise<CardReaderServer> {
    const s = new CardReaderServer(opts);
    await s.replug();
    return s;
  }

  state(): CardReaderServerState {
    return { plug: this.#plug, clients: this.#clients.size, swipes: this.#swipes };
  }

  /** Present a card: its number typed as press/release reports, then Enter. Returns the reports sent. */
  swipe(card: string): number {
    if (this.#plug !== 'plugged') return 0;
    this.#swipes++;
    const reports = cardToReports(card, this.#reportId === undefined ? {} : { reportId: this.#reportId });
    const wire = Buffer.concat(reports.map((r) => frameReport(r)));
    for (const c of this.#clients) c.write(wire);
    return reports.length;
  }

  async unplug(): Promise<void> {
    for (const c of this.#clients) c.destroy();
    this.#clients.clear();
    await this.#closeServer();
    this.#plug = 'unplugged';
  }

  /** Gone without a word: no reset, no reports; the node vanishes. */
  async hang(): Promise<void> {
    await this.#closeServer(false);
    this.#plug = 'hung';
  }

  async replug(): Promise<void> {
    if (this.#plug === 'plugged') return;
    for (const c of this.#clients) c.destroy();
    this.#clients.clear();
    await this.#closeServer();
    // A socket left by a killed run is stale: replace it.
    await unlink(this.path).catch(() => undefined);
    const server = createServer((sock) => {
      if (this.#plug !== 'plugged') return void sock.destroy();
      this.#clients.add(sock);
      sock.on('error', () => sock.destroy());
      sock.on('close', () => this.#clients.delete(sock));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
    await chmod(this.path, 0o600);
    this.#server = server;
    this.#plug = 'plugged';
  }

  async close(): Promise<void> {
    await this.unplug();
  }

  /** `wait`: until every connection has ended (not when hanging: those stay open on purpose). */
  async #closeServer(wait = true): Promise<void> {
    const server = this.#server;
    this.#server = null;
    if (server) {
      const closed = new Promise<void>((r) => server.close(() => r()));
      if (wait) await closed;
    }
    await unlink(this.path).catch(() => undefined); // already gone: fine
  }
}
