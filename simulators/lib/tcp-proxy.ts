/**
 * A TCP proxy between a device and its broker that can fail the way uplinks do:
 * - blackhole(true): connections stay open, bytes vanish in both directions —
 *   a dead NAT entry or a flaky uplink; only keepalive and PUBACK timeouts notice;
 * - cut(true): every connection is reset and new ones are refused — the WAN is down.
 * The cloud's own connection to the broker is not affected, as in a real site outage.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export class BlackholeProxy {
  private dropping = false;
  private refusing = false;
  private readonly sockets = new Set<Socket>();
  private constructor(private readonly server: Server) {}

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  static async start(targetPort: number): Promise<BlackholeProxy> {
    let proxy: BlackholeProxy | undefined;
    const server = createServer((client) => {
      if (proxy!.refusing) {
        client.destroy();
        return;
      }
      const upstream = connect(targetPort, '127.0.0.1');
      proxy!.sockets.add(client).add(upstream);
      client.on('data', (d) => {
        if (!proxy!.dropping) upstream.write(d);
      });
      upstream.on('data', (d) => {
        if (!proxy!.dropping) client.write(d);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
        proxy!.sockets.delete(client);
        proxy!.sockets.delete(upstream);
      };
      client.on('close', end).on('error', end);
      upstream.on('close', end).on('error', end);
    });
    proxy = new BlackholeProxy(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return proxy;
  }

  /** Start dropping every byte, silently (no FIN, no RST). New connections are accepted and also dropped. */
  blackhole(on: boolean): void {
    this.dropping = on;
  }

  /** Reset every connection and refuse new ones (true), or accept them again (false). */
  cut(on: boolean): void {
    this.refusing = on;
    if (on) for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
