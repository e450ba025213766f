/**
 * What the M2 role needs from the agent and the vault, and its shared types.
 */
import type { PunchMethod, ScoreBucket } from '../../proto/index.js';
import { TallyboxError } from '../../util/errors.js';
import type { Vault } from '../../vault/vault.js';

/** What the role needs from the agent (Agent satisfies it). */
export interface M2PunchSink {
  /** Resolves once the punch is durably queued. */
  punch(input: { orgId: string; subjectId: string; method: PunchMethod; matchScore?: ScoreBucket; liveness?: ScoreBucket }): Promise<{ eventId: string } | void>;
  setPeripheral(name: string, online: boolean, detail?: string): void;
}

/** What the role needs from the vault (Vault satisfies it). */
export type M2Vault = Pick<Vault, 'orgs' | 'faceTransformKey' | 'forEachTemplate' | 'enrolTemplate' | 'listTemplates' | 'touchSubject' | 'getSubject' | 'identifyCredential'>;

export type TamperResponse = 'alarm' | 'zeroise';

export class M2Error extends TallyboxError {}

/** How a face or card was handled ('punch': at least one punch accepted). */
export type M2Outcome = 'punch' | 'repeat' | 'no-match' | 'spoof' | 'unknown-card' | 'refused' | 'locked' | 'ignored';

export interface M2PunchEvent {
  orgId: string;
  subjectId: string;
  method: PunchMethod;
  matchScore: ScoreBucket;
  liveness: ScoreBucket;
  /** Cosine score (face only). */
  score?: number;
  eventId?: string;
}

export interface M2EnrolResult {
  orgId: string;
  subjectId: string;
  recordId: string;
  consistency: number;
}

export interface M2Stats {
  facePunches: number;
  cardPunches: number;
  repeats: number;
  noMatch: number;
  spoofs: number;
  cardUnknown: number;
  cardInvalid: number;
  droppedCaptures: number;
  refusedLocked: number;
  punchRefused: number;
  enrolments: number;
  enrolFailures: number;
  tamperEvents: number;
  linkErrors: number;
}

export const SCORE_LABEL: Record<number, string> = { 1: 'LOW', 2: 'MEDIUM', 3: 'HIGH' };
