/**
 * M1 reconciliation: the vault is the master copy, the module a cache of it.
 * At every bring-up, pages the vault does not know are deleted; vault
 * templates missing from the module are written back (DownChar + Store);
 * templates without a usable page get a free one and their vault record is
 * rewritten with it. The page ↔ (org, subject, record) mapping is sealed in
 * each vault record (envelope.ts). Caller holds the module's queue.
 */
import { openPageEnvelope, sealPageEnvelope } from './envelope.js';
import { deletePages, errCode, firstFree, listPages, type M1Context, type PageEntry, type ReconcileReport } from './types.js';

export async function reconcile(ctx: M1Context): Promise<ReconcileReport> {
  const t0 = performance.now();
  const io = { ms: 0, trips: 0 };
  /** Time and count one protocol exchange. */
  const rt = async <T>(p: () => Promise<T>): Promise<T> => {
    const t = performance.now();
    try {
      return await p();
    } finally {
      io.ms += performance.now() - t;
      io.trips++;
    }
  };
  const d = ctx.module;
  const size = ctx.librarySize;
  const onModule = new Set(await listPages(ctx, rt));

  // The vault's view: every fingerprint template of every live org, with the page sealed in it.
  const pages = new Map<number, PageEntry>();
  const templates = new Map<number, Buffer>();
  const homeless: Array<{ entry: PageEntry; template: Buffer }> = [];
  const secrets: Buffer[] = [];
  let vaultTemplates = 0;
  try {
    for (const orgId of await ctx.vault.orgs()) {
      const { templates: decrypted, quarantined } = await ctx.vault.decryptTemplates(orgId);
      if (quarantined.length > 0) ctx.log.warn({ event: 'm1_quarantined_templates', orgId, count: quarantined.length }, 'some templates do not decrypt; their pages are not restored');
      for (const t of decrypted) {
        secrets.push(t.bytes);
        if (t.modality !== 'fingerprint') continue;
        vaultTemplates++;
        const { page, template } = openPageEnvelope(t.bytes);
        const entry: PageEntry = { orgId: t.orgId, subjectId: t.subjectId, slot: t.slot, recordId: t.recordId };
        if (page !== null && page < size && !pages.has(page)) {
          pages.set(page, entry);
          templates.set(page, template);
        } else homeless.push({ entry, template });
      }
    }

    // 1. Pages the vault does not know: delete (contiguous runs in one DeletChar each).
    const orphans = [...onModule].filter((p) => !pages.has(p));
    await deletePages(ctx, orphans, rt);

    // 2. Vault templates missing from the module: write back.
    let restored = 0;
    for (const [page, template] of templates) {
      if (onModule.has(page)) continue;
      await rt(() => d.downChar(1, template));
      await rt(() => d.store(1, page));
      restored++;
    }

    // 3. Templates without a usable page: a free page, then the vault record is rewritten with it.
    let reassigned = 0;
    let unplaced = 0;
    for (const { entry, template } of homeless) {
      const page = firstFree(size, pages);
      if (page === null) {
        unplaced++;
        continue;
      }
      await rt(() => d.downChar(1, template));
      await rt(() => d.store(1, page));
      pages.set(page, entry);
      reassigned++;
      const env = sealPageEnvelope(page, template);
      try {
        entry.recordId = (await ctx.vault.enrolTemplate(entry.orgId, entry.subjectId, 'fingerprint', entry.slot, env)).recordId;
      } catch (err) {
        // e.g. consent withdrawn since: the page serves until the purge removes the template.
        ctx.log.warn({ event: 'm1_reassign_not_saved', orgId: entry.orgId, page, code: errCode(err) }, 'template placed on the module but its page could not be saved in the vault');
      } finally {
        env.fill(0);
      }
    }
    if (unplaced > 0) ctx.log.error({ event: 'm1_library_full', unplaced, librarySize: size }, `fingerprint library full: ${unplaced} templates not on the module`);

    ctx.pages = pages;
    ctx.stats.reconciles++;
    const total = performance.now() - t0;
    const report: ReconcileReport = {
      librarySize: size,
      modulePages: onModule.size,
      vaultTemplates,
      deleted: orphans.length,
      restored,
      reassigned,
      unplaced,
      roundTrips: io.trips,
      ms: { total, protocol: io.ms, agent: total - io.ms },
    };
    const { ms: _ms, ...counts } = report;
    ctx.log.info({ event: 'm1_reconciled', ...counts, ms: Math.round(total) }, `fingerprint library reconciled: ${orphans.length} deleted, ${restored} restored, ${reassigned} reassigned`);
    return report;
  } finally {
    for (const s of secrets) s.fill(0);
  }
}
