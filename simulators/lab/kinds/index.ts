/**
 * The lab's device kinds. A kind plugs in here: one entry, one file.
 * p1 (the print box) joins with the printer simulator; until then a lab
 * file naming it is refused with a message saying so, and the print-job
 * route answers 501 PRINT_NOT_AVAILABLE.
 */
import { c1Kind } from './c1.js';
import { m1Kind } from './m1.js';
import { m2Kind } from './m2.js';
import type { LabDeviceKind } from './types.js';

export const LAB_KINDS: Readonly<Record<string, LabDeviceKind>> = {
  m1: m1Kind,
  m2: m2Kind,
  c1: c1Kind,
};

/** Kinds the agent knows of that the lab cannot simulate yet, with what is missing. */
export const NOT_BUILT_LAB_KINDS: Readonly<Record<string, string>> = {
  p1: 'the print box (p1) plugs in with the printer simulator; kinds available now: m1, m2, c1',
};

export type { LabDeviceKind, KindHardware, LabPerson, LabMethod } from './types.js';
