/**
 * A hostile MQTT peer for tests: speaks just enough MQTT 3.1.1 / 5 (CONNACK,
 * SUBACK, PUBACK, PINGRESP) to bring an agent online, records what it is
 * sent, and can stream a PUBLISH of any declared size without holding it in
 * memory (one reused 1 MiB chunk, with backpressure).
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';

export interface SeenConnect {
  version: number;
  /** MQTT 5 CONNECT property 0x27, when announced. */
  maximumPacketSize?: number;
  hasWill: boolean;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

function readVarint(buf: Buffer, at: number): { value: number; bytes: number } | undefined {
  let value = 0;
  let mul = 1;
  for (let i = 0; i < 4; i++) {
    if (at + i >= buf.length) return undefined;
    const b = buf[at + i]!;
    value += (b & 0x7f) * mul;
    mul *= 128;
    if (!(b & 0x80)) return { value, bytes: i + 1 };
  }
  throw new Error('malformed varint');
}

/** MQTT 5 CONNECT properties: 0x27 (maximum packet size) is read; fixed-size others are skipped; anything else ends the scan. */
function maxPacketSizeProperty(props: Buffer): number | undefined {
  let i = 0;
  while (i < props.length) {
    const id = props[i++]!;
    if (id === 0x27) return props.readUInt32BE(i);
    if (id === 0x11)
      i += 4; // session expiry
    else if (id === 0x21 || id === 0x22)
      i += 2; // receive maximum, topic alias maximum
    else if (id === 0x17 || id === 0x19)
      i += 1; // request problem/response information
    else return undefined;
  }
  return undefined;
}

export class FakeBroker {
  readonly connects: SeenConnect[] = [];
  readonly publishes: { topic: string; bytes: number }[] = [];
  readonly sockets = new Set<Socket>();
  private readonly versions = new Map<Socket, number>();
  /** MQTT 5 CONNACK Receive Maximum to announce (undefined: none). */
  receiveMaximum: number | undefined;
  /** Hold each PUBACK this long (ms), so publishes pile up in flight. */
  ackDelayMs = 0;
  /** Most QoS 1 publishes from one client awaiting our PUBACK at once. */
  maxInflight = 0;
  private inflight = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<FakeBroker> {
    let broker!: FakeBroker;
    const server = createServer((s) => broker.accept(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    broker = new FakeBroker(server, (server.address() as AddressInfo).port);
    return broker;
  }

  private accept(s: Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => undefined); // the agent may close mid-stream: that is what some tests provoke
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (buf.length < 2) return;
        const len = readVarint(buf, 1);
        if (!len) return;
        const start = 1 + len.bytes;
        if (buf.length < start + len.value) return;
        this.handle(s, buf[0]!, buf.subarray(start, start + len.value));
        buf = buf.subarray(start + len.value);
      }
    });
  }

  private handle(s: Socket, first: number, body: Buffer): void {
    const type = first >> 4;
    const v5 = this.versions.get(s) === 5;
    if (type === 1) {
      const nameLen = body.readUInt16BE(0);
      const version = body[2 + nameLen]!;
      const flags = body[3 + nameLen]!;
      let maximumPacketSize: number | undefined;
      if (version === 5) {
        const p = readVarint(body, 6 + nameLen)!;
        maximumPacketSize = maxPacketSizeProperty(body.subarray(6 + nameLen + p.bytes, 6 + nameLen + p.bytes + p.value));
      }
      this.versions.set(s, version);
      this.connects.push({ version, hasWill: (flags & 0x04) !== 0, ...(maximumPacketSize !== undefined ? { maximumPacketSize } : {}) });
      const rm = this.receiveMaximum;
      if (version === 5 && rm !== undefined) s.write(Buffer.from([0x20, 6, 0, 0, 3, 0x21, rm >> 8, rm & 0xff]));
      else s.write(Buffer.from(version === 5 ? [0x20, 3, 0, 0, 0] : [0x20, 2, 0, 0]));
    } else if (type === 8) {
      s.write(Buffer.from(v5 ? [0x90, 4, body[0]!, body[1]!, 0, 1] : [0x90, 3, body[0]!, body[1]!, 1]));
    } else if (type === 3) {
      const qos = (first >> 1) & 3;
      const tl = body.readUInt16BE(0);
      this.publishes.push({ topic: body.toString('utf8', 2, 2 + tl), bytes: body.length });
      if (qos > 0) {
        this.maxInflight = Math.max(this.maxInflight, ++this.inflight);
        const ack = Buffer.from([0x40, 2, body[2 + tl]!, body[3 + tl]!]);
        const send = () => {
          this.inflight--;
          if (!s.destroyed) s.write(ack);
        };
        if (this.ackDelayMs > 0) setTimeout(send, this.ackDelayMs);
        else send();
      }
    } else if (type === 12) {
      s.write(Buffer.from([0xd0, 0]));
    }
  }

  /** Stream one QoS 0 PUBLISH of `payloadBytes` zero bytes to every connected client. */
  async sendPublish(topic: string, payloadBytes: number): Promise<void> {
    const chunk = Buffer.alloc(1 << 20);
    await Promise.all(
      [...this.sockets].map(async (s) => {
        const t = Buffer.from(topic);
        const v5 = this.versions.get(s) === 5;
        const head = Buffer.concat([Buffer.from([0x30]), varint(2 + t.length + (v5 ? 1 : 0) + payloadBytes), Buffer.from([t.length >> 8, t.length & 0xff]), t, Buffer.from(v5 ? [0] : [])]);
        const write = (b: Buffer) => (s.write(b) ? Promise.resolve() : new Promise<void>((r) => s.once('drain', () => r())));
        await write(head);
        for (let left = payloadBytes; left > 0 && !s.destroyed; left -= chunk.length) await write(left >= chunk.length ? chunk : chunk.subarray(0, left));
      }),
    );
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
