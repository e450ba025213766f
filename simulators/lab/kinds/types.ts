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
import type { CommandBodyProps, CredentialProps } from '../../../src/proto/index.js';
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
  /** A print box's printer (p1 only): print jobs and printer faults go here. */
  printer?: LabPrinter;
  /** Unplug (false) or replug (true) a peripheral by name. */
  setPlugged(peripheral: string, plugged: boolean): Promise<void>;
  close(): Promise<void>;
}

export type LabPrinterFault = 'offline' | 'paper-out' | 'busy' | 'never-confirm' | 'clear';

/** The simulated printer's side (faults as switched by the lab), never the agent's word. */
export interface LabPrinterView {
  name: string;
  state: 'idle' | 'processing' | 'stopped';
  reasons: string[];
  faults: { offline: boolean; busy: boolean; paperOut: boolean; neverConfirm: boolean };
  /** Jobs the simulator recorded (every attempt). */
  recorded: number;
  /** Results from this device whose signature did not verify. */
  resultsRejected: number;
}

/** One job the lab sent: what the device reported next to what the evidence shows. */
export interface LabPrintJobView {
  jobId: string;
  source: 'inline' | 'fetched';
  pages: number;
  bytes: number;
  /** The PrintJob command's counter (its statuses come back under it). */
  counter: number;
  /** The device's newest verified status ('none' until one verifies). */
  state: string;
  errorCode: string;
  recordings: number;
  /** Recordings complete and byte-identical (SHA-256) to what was sent. */
  exactCopies: number;
  /**
   * printed: exactly one exact copy recorded (whatever the device says); otherwise, once the device
   * settled the job: uncertain (it reported it could not confirm: a cloud decision is needed) or failed;
   * pending before that.
   */
  outcome: 'printed' | 'failed' | 'uncertain' | 'pending';
  receipt: 'verified' | 'missing' | 'invalid';
  contradicted: boolean;
}

export interface LabPrinter {
  name: string;
  /** The device's public key (from provisioning): results and receipts are verified with it. */
  trust(publicKeyPem: string): void;
  /** Throws LAB_BAD_REQUEST for a job this print box cannot take (an inline document over its inline limit). */
  validate(req: { source: 'inline' | 'fetch'; pages: number }): void;
  /** Make a job's document (served over HTTPS for 'fetch'); `record(counter)` once the signed command is out. */
  prepare(jobId: string, req: { source: 'inline' | 'fetch'; pages: number }): { body: CommandBodyProps; record(counter: number): void };
  /** A result the cloud received from this device, the bytes as published. */
  onResult(raw: Buffer): void;
  jobs(): Promise<LabPrintJobView[]>;
  job(jobId: string): Promise<LabPrintJobView | undefined>;
  view(): LabPrinterView;
  /** Switch a fault; 'paper-out' on runs out after `afterBytes` of the next job (off loads paper: a stopped job goes on). */
  setFault(fault: LabPrinterFault, on: boolean, afterBytes?: number): void;
  /** Called with a job id when its status or its recording changed. */
  onChange(fn: (jobId: string) => void): () => void;
}

export interface LabDeviceKind {
  kind: string;
  description: string;
  /** Validates `devices[i].peripherals` (strict: an unknown key is an error naming it). */
  peripheralsSchema: z.ZodType<Record<string, unknown>>;
  start(ctx: KindStartContext): Promise<KindHardware>;
}
