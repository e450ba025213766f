/**
 * Config fragment of the M2 role (face module or bridge MCU on a UART, an
 * optional keyboard-wedge USB card reader). The config owner mounts it at
 * `m2:` in src/config/schema.ts, e.g.
 *
 *   m2: M2ConfigSchema.default(M2ConfigSchema.parse({}))
 *
 * Every object is strict, like the rest of the config: a misspelt key is an
 * error naming it.
 */
import { z } from 'zod';

/** UART rates a bridge MCU / face module commonly supports (921600 recommended: a 512-float frame is ~2 KB). */
export const BRIDGE_BAUD_RATES = [57600, 115200, 230400, 460800, 921600, 1_000_000, 1_500_000, 2_000_000] as const;

const unit = z.number().min(-1).max(1);
const zeroOne = z.number().min(0).max(1);

const BridgeSchema = z
  .object({
    /** Serial device of the face module (a pty symlink in the simulator). */
    port: z.string().min(1).default('/dev/ttyS2'),
    baudRate: z
      .number()
      .int()
      .refine((n) => (BRIDGE_BAUD_RATES as readonly number[]).includes(n), { message: `must be one of ${BRIDGE_BAUD_RATES.join(', ')}` })
      .default(921600),
    /** Per-request reply timeout of the driver. */
    timeoutMs: z.number().int().min(50).max(60_000).default(1000),
  })
  .strict();

const CardReaderSchema = z
  .object({
    /** USB vendor id (lsusb: the part before the colon), e.g. 0xffff. Required unless `device` is given. */
    vendorId: z.number().int().min(0).max(0xffff).optional(),
    productId: z.number().int().min(0).max(0xffff).optional(),
    /**
     * A Unix socket serving HID reports (length byte + report), instead of
     * node-hid: a reader in another process (`tallybox-sim card --serve PATH`,
     * or a hidraw-forwarding helper).
     */
    device: z.string().min(1).optional(),
    /** One hidraw path when the reader exposes several interfaces. */
    path: z.string().min(1).optional(),
    /** 'auto': strip the report id of 9-byte reports; a number: that report id. */
    reportId: z.union([z.literal('auto'), z.literal('none'), z.number().int().min(0).max(255)]).default('auto'),
    /** A card number is discarded when its keys are further apart than this. */
    interKeyTimeoutMs: z.number().int().min(10).max(5000).default(1000),
  })
  .strict()
  .refine((c) => c.device !== undefined || (c.vendorId !== undefined && c.productId !== undefined), { message: 'give vendorId and productId (a USB reader) or device (a report socket)', path: ['vendorId'] })
  .refine((c) => c.device === undefined || (c.vendorId === undefined && c.productId === undefined && c.path === undefined), { message: 'device (a report socket) excludes vendorId, productId and path', path: ['device'] });

const BucketsSchema = (medium: number, high: number) =>
  z
    .object({ medium: zeroOne.default(medium), high: zeroOne.default(high) })
    .strict()
    .refine((b) => b.high >= b.medium, { message: 'high must be >= medium', path: ['high'] })
    .default({ medium, high });

const FaceSchema = z
  .object({
    /** Feature dimension of the module's model (checked against its hello). */
    dim: z.number().int().min(2).max(4096).default(512),
    /** Cosine decision threshold (model specific; 0.40 suits the simulator's 512-dim model). */
    threshold: unit.default(0.4),
    /** Liveness (presentation-attack) threshold, module score 0..1. */
    livenessThreshold: zeroOne.default(0.5),
    /** A new enrolment this close to another subject's template is refused. */
    duplicateThreshold: unit.default(0.55),
    /** Captures per enrolment, averaged. */
    enrolCaptures: z.number().int().min(1).max(10).default(3),
    /** How long an enrolment waits for all its captures. */
    enrolTimeoutMs: z.number().int().min(1000).max(600_000).default(20_000),
    /** Cosine score → ScoreBucket (at/above medium: MEDIUM, at/above high: HIGH, else LOW; genuine probes of the simulator score ~0.45-0.75). */
    scoreBuckets: BucketsSchema(0.5, 0.65),
    /** Liveness score → ScoreBucket, same rule. */
    livenessBuckets: BucketsSchema(0.75, 0.9),
  })
  .strict();

const DisplaySchema = z
  .object({
    /** Show the person's first name on the terminal's own display after a punch (local only; never logged or sent). */
    showFirstName: z.boolean().default(false),
    /** How long feedback stays on the display. */
    feedbackMs: z.number().int().min(0).max(60_000).default(3000),
  })
  .strict();

export const M2ConfigSchema = z
  .object({
    bridge: BridgeSchema.default(BridgeSchema.parse({})),
    /** Omit (or null) when the terminal has no card reader: node-hid is then never loaded. */
    cardReader: CardReaderSchema.nullable().default(null),
    face: FaceSchema.default(FaceSchema.parse({})),
    display: DisplaySchema.default(DisplaySchema.parse({})),
    /** The same person identified again (face or card) within this many seconds is the same punch (0: off). */
    repeatWindowSec: z.number().min(0).max(86_400).default(60),
    /**
     * Case opened: 'alarm' reports it (peripheral 'tamper' offline) and goes on;
     * 'zeroise' also wipes the in-memory face index and transforms and refuses
     * every punch until the agent restarts.
     */
    tamperResponse: z.enum(['alarm', 'zeroise']).default('alarm'),
    /** Reconnect backoff of the face module and card reader (full jitter, doubling from minMs to maxMs). */
    backoff: z
      .object({ minMs: z.number().int().min(10).max(60_000).default(250), maxMs: z.number().int().min(100).max(3_600_000).default(30_000) })
      .strict()
      .default({ minMs: 250, maxMs: 30_000 }),
    /** Probe the face module and card reader after this much silence (BridgeHeartbeat; reader presence). 0: off. */
    heartbeatMs: z.number().int().min(0).max(600_000).default(5000),
    /** Start a face enrolment when a subject with consent and no face template is upserted. */
    enrolOnUpsert: z.boolean().default(true),
  })
  .strict();

export type M2Config = z.infer<typeof M2ConfigSchema>;
export type M2ConfigInput = z.input<typeof M2ConfigSchema>;
