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

/** IPP printer states (RFC 8011 §5.4.11): idle 3, processing 4, stopped 5. */
export type PrinterState = 'idle' | 'processing' | 'stopped';

/** What a printer says about itself. `reasons` are IPP printer-state-reasons keywords ('none', 'media-empty', 'offline-report', …). */
export interface PrinterStatus {
  state: PrinterState;
  reasons: string[];
}

/** Document formats a P1 job may carry (MIME media types, as IPP names them). */
export type PrintFormat = 'application/pdf' | 'image/pwg-raster' | 'application/octet-stream';

/** One job handed to a printer. Never carries a user name or a file name: `jobName` is the cloud's job id. */
export interface PrintSubmission {
  jobName: string;
  format: PrintFormat;
  copies: number;
  /** The document, streamed: a transport never holds the whole document in memory. */
  document: AsyncIterable<Uint8Array>;
  /** Aborting cancels the job while it is being sent (the transport stops, and cancels at the printer where the protocol allows). */
  signal?: AbortSignal;
  /**
   * Called once, as soon as the printer has taken responsibility for the job (IPP: a job-id came back;
   * PJL: USTATUS JOB START; raw/USB: the first byte was written). Before that moment a crash means the
   * job can be re-sent safely; after it, never automatically. `ref` identifies the job at the printer
   * (IPP job-id, PJL job name) when there is one.
   */
  onAccepted?(ref: string | undefined): void;
  /** Bytes of the document written so far (progress for DeviceState; not a delivery guarantee). */
  onProgress?(bytesWritten: number): void;
}

/** The printer's own view of a job, where the protocol can tell (IPP job-state, PJL USTATUS JOB END). */
export type PrinterJobState = 'pending' | 'processing' | 'completed' | 'canceled' | 'aborted' | 'unknown';

export interface PrintSendResult {
  /** IPP job-id / PJL job name; undefined on transports that have none (raw without PJL, USB). */
  ref: string | undefined;
  bytesSent: number;
  /**
   * The printer's state of the job when send() returned: 'completed' only when the printer said so
   * (PJL END, IPP completed); 'unknown' when the transport cannot tell (raw 9100 without PJL, USB).
   */
  jobState: PrinterJobState;
  pages?: number;
}

/**
 * A printer as a P1 print box sees it (raw TCP 9100 with optional PJL, IPP/IPPS, USB printer class).
 * Every method rejects with an error carrying a machine-readable `code`: PRINTER_UNREACHABLE (connection
 * refused / timed out: offline or busy), PRINTER_STOPPED (reachable, not accepting: media-empty, …),
 * PRINTER_CLOSED (the printer closed the connection mid-job), PRINTER_REJECTED (IPP status error),
 * PRINTER_CANCELLED (the signal aborted), PRINTER_PROTOCOL (a reply that cannot be parsed).
 */
export interface Printer {
  readonly description: string;
  /** 'ipp' | 'raw9100' | 'usblp': which confirmation the transport can give. */
  readonly protocol: 'ipp' | 'raw9100' | 'usblp';
  /** Printer state and reasons; rejects when unreachable. */
  probe(): Promise<PrinterStatus>;
  /** Stream one job to the printer. Resolves when every byte is out (and, where the protocol allows, the printer finished or queued it). */
  send(job: PrintSubmission): Promise<PrintSendResult>;
  /** Ask the printer for a job's state by ref (IPP Get-Job-Attributes; PJL keeps the last END it saw). Undefined when the transport cannot. */
  jobState?(ref: string): Promise<PrinterJobState>;
  /** Cancel a job at the printer by ref (IPP Cancel-Job). Undefined when the transport cannot. */
  cancel?(ref: string): Promise<void>;
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
