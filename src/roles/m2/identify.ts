/**
 * M2 identification: a face capture or a card read → who → the punch gate.
 *
 *   face  liveness → exact 1:N search in every org's index → one gate
 *         submission per matching org (score and liveness buckets)
 *   card  Vault.identifyCredential('card') (keyed HMAC per org) → one per holder
 *
 * A person enrolled in two orgs on one shared terminal punches for both (as a
 * card held in two orgs does). Faces and cards are handled one at a time, in
 * arrival order; captures queued beyond a bound are dropped (a crowd in front
 * of the camera must not grow memory). Logs carry org ids and codes only.
 */
import type { FaceCapture } from '../../../firmware-bridge/devices.js';
import { PunchMethod, ScoreBucket } from '../../proto/index.js';
import { isTallyboxError } from '../../util/errors.js';
import type { Logger } from '../../util/log.js';
import type { PunchGate } from '../kit/punch-gate.js';
import { SerialQueue } from '../kit/serial-queue.js';
import { errorCode } from '../kit/supervisor.js';
import type { FaceIndex } from './face-index.js';
import type { M2Feedback } from './feedback.js';
import type { M2Outcome, M2PunchEvent, M2Stats, M2Vault } from './types.js';

export interface IdentifyEvents {
  punch: [event: M2PunchEvent];
  repeat: [event: { orgId: string; subjectId: string; method: PunchMethod }];
  'no-match': [event: { score: number }];
  spoof: [event: { liveness: number }];
  'card-unknown': [];
  'punch-refused': [code: string];
  refused: [reason: 'locked'];
  outcome: [event: { source: 'face' | 'card'; outcome: M2Outcome }];
}

export interface IdentifyOptions {
  index: FaceIndex;
  vault: Pick<M2Vault, 'identifyCredential'>;
  gate: PunchGate;
  feedback: M2Feedback;
  log: Logger;
  stats: M2Stats;
  livenessThreshold: number;
  scoreBuckets: { medium: number; high: number };
  livenessBuckets: { medium: number; high: number };
  maxQueued: number;
  locked(): boolean;
  emit<K extends keyof IdentifyEvents>(event: K, ...args: IdentifyEvents[K]): void;
}

type Result = { orgId: string; subjectId: string; r: 'punch' | 'repeat' | 'refused' };

export function bucketOf(score: number, b: { medium: number; high: number }): ScoreBucket {
  if (score >= b.high) return ScoreBucket.SCORE_BUCKET_HIGH;
  if (score >= b.medium) return ScoreBucket.SCORE_BUCKET_MEDIUM;
  return ScoreBucket.SCORE_BUCKET_LOW;
}

export class M2Identification {
  readonly #o: IdentifyOptions;
  readonly #queue = new SerialQueue();
  #queued = 0;

  constructor(opts: IdentifyOptions) {
    this.#o = opts;
  }

  /** A face capture from the module (droppable when the queue is full). */
  face(c: FaceCapture): void {
    this.#enqueue('face', () => this.#handleFace(c), true);
  }

  /** A card read (never dropped). Resolves once handled. Not logged. */
  card(card: string): Promise<void> {
    return this.#enqueue('card', () => this.#handleCard(card), false);
  }

  /** Resolves once everything queued so far is handled. */
  drained(): Promise<unknown> {
    return this.#queue.idle();
  }

  #enqueue(source: 'face' | 'card', fn: () => Promise<M2Outcome>, droppable: boolean): Promise<void> {
    if (droppable && this.#queued >= this.#o.maxQueued) {
      this.#o.stats.droppedCaptures++;
      return Promise.resolve();
    }
    this.#queued++;
    return this.#queue.run(async () => {
      let outcome: M2Outcome = 'refused';
      try {
        outcome = await fn();
      } catch (err) {
        const code = errorCode(err);
        this.#o.log.error({ event: 'm2_handler_failed', code }, `M2 role: ${code}`);
      } finally {
        this.#queued--;
        this.#o.emit('outcome', { source, outcome });
      }
    });
  }

  async #handleFace(c: FaceCapture): Promise<M2Outcome> {
    const o = this.#o;
    try {
      if (o.locked()) return this.#refuseLocked();
      if (c.purpose === 2 /* ENROL: belongs to an enrolment in progress */) return 'ignored';
      if (!(c.liveness >= o.livenessThreshold)) {
        o.stats.spoofs++;
        o.log.info({ event: 'm2_spoof' }, 'face presentation failed the liveness check; no punch');
        o.emit('spoof', { liveness: c.liveness });
        o.feedback.show(false, 'Not accepted', 'Please try again');
        return 'spoof';
      }
      const { matches, best } = o.index.identify({ vector: c.vector, liveness: c.liveness });
      if (matches.length === 0) {
        o.stats.noMatch++;
        o.emit('no-match', { score: best });
        o.feedback.show(false, 'Not recognised', 'Please try again');
        return 'no-match';
      }
      const liveness = bucketOf(c.liveness, o.livenessBuckets);
      const results: Result[] = [];
      for (const m of matches) results.push({ ...m, r: await this.#punch(m.orgId, m.subjectId, PunchMethod.PUNCH_METHOD_FACE, bucketOf(m.score, o.scoreBuckets), liveness, m.score) });
      return await this.#conclude(results);
    } finally {
      c.vector.fill(0);
    }
  }

  async #handleCard(card: string): Promise<M2Outcome> {
    const o = this.#o;
    if (o.locked()) return this.#refuseLocked();
    let holders: Array<{ orgId: string; subjectId: string }>;
    try {
      holders = await o.vault.identifyCredential('card', card);
    } catch (err) {
      if (!isTallyboxError(err, 'INVALID_CREDENTIAL')) throw err;
      o.stats.cardInvalid++;
      o.log.info({ event: 'm2_card_invalid', length: card.length }, 'card read is not a card number');
      o.emit('card-unknown');
      o.feedback.show(false, 'Unknown card');
      return 'unknown-card';
    }
    if (holders.length === 0) {
      o.stats.cardUnknown++;
      o.log.info({ event: 'm2_card_unknown' }, 'card not enrolled in any organisation on this device');
      o.emit('card-unknown');
      o.feedback.show(false, 'Unknown card');
      return 'unknown-card';
    }
    const results: Result[] = [];
    for (const h of holders) results.push({ ...h, r: await this.#punch(h.orgId, h.subjectId, PunchMethod.PUNCH_METHOD_CARD, ScoreBucket.SCORE_BUCKET_UNSPECIFIED, ScoreBucket.SCORE_BUCKET_UNSPECIFIED) });
    return this.#conclude(results);
  }

  /** Feedback for the punches of one face/card; the outcome is the best of them. */
  async #conclude(results: Result[]): Promise<M2Outcome> {
    const ok = results.find((x) => x.r === 'punch') ?? results.find((x) => x.r === 'repeat');
    if (!ok) {
      this.#o.feedback.show(false, 'Not recorded', 'Please try again');
      return 'refused';
    }
    await this.#o.feedback.welcome(ok.orgId, ok.subjectId);
    return ok.r;
  }

  #refuseLocked(): M2Outcome {
    this.#o.stats.refusedLocked++;
    this.#o.emit('refused', 'locked');
    this.#o.feedback.show(false, 'Out of service');
    return 'locked';
  }

  async #punch(orgId: string, subjectId: string, method: PunchMethod, matchScore: ScoreBucket, liveness: ScoreBucket, score?: number): Promise<'punch' | 'repeat' | 'refused'> {
    const o = this.#o;
    const v = await o.gate.submit({
      orgId,
      subjectId,
      method,
      ...(matchScore !== ScoreBucket.SCORE_BUCKET_UNSPECIFIED ? { matchScore } : {}),
      ...(liveness !== ScoreBucket.SCORE_BUCKET_UNSPECIFIED ? { liveness } : {}),
    });
    if (v.verdict === 'repeat') {
      o.stats.repeats++;
      o.emit('repeat', { orgId, subjectId, method });
      return 'repeat';
    }
    if (v.verdict === 'refused') {
      o.stats.punchRefused++;
      o.emit('punch-refused', v.code);
      return 'refused';
    }
    if (method === PunchMethod.PUNCH_METHOD_FACE) o.stats.facePunches++;
    else o.stats.cardPunches++;
    o.emit('punch', { orgId, subjectId, method, matchScore, liveness, ...(score !== undefined ? { score } : {}), ...(v.eventId ? { eventId: v.eventId } : {}) });
    return 'punch';
  }
}
