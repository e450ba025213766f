/**
 * M1 erasure (the role is an ErasureParticipant): DeletChar every page of the
 * erased scope, plus every page the vault no longer vouches for (the purge
 * deletes the vault rows first, so after a restart the scope's pages are
 * exactly those), then read the index tables back: ok only if none of them
 * is still used. Idempotent. Caller holds the module's queue and has brought
 * the module up.
 */
import type { ErasureReport } from '../../privacy/types.js';
import { deletePages, listPages, type M1Context, type PageEntry } from './types.js';

export async function eraseLocked(ctx: M1Context, inScope: (e: PageEntry) => boolean, reconciledAway: number): Promise<ErasureReport> {
  const map = ctx.pages!;
  const targets = [...map].filter(([, e]) => inScope(e)).map(([p]) => p);
  for (const p of targets) map.delete(p);
  const before = await listPages(ctx);
  const orphans = before.filter((p) => !map.has(p));
  const toDelete = [...new Set([...targets.filter((p) => before.includes(p)), ...orphans])].sort((a, b) => a - b);
  await deletePages(ctx, toDelete);
  const after = new Set(await listPages(ctx));
  const remaining = [...new Set([...targets, ...toDelete])].filter((p) => after.has(p));
  const ok = remaining.length === 0;
  const erased = toDelete.length + reconciledAway;
  ctx.log.info({ event: 'm1_erased', pages: erased, remaining: remaining.length, ok }, `fingerprint module: ${erased} pages erased, verified ${ok ? 'empty' : 'NOT empty'}`);
  return {
    ok,
    counts: { sensorSlots: erased },
    detail: ok ? `${erased} module pages deleted; index table verified` : `${remaining.length} module pages still in use after DeletChar`,
  };
}
