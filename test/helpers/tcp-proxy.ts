/**
 * A TCP proxy between the agent and the broker that can start silently
 * dropping traffic: connections stay open, bytes vanish in both directions —
 * what a dead NAT entry or a flaky uplink looks like. Only keepalive and
 * PUBACK timeouts can notice it.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export class BlackholeProxy {
  private dropping = false;
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

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
