/**
 * The lab's device kinds. A kind plugs in here: one entry, one file.
 */
import { c1Kind } from './c1.js';
import { m1Kind } from './m1.js';
import { m2Kind } from './m2.js';
import { p1Kind } from './p1.js';
import type { LabDeviceKind } from './types.js';

export const LAB_KINDS: Readonly<Record<string, LabDeviceKind>> = {
  m1: m1Kind,
  m2: m2Kind,
  c1: c1Kind,
  p1: p1Kind,
};

/** Kinds the agent knows of that the lab cannot simulate yet, with what is missing. */
export const NOT_BUILT_LAB_KINDS: Readonly<Record<string, string>> = {};

export type { LabDeviceKind, KindHardware, LabPerson, LabMethod } from './types.js';
