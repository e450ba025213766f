/**
 * Config fragment of the M1 role (fingerprint module on a UART). The config
 * owner mounts it at `m1:` in src/config/schema.ts, e.g.
 *
 *   m1: M1ConfigSchema.default(M1ConfigSchema.parse({}))
 *
 * Every object is strict, like the rest of the config: a misspelt key is an
 * error naming it.
 */
import { z } from 'zod';

/** Baud rates an R30x module can be set to (9600 × N, N = 1..12). */
export const R30X_BAUD_RATES = [9600, 19200, 28800, 38400, 48000, 57600, 67200, 76800, 86400, 96000, 105600, 115200] as const;

const ScoreBucketsSchema = z
  .object({
    /** Search scores at or above this are MEDIUM (below: LOW). */
    medium: z.number().int().min(0).max(65_535).default(100),
    /** Search scores at or above this are HIGH. */
    high: z.number().int().min(0).max(65_535).default(150),
  })
  .strict()
  .refine((b) => b.high >= b.medium, { message: 'high must be >= medium', path: ['high'] });

const BackoffSchema = z
  .object({
    /** First retry delay after the module stops answering. */
    minMs: z.number().int().min(10).max(60_000).default(250),
    /** Retry delays double up to this. */
    maxMs: z.number().int().min(100).max(3_600_000).default(30_000),
  })
  .strict();

export const M1ConfigSchema = z
  .object({
    /** Serial device of the fingerprint module (a pty symlink in the simulator). */
    port: z.string().min(1).default('/dev/ttyS1'),
    baudRate: z
      .number()
      .int()
      .refine((n) => (R30X_BAUD_RATES as readonly number[]).includes(n), { message: `must be one of ${R30X_BAUD_RATES.join(', ')}` })
      .default(57600),
    /** Module address (default FFFFFFFF). */
    address: z.number().int().min(0).max(0xffff_ffff).default(0xffff_ffff),
    /** Module password for VfyPwd (0: none set). */
    password: z.number().int().min(0).max(0xffff_ffff).default(0),
    /** Per-reply timeout of the driver. */
    timeoutMs: z.number().int().min(50).max(60_000).default(1500),
    /** The same person identified again within this many seconds is the same punch (0: off). */
    repeatWindowSec: z.number().min(0).max(86_400).default(60),
    /** GenImg polling interval while no finger is on the sensor. */
    pollMs: z.number().int().min(10).max(5000).default(150),
    /** Captures per enrolment: 2 (RegModel) or 3 (RegModel, then a verifying Match). */
    enrolCaptures: z.number().int().min(2).max(3).default(2),
    /** How long an enrolment waits for each finger placement / lift. */
    enrolTimeoutMs: z.number().int().min(1000).max(600_000).default(20_000),
    scoreBuckets: ScoreBucketsSchema.default({ medium: 100, high: 150 }),
    backoff: BackoffSchema.default({ minMs: 250, maxMs: 30_000 }),
  })
  .strict();

export type M1Config = z.infer<typeof M1ConfigSchema>;
export type M1ConfigInput = z.input<typeof M1ConfigSchema>;
