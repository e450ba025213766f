/**
 * What can be done to a running lab: each action is one JSON object, the
 * same over the HTTP API, in the record file and on replay.
 */
import { z } from 'zod';

const Name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'must be a lab name (1-64 of A-Z a-z 0-9 _ . -)');

export const LabActionSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('present'), device: Name, person: Name, method: z.enum(['finger', 'face', 'card', 'phone']) }).strict(),
  z.object({ type: z.literal('uplink'), device: Name, mode: z.enum(['ok', 'cut', 'blackhole']) }).strict(),
  z.object({ type: z.literal('peripheral'), device: Name, peripheral: z.string().min(1).max(32), plugged: z.boolean() }).strict(),
  z.object({ type: z.literal('disk'), device: Name, full: z.boolean() }).strict(),
  z
    .object({
      type: z.literal('clock'),
      device: Name,
      offsetMs: z
        .number()
        .int()
        .min(-10 * 365 * 86_400_000)
        .max(10 * 365 * 86_400_000),
    })
    .strict(),
  z.object({ type: z.literal('agent'), device: Name, op: z.enum(['kill', 'restart']) }).strict(),
  z.object({ type: z.literal('enrol'), person: Name, device: Name.optional() }).strict(),
  z.object({ type: z.literal('erase'), person: Name }).strict(),
  z.object({ type: z.literal('withdraw'), org: Name }).strict(),
  // P1: a signed PrintJob (a generated printer-ready document of `pages` pages, inline or fetched over HTTPS).
  z.object({ type: z.literal('print'), device: Name, source: z.enum(['inline', 'fetch']).default('inline'), pages: z.number().int().min(1).max(500).default(2) }).strict(),
  // P1: a printer fault (paper-out on: the paper runs out `afterBytes` into the next job; off: paper loaded).
  z
    .object({
      type: z.literal('printer'),
      device: Name,
      fault: z.enum(['offline', 'paper-out', 'busy', 'never-confirm', 'clear']),
      on: z.boolean().default(true),
      afterBytes: z
        .number()
        .int()
        .min(1)
        .max(2 ** 40)
        .optional(),
    })
    .strict(),
]);

export type LabAction = z.infer<typeof LabActionSchema>;

/** One recorded action: when (wall clock, for people; `t` monotonic ms since the lab started, for replay) and what. */
export interface RecordedAction {
  type: 'action';
  seq: number;
  t: number;
  at: string;
  action: LabAction;
}

export interface RecordHeader {
  type: 'header';
  format: 'tallybox-lab-record';
  version: 1;
  seed: number;
  /** sha256 of the lab file's text: a replay against another site is refused. */
  configSha256: string;
  startedAt: string;
}
