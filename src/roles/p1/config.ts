/**
 * The `p1:` config section: the printers this print box serves and its spool.
 *
 *   p1:
 *     printers:
 *       front: { url: "raw://10.0.0.20:9100?pjl=1" }
 *       colour: { url: "ipp://10.0.0.21:631/ipp/print" }
 *       label: { url: "usblp:/dev/usb/lp0", confirm: delivery }
 *     spoolDir: /var/lib/tallybox/spool     # default DATADIR/spool (0700, files 0600)
 *     inlineMaxBytes: 49152                 # larger documents must be fetched
 *     fetch: { maxBytes: 268435456, timeoutMs: 120000, caFile: /etc/tallybox/cloud-ca.pem }
 */
import { z } from 'zod';

const PRINTER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export const P1PrinterSchema = z
  .object({
    /** raw://host:9100[?pjl=1], ipp://host:631/path, ipps://…, usblp:/dev/usb/lpN */
    url: z.string().regex(/^(raw|ipp|ipps):\/\/[^\s]+$|^usblp:\/[^\s]+$/, 'must be raw://host:port[?pjl=1], ipp(s)://host:port/path or usblp:/dev/usb/lpN'),
    /**
     * What ends a job as `confirmed`: 'printer' (default) only the printer's own word (IPP job-state
     * completed, PJL USTATUS JOB END); without it the job is `uncertain`. 'delivery': every byte
     * written and the connection closed cleanly counts (raw without PJL, USB: nothing better exists).
     */
    confirm: z.enum(['printer', 'delivery']).default('printer'),
  })
  .strict();

export const P1ConfigSchema = z
  .object({
    printers: z.record(z.string().regex(PRINTER_NAME, 'printer names are 1-64 of A-Z a-z 0-9 _ . -'), P1PrinterSchema).refine((r) => Object.keys(r).length >= 1 && Object.keys(r).length <= 16, 'between 1 and 16 printers'),
    /** Encrypted spool files (default DATADIR/spool). */
    spoolDir: z.string().min(1).optional(),
    /** Largest inline document (bytes); the command itself must also fit the intake's limit. */
    inlineMaxBytes: z
      .number()
      .int()
      .min(0)
      .max(16 * 1024 * 1024)
      .default(48 * 1024),
    fetch: z
      .object({
        /** Largest fetched document. */
        maxBytes: z
          .number()
          .int()
          .min(1)
          .max(4 * 1024 * 1024 * 1024)
          .default(256 * 1024 * 1024),
        /** Whole fetch (monotonic). */
        timeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
        /** Extra CA (PEM) to trust for document URLs (a private cloud CA); system CAs otherwise. */
        caFile: z.string().min(1).optional(),
      })
      .strict()
      .default({ maxBytes: 256 * 1024 * 1024, timeoutMs: 120_000 }),
    /** Encryption chunk (plaintext bytes per AES-GCM chunk). */
    chunkBytes: z
      .number()
      .int()
      .min(1024)
      .max(4 * 1024 * 1024)
      .default(64 * 1024),
    /** Printer retry backoff (offline, busy, out of paper). */
    retry: z
      .object({ minMs: z.number().int().min(10).max(60_000).default(1000), maxMs: z.number().int().min(10).max(3_600_000).default(60_000) })
      .strict()
      .default({ minMs: 1000, maxMs: 60_000 }),
    /** Printer heartbeat (probe after this much silence). */
    heartbeatMs: z.number().int().min(100).max(600_000).default(10_000),
  })
  .strict();

export type P1Config = z.infer<typeof P1ConfigSchema>;
export type P1PrinterConfig = z.infer<typeof P1PrinterSchema>;
