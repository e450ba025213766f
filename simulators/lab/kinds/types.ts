/**
 * The contract of a device kind in the lab: what a kind plugs in to make a
 * device of its kind — its simulated peripherals (started in the lab's
 * process, reached by the agent over real transports: pseudo-terminals, Unix
 * sockets, control sockets and files), the agent config sections pointing at
 * them, and how a simulated person uses them (present, enrol). A new kind (P1
 * with the printer simulator) is one file implementing this and one line in
 * kinds/index.ts.
 */
import type { z } from 'zod';
import type { CredentialProps } from '../../../src/proto/index.js';
import type { LabDeviceConfig } from '../config.js';

/** What a person can do at a device. */
export type LabMethod = 'finger' | 'face' | 'card' | 'phone';
export const LAB_METHODS: readonly LabMethod[] = ['finger', 'face', 'card', 'phone'];
export type LabModality = 'fingerprint' | 'face';

/** A simulated person as the kinds see them (traits resolved, the opaque subject id derived from the seed). */
export interface LabPerson {
  id: string;
  org: string;
  subjectId: string;
  name: string;
  minor: boolean;
  consent: { fingerprint: boolean; face: boolean; guardian: boolean };
  finger: number | undefined;
  face: boolean;
  /** The face simulator's population index of this person (seeded, stable). */
  facePerson: number;
  card: string | undefined;
  phone: { randomised: boolean } | undefined;
}

export interface PeripheralView {
  name: string;
  /** The lab's side: is the simulated part plugged in (not a fault injected)? */
  plugged: boolean;
  detail?: string;
}

/** How a presentation went at the hardware, before the agent's verdict (which the lab reads from the agent's queue). */
export type PresentOutcome = 'sent' | 'no-match';

/** How an enrolment the lab played ended, from the agent's own log line. */
export interface EnrolOutcome {
  ok: boolean;
  code?: string;
}

export interface KindStartContext {
  device: LabDeviceConfig;
  /** The device's directory (lab-owned; the agent's data directory is below it). */
  dir: string;
  seed: number;
}

export interface KindHardware {
  /** Config sections of `tallybox run` for this kind (m1:, m2:, c1:). */
  agentConfig: Record<string, unknown>;
  /** Methods a person can use here. */
  methods: readonly LabMethod[];
  peripherals(): PeripheralView[];
  /** The person uses `method`; throws LAB_METHOD_UNAVAILABLE when the device has no such peripheral. */
  present(person: LabPerson, method: LabMethod): Promise<PresentOutcome>;
  /** Credentials sent with SubjectUpsert (card, phone MAC): personal data, kept as HMACs on the device. */
  credentials(person: LabPerson): CredentialProps[];
  /** Biometric modalities to invite on this device for this person. */
  modalities(person: LabPerson): LabModality[];
  /** Play the person at the terminal during an enrolment the agent runs, until `done` settles. */
  enrol(person: LabPerson, modality: LabModality, done: Promise<EnrolOutcome>): Promise<void>;
  /** Unplug (false) or replug (true) a peripheral by name. */
  setPlugged(peripheral: string, plugged: boolean): Promise<void>;
  close(): Promise<void>;
}

export interface LabDeviceKind {
  kind: string;
  description: string;
  /** Validates `devices[i].peripherals` (strict: an unknown key is an error naming it). */
  peripheralsSchema: z.ZodType<Record<string, unknown>>;
  start(ctx: KindStartContext): Promise<KindHardware>;
}
