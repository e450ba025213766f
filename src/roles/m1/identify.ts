/**
 * M1 identification, one step of the loop: GenImg → Img2Tz → HighSpeedSearch
 * → page → subject (the vault-vouched page map) → the punch gate. A page the
 * vault does not vouch for never punches: it is deleted. After a result the
 * finger must be lifted before the next one counts (a resting finger is
 * searched once). Caller holds the module's queue.
 */
import { isDeviceError } from '../../../firmware-bridge/devices.js';
import { PunchMethod, ScoreBucket } from '../../proto/index.js';
import type { PunchGate } from '../kit/punch-gate.js';
import { IMAGE_CODES, type M1Context, type M1PunchEvent } from './types.js';

export type TickOutcome = 'idle' | 'busy' | 'error';

export interface IdentifyHooks {
  gate: PunchGate;
  requireLift: boolean;
  buckets: { medium: number; high: number };
  /** The module answered (anything, NO_FINGER included): the supervisor's heartbeat. */
  heard(): void;
  lifted(): void;
  badImage(code: string): void;
  noMatch(): void;
  unknownPage(page: number): void;
  repeat(e: { orgId: string; subjectId: string; page: number }): void;
  refused(code: string): void;
  punch(e: M1PunchEvent): void;
}

export function bucketOf(score: number, b: { medium: number; high: number }): ScoreBucket {
  if (score >= b.high) return ScoreBucket.SCORE_BUCKET_HIGH;
  if (score >= b.medium) return ScoreBucket.SCORE_BUCKET_MEDIUM;
  return ScoreBucket.SCORE_BUCKET_LOW;
}

export async function identifyOnce(ctx: M1Context, h: IdentifyHooks): Promise<TickOutcome> {
  const d = ctx.module;
  try {
    await d.genImg();
  } catch (err) {
    if (isDeviceError(err, 'NO_FINGER')) {
      h.heard();
      if (ctx.awaitingLift) {
        ctx.awaitingLift = false;
        h.lifted();
      }
      return 'idle';
    }
    throw err;
  }
  h.heard();
  if (ctx.awaitingLift) return 'idle';
  try {
    await d.img2Tz(1);
  } catch (err) {
    if (isDeviceError(err) && IMAGE_CODES.has(err.code)) {
      ctx.stats.badImages++;
      h.badImage(err.code);
      return 'idle';
    }
    throw err;
  }
  let page: number;
  let score: number;
  try {
    ({ page, score } = await d.highSpeedSearch(1, 0, ctx.librarySize));
  } catch (err) {
    if (isDeviceError(err, 'NOT_FOUND')) {
      ctx.stats.noMatch++;
      ctx.awaitingLift = h.requireLift;
      h.noMatch();
      return 'busy';
    }
    throw err;
  }
  // ---- agent-side overhead starts at the Search reply
  const t0 = performance.now();
  ctx.awaitingLift = h.requireLift;
  const entry = ctx.pages?.get(page);
  if (!entry) {
    // The vault does not vouch for this page (written behind our back): it must not punch, and it goes.
    ctx.stats.unknownPages++;
    ctx.log.warn({ event: 'm1_unknown_page', page }, `fingerprint module: page ${page} matched but is not in the vault; deleting it`);
    h.unknownPage(page);
    await d.deletChar(page, 1);
    return 'busy';
  }
  const bucket = bucketOf(score, h.buckets);
  const roleMs = performance.now() - t0;
  const v = await h.gate.submit({ orgId: entry.orgId, subjectId: entry.subjectId, method: PunchMethod.PUNCH_METHOD_FINGERPRINT, matchScore: bucket });
  if (v.verdict === 'repeat') {
    ctx.stats.repeats++;
    h.repeat({ orgId: entry.orgId, subjectId: entry.subjectId, page });
    return 'busy';
  }
  if (v.verdict === 'refused') {
    h.refused(v.code);
    return 'busy';
  }
  ctx.stats.punches++;
  h.punch({ orgId: entry.orgId, subjectId: entry.subjectId, page, score, bucket, overheadMs: performance.now() - t0, roleMs, ...(v.eventId ? { eventId: v.eventId } : {}) });
  return 'busy';
}
