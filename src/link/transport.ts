/**
 * Builds the MQTT client the link (and the doctor's probe) use: our own socket
 * (TCP or TLS with region pinning on the certificate), read through the packet
 * size gate, under mqtt.js's protocol engine. INTERNAL to src/link: it is the
 * one module that hands out a raw MqttClient, and a test keeps every importer
 * inside src/link (test/link/egress-gate.test.ts).
 *
 * mqtt.js's own stream builders are bypassed (a custom builder is a documented
 * MqttClient constructor argument): they would parse the URL again, turn
 * mqtt:// into mqtts:// behind our back when a client certificate is set, read
 * MQTTJS_SOCKS_PROXY from the environment, and give us no place for the gate.
 */
import { readFileSync } from 'node:fs';
import { connect as netConnect, isIP, type LookupFunction, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { connect as tlsConnect, checkServerIdentity, type ConnectionOptions } from 'node:tls';
import { createRequire } from 'node:module';
import type { IClientOptions, MqttClient as MqttClientType } from 'mqtt';
import type { Config, Region } from '../config/schema.js';
import { TallyboxError, errorMessage } from '../util/errors.js';
import { PacketSizeGate, type DroppedPacket } from './packet-gate.js';
import { regionServerIdentity, type BrokerSecurity } from './security.js';

// require(), not import: an ESM import of this CommonJS package runs Node's JS CJS-export
// lexer over mqtt's index and every module it re-exports, hot enough for TurboFan to compile
// the lexer (~5 MB of resident memory for the life of the process; issue 11, idle RSS).
const { MqttClient } = createRequire(import.meta.url)('mqtt') as typeof import('mqtt');
type MqttClient = MqttClientType;

/**
 * Largest incoming packet: a command payload may be 64 KiB (the intake refuses
 * more with TOO_LARGE), plus room for the topic, properties and header.
 */
export const MAX_INCOMING_PACKET_BYTES = 64 * 1024 + 4096;

export interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** Read the TLS files once, at construction: a missing file is a config error naming the key. */
export function loadTlsMaterial(tls: Config['broker']['tls']): TlsMaterial {
  if (!tls) return {};
  const read = (key: string, file: string | undefined): Buffer | undefined => {
    if (file === undefined) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new TallyboxError('CONFIG_INVALID', `broker.tls.${key}: cannot read ${file}: ${errorMessage(err)}`);
    }
  };
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new TallyboxError('CONFIG_INVALID', 'broker.tls: certFile and keyFile go together (client certificate for mTLS)');
  }
  const out: TlsMaterial = {};
  const ca = read('caFile', tls.caFile);
  const cert = read('certFile', tls.certFile);
  const key = read('keyFile', tls.keyFile);
  if (ca) out.ca = ca;
  if (cert) out.cert = cert;
  if (key) out.key = key;
  return out;
}

export interface TransportSpec {
  security: BrokerSecurity;
  region: Region;
  tls: TlsMaterial;
  maxPacketBytes: number;
  onDrop: (p: DroppedPacket) => void;
  /** Name resolution; tests map a region host name to 127.0.0.1 with it. Default: DNS. */
  lookup?: LookupFunction;
  /** Source address of the socket (config broker.localAddress). Default: the kernel's choice. */
  localAddress?: string;
}

/** Read buffer for a plaintext socket, reused for every read (see GatedStream). */
const READ_BUFFER_BYTES = 64 * 1024;

function openSocket(spec: TransportSpec, onRead: (bytes: Buffer) => boolean): Socket {
  const { host, port, transport, certificatePinned } = spec.security;
  const extra = { ...(spec.lookup ? { lookup: spec.lookup } : {}), ...(spec.localAddress ? { localAddress: spec.localAddress } : {}) };
  if (transport === 'plaintext') {
    // One buffer for every read: a flood of dropped bytes allocates nothing (each
    // 'data' chunk would be a fresh 64 KiB buffer left for the GC).
    return netConnect({ host, port, ...extra, onread: { buffer: Buffer.alloc(READ_BUFFER_BYTES), callback: (n, buf) => onRead(Buffer.from(buf.buffer, buf.byteOffset, n)) } });
  }
  const opts: ConnectionOptions = {
    host,
    port,
    ...extra,
    ...spec.tls,
    // SNI carries the configured name, so the broker presents that name's certificate.
    ...(isIP(host) === 0 ? { servername: host } : {}),
    minVersion: 'TLSv1.2',
    rejectUnauthorized: transport === 'tls',
    checkServerIdentity: certificatePinned ? regionServerIdentity(spec.region) : checkServerIdentity,
  };
  return tlsConnect(opts);
}

/**
 * The socket as mqtt.js sees it: writes go straight to the socket; reads come
 * through the gate, so an oversized packet never reaches mqtt-packet's buffer.
 */
class GatedStream extends Duplex {
  private readonly socket: Socket;

  constructor(spec: TransportSpec, gate: PacketSizeGate) {
    super();
    /** Hand bytes through the gate; false pauses the socket (backpressure). */
    const onRead = (bytes: Buffer, reused: boolean): boolean => {
      let pieces: Buffer[];
      try {
        pieces = gate.feed(bytes);
      } catch (err) {
        this.destroy(err as Error);
        return false;
      }
      let more = true;
      // A reused read buffer is overwritten by the next read: copy what passes (packets within the limit).
      for (const p of pieces) more = this.push(reused ? Buffer.from(p) : p) && more;
      return more;
    };
    const socket = openSocket(spec, (b) => onRead(b, true));
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      if (!onRead(chunk, false)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  // Writes complete as soon as the socket accepts them (its own buffer and 'drain' give the
  // backpressure): waiting for each chunk to reach the kernel would serialise mqtt.js's many
  // small writes per packet behind one another.
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.write(chunk)) cb();
    else this.socket.once('drain', () => cb());
  }

  // mqtt-packet writes each packet as four or five small chunks (header, length, topic,
  // message id, payload) and corks until the next tick: a turn's worth arrives here at
  // once. One copy into one buffer and one socket write, rather than handing the socket
  // a thousand chunks to buffer again and pass to writev (issue 10 §5).
  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    let n = 0;
    for (const c of chunks) n += c.chunk.length;
    const all = Buffer.allocUnsafe(n);
    let at = 0;
    for (const c of chunks) {
      all.set(c.chunk, at);
      at += c.chunk.length;
    }
    if (this.socket.write(all)) cb();
    else this.socket.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    // A clean DISCONNECT: flush it, then FIN; 'close' follows when the peer closes.
    this.socket.end(() => cb());
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }
}

/**
 * mqtt.js logs through `debug` several times per publish and per PUBACK; even switched
 * off, each call costs a property check and its arguments (a few % of a drain). Its log
 * stays available with DEBUG=mqttjs* as usual.
 */
const MQTT_DEBUG = /mqttjs/.test(process.env.DEBUG ?? '');
const noLog = (): void => undefined;

/** A client that has not connected yet; mqtt.js connects in its constructor (one attempt, reconnectPeriod 0). */
export function createClient(spec: TransportSpec, options: IClientOptions): MqttClient {
  const builder = (): Duplex => new GatedStream(spec, new PacketSizeGate(spec.maxPacketBytes, spec.onDrop));
  const v5 = options.protocolVersion === 5;
  return new MqttClient(builder, {
    ...options,
    reconnectPeriod: 0,
    // mqtt-packet's default pre-builds 65,536 two-byte Buffers (~6 MB of heap, for life) to
    // save one 2-byte allocation per packet: a bad trade on a small router (issue 11, idle RSS).
    writeCache: false,
    ...(MQTT_DEBUG ? {} : { log: noLog }),
    // MQTT 5: tell the broker the limit, so a conforming broker discards the packet itself.
    ...(v5 ? { properties: { ...options.properties, maximumPacketSize: spec.maxPacketBytes } } : {}),
  });
}

/** CONNACK codes of a broker that does not speak the protocol version asked for (3.1.1: 1, MQTT 5: 0x84). */
export function isUnsupportedVersion(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === 1 || code === 0x84;
}
