/**
 * M1 enrolment: two or three captures, RegModel (and a verifying Match for
 * three), Store at a free page, UpChar into the vault (sealed with its page),
 * after checking the subject's consent. Caller holds the module's queue.
 * Nothing in the vault means nothing on the module: a failed vault write
 * deletes the page again.
 */
import { isDeviceError } from '../../../firmware-bridge/devices.js';
import { sealPageEnvelope } from './envelope.js';
import { IMAGE_CODES, M1Error, enrolFailed, errCode, firstFree, listPages, type EnrolResult, type EnrolStep, type M1Context, type PageEntry } from './types.js';

export interface EnrolHooks {
  step(s: EnrolStep): void;
}

/** Poll GenImg until a finger is on (present=true) or off the sensor. */
export async function waitFinger(ctx: M1Context, hooks: EnrolHooks, present: boolean, at: { capture: number; of: number }, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  hooks.step({ ...at, waitingFor: present ? 'finger' : 'lift' });
  for (;;) {
    if (ctx.stopping) throw new M1Error('ROLE_STOPPED', 'the M1 role is stopping');
    let on: boolean;
    try {
      await ctx.module.genImg();
      on = true;
    } catch (err) {
      if (!isDeviceError(err, 'NO_FINGER')) throw err;
      on = false;
    }
    if (on === present) return;
    if (performance.now() > deadline) throw new M1Error('ENROL_TIMEOUT', `no finger ${present ? 'placed' : 'lifted'} within ${timeoutMs} ms (capture ${at.capture} of ${at.of})`, at);
    await new Promise((r) => setTimeout(r, ctx.pollMs));
  }
}

export async function enrolLocked(ctx: M1Context, hooks: EnrolHooks, orgId: string, subjectId: string, slot: number, captures: 2 | 3, timeoutMs: number): Promise<EnrolResult> {
  const d = ctx.module;
  let attempts = 0;
  for (let capture = 1; capture <= captures; ) {
    if (capture > 1 || attempts > 0) await waitFinger(ctx, hooks, false, { capture, of: captures }, timeoutMs);
    await waitFinger(ctx, hooks, true, { capture, of: captures }, timeoutMs);
    try {
      await d.img2Tz(capture === 1 ? 1 : 2);
    } catch (err) {
      if (isDeviceError(err) && IMAGE_CODES.has(err.code) && ++attempts < captures * 3) {
        hooks.step({ capture, of: captures, retry: err.code });
        continue;
      }
      throw enrolFailed(err);
    }
    try {
      if (capture === 2) await d.regModel();
      if (capture === 3) await d.match();
    } catch (err) {
      throw enrolFailed(err);
    }
    capture++;
  }
  const used = ctx.pages ?? new Map<number, PageEntry>();
  const onModule = new Set(await listPages(ctx));
  const page = firstFree(ctx.librarySize, used, onModule);
  if (page === null) throw new M1Error('LIBRARY_FULL', `the module's library of ${ctx.librarySize} pages is full`);
  await d.store(1, page);
  let template: Buffer | null = null;
  let env: Buffer | null = null;
  let recordId: string;
  try {
    template = await d.upChar(1);
    env = sealPageEnvelope(page, template);
    recordId = (await ctx.vault.enrolTemplate(orgId, subjectId, 'fingerprint', slot, env)).recordId;
  } catch (err) {
    // Nothing in the vault: nothing on the module either (best effort; the next reconciliation deletes it otherwise).
    await d.deletChar(page, 1).catch(() => undefined);
    throw err;
  } finally {
    template?.fill(0);
    env?.fill(0);
  }
  // A replaced slot: its old page goes.
  for (const [p, e] of used) {
    if (e.orgId === orgId && e.subjectId === subjectId && e.slot === slot && p !== page) {
      used.delete(p);
      await d.deletChar(p, 1).catch((err: unknown) => ctx.log.warn({ event: 'm1_old_page_kept', page: p, code: errCode(err) }, 'replaced page not deleted; the next reconciliation will'));
    }
  }
  used.set(page, { orgId, subjectId, slot, recordId });
  ctx.pages = used;
  ctx.stats.enrolments++;
  ctx.log.info({ event: 'm1_enrolled', orgId, page, slot }, `fingerprint enrolled at page ${page}`);
  return { orgId, subjectId, page, slot, recordId };
}
