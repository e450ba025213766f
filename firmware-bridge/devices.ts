/**
 * Small device interfaces: what a fingerprint module, a face module, a card
 * reader, a presence source or a printer can do, as the roles see it. A role
 * is written against these, never against a concrete driver, so it is tested
 * against a simulator or a memory transport and a new device kind (another
 * sensor family, a C1 presence source, a P1 printer) is a short file that
 * implements one of them.
 *
 * The drivers in this folder satisfy them structurally: R30xDriver is a
 * FingerprintModule, BridgeDriver a FaceModule, HidCardReader a CardReader.
 * Every method rejects with an error carrying a machine-readable `code`.
 */
import type { FrameReject } from './r30x/codec.js';
import type { SearchResult, SysPara } from './r30x/messages.js';
import type { BridgeLinkStatus, FaceCapture, ModuleInfo } from './bridge/driver.js';
import type { tallybox } from '../src/gen/tallybox.js';

/** The data the interfaces carry, for roles that import nothing else from a driver. */
export type { FaceCapture, ModuleInfo, BridgeLinkStatus, FrameReject, SearchResult, SysPara };

/** Typed subscription only (a role listens; it never emits on a device's behalf); one overload per event. */

/** An optical/capacitive fingerprint module with an on-board library (R30x, AS608, ZFM, …). */
export interface FingerprintModule {
  on(event: 'error-frame', listener: (reject: FrameReject) => void): unknown;
  off(event: 'error-frame', listener: (reject: FrameReject) => void): unknown;
  /** Per-reply timeout: after a timeout, a late reply could pass for the next one's. */
  readonly timeoutMs: number;
  open(): Promise<void>;
  close(): Promise<void>;
  vfyPwd(password?: number): Promise<void>;
  readSysPara(): Promise<SysPara>;
  /** Capture an image; rejects NO_FINGER when nothing is on the sensor. */
  genImg(): Promise<void>;
  img2Tz(bufferId: 1 | 2): Promise<void>;
  regModel(): Promise<void>;
  match(): Promise<number>;
  store(bufferId: 1 | 2, page: number): Promise<void>;
  upChar(bufferId: 1 | 2): Promise<Buffer>;
  downChar(bufferId: 1 | 2, data: Uint8Array): Promise<void>;
  deletChar(page: number, count?: number): Promise<void>;
  readIndexTable(indexPage: number): Promise<number[]>;
  /** Rejects NOT_FOUND when no page matches. */
  highSpeedSearch(bufferId: 1 | 2, startPage: number, pageCount: number): Promise<SearchResult>;
}

/** A face module (camera + feature extractor + liveness) or a bridge MCU in front of one. */
export interface FaceModule {
  on(event: 'face', listener: (capture: FaceCapture) => void): unknown;
  on(event: 'tamper', listener: (event: { open: boolean }) => void): unknown;
  on(event: 'status', listener: (status: BridgeLinkStatus, reason?: Error) => void): unknown;
  off(event: 'face', listener: (capture: FaceCapture) => void): unknown;
  off(event: 'tamper', listener: (event: { open: boolean }) => void): unknown;
  off(event: 'status', listener: (status: BridgeLinkStatus, reason?: Error) => void): unknown;
  readonly status: BridgeLinkStatus;
  readonly info: ModuleInfo | null;
  /** Open the link and handshake; resolves with what the module said about itself. */
  start(): Promise<ModuleInfo>;
  close(): Promise<void>;
  /** Heartbeat round trip. */
  ping(): Promise<{ uptimeMs: number; rttMs: number }>;
  /** Enrolment captures (the person looks at the camera `captures` times). */
  enrol(opts: { captures: number; timeoutMs: number }): Promise<FaceCapture[]>;
  displayText(msg: { line1?: string; line2?: string; durationMs?: number }): Promise<void>;
  indicator(msg: { led?: tallybox.v1.BridgeLedColour; ledMs?: number; beeps?: number; beepMs?: number }): Promise<void>;
}

/** A card reader: card numbers out (personal data: never log them), presence checkable. */
export interface CardReader {
  /** For logs and DeviceState, e.g. "hid:ffff:0035" (no card data). */
  readonly description: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Resolves when the reader is still there (in the device list, its node present); rejects with a code. */
  probe(): Promise<void>;
  /** Unsolicited loss (unplugged, read error); returns the unsubscribe. */
  onLost(fn: (reason: Error) => void): () => void;
}

/** A Wi-Fi presence source (hostapd control socket, dnsmasq leases, …): stations joining and leaving. Personal data: MACs. */
export interface PresenceSource {
  on(event: 'join' | 'leave', listener: (station: { mac: string; iface: string }) => void): unknown;
  off(event: 'join' | 'leave', listener: (station: { mac: string; iface: string }) => void): unknown;
  readonly description: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Resolves when the source still answers (a PING on the control socket, the lease file readable). */
  probe(): Promise<void>;
}

/** A printer as a P1 print box sees it: state, and a job streamed to it. */
export interface Printer {
  readonly description: string;
  /** Printer state reasons ('none', 'media-empty', 'offline', …); rejects when unreachable. */
  probe(): Promise<{ state: 'idle' | 'processing' | 'stopped'; reasons: string[] }>;
}

/**
 * Every device error carries a machine-readable `code`: a FingerprintModule's
 * are the module's confirmation names (NO_FINGER, NOT_FOUND, IMAGE_MESSY, …,
 * with the numeric `confirmation`) or link codes (TIMEOUT, PROTOCOL_ERROR,
 * NOT_OPEN, DISCONNECTED, WRITE_FAILED, CLOSED); a FaceModule's BRIDGE_*;
 * a CardReader's HID_*. Roles branch on these, never on a driver's class.
 */
export function isDeviceError(err: unknown, code?: string): err is Error & { code: string; confirmation?: number } {
  const c = (err as { code?: unknown } | null)?.code;
  return err instanceof Error && typeof c === 'string' && (code === undefined || c === code);
}
