/**
 * The outbox's part in an erasure (src/privacy ErasureParticipant).
 *
 * Org withdrawal: the org's undelivered punches are deleted, the file is
 * compacted (secure_delete is on; VACUUM + a truncating checkpoint also drop
 * the freed pages and the WAL), and the deletion is verified by a count.
 *
 * Account closure: nothing here. Queued punches are the organisation's
 * attendance records, like those already delivered (issue 3: "the org's
 * attendance records already delivered are the org's"); they carry only the
 * opaque subject id and are deleted once delivered anyway.
 */
import type { ErasureParticipant, ErasureReport } from '../privacy/types.js';
import type { Outbox } from './outbox.js';

export function outboxErasureParticipant(outbox: Outbox): ErasureParticipant {
  return {
    name: 'outbox',
    async eraseOrg(orgId: string): Promise<ErasureReport> {
      const punches = await outbox.deleteOrg(orgId);
      await outbox.compact();
      const left = await outbox.countOrg(orgId);
      return left === 0 ? { ok: true, counts: { punches } } : { ok: false, counts: { punches }, detail: `${left} queued punches of the org still present` };
    },
    async eraseSubject(): Promise<ErasureReport> {
      return { ok: true, counts: { punches: 0 }, detail: "queued punches are the organisation's attendance records and are kept" };
    },
    scanFiles: () => [outbox.path, `${outbox.path}-wal`, `${outbox.path}-shm`, `${outbox.path}-journal`],
  };
}
