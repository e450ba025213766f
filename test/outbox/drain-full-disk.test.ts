/**
 * A queue that filled its partition must be able to drain it: deleting the
 * delivered rows needs WAL space too. One transaction deleting the ~6,000 rows
 * a reconnect acknowledges at once needs far more WAL than the space the
 * outbox keeps free, so the deletes are split to fit (and shrink further on
 * SQLITE_FULL). With no space at all, the stuck deletes raise DISK_FULL
 * instead of failing silently, and the drain resumes when space returns.
 * Real 2 MiB tmpfs: needs root for the mount (CI runs as root); skipped elsewhere.
 */
import { spawnSync } from 'node:child_process';
import { rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Outbox, type OutboxAlarm } from '../../src/outbox/outbox.js';
import { PunchMethod } from '../../src/proto/index.js';
import { isTallyboxError } from '../../src/util/errors.js';
import { waitUntil } from '../helpers/ports.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

const fs2 = mountTmpfs('tbx-drainfull-', '2m');
const mnt = fs2.dir;

const punch = (i: number) => ({ orgId: 'org-a', subjectId: `subject-with-a-longish-id-${i}`, method: PunchMethod.PUNCH_METHOD_CARD });
const walSize = (path: string): number => {
  try {
    return statSync(`${path}-wal`).size;
  } catch {
    return 0; // no -wal file: SQLite truncated and removed it, which is 0 bytes of WAL
  }
};
const avail = (): number => Number(spawnSync('df', ['--output=avail', '-B1', mnt], { encoding: 'utf8' }).stdout.trim().split('\n').at(-1));

/** Accept punches 50 at a time until the partition refuses them; returns how many were accepted. */
async function fillUntilRefused(o: Outbox): Promise<number> {
  let accepted = 0;
  for (let i = 0; i < 200_000; i += 50) {
    const results = await Promise.allSettled(Array.from({ length: 50 }, (_, k) => o.accept(punch(i + k))));
    accepted += results.filter((r) => r.status === 'fulfilled').length;
    const refused = results.find((r) => r.status === 'rejected');
    if (refused) {
      expect(isTallyboxError(refused.reason, 'DISK_FULL'), String(refused.reason)).toBe(true);
      return accepted;
    }
  }
  throw new Error('the partition never filled');
}

describe.runIf(fs2.mounted)('draining a queue that filled a 2 MiB partition', () => {
  afterAll(() => fs2.dispose());

  it('every row acknowledged at once (a reconnect), with less room left than the outbox keeps, is deleted, and punches are accepted again', async () => {
    const path = join(mnt, 'burst', 'outbox.db');
    const o = await Outbox.open({ path, capacity: 1_000_000 });
    const filler = join(mnt, 'filler-burst');
    try {
      const accepted = await fillUntilRefused(o);
      expect(accepted).toBeGreaterThan(3000);
      expect(o.depth).toBe(accepted);
      await waitUntil(() => walSize(path) === 0, 10_000, 'the WAL truncated on the full disk');
      // The agent's other files (command journal, incidents, state) took part of the space kept free: 48 KiB are left.
      writeFileSync(filler, Buffer.alloc(Math.max(0, avail() - 48 * 1024)));
      for (let seq = 1; seq <= accepted; seq++) o.ack(seq);
      await waitUntil(() => o.depth === 0, 30_000, `all ${accepted} delivered rows deleted (depth ${o.depth})`);
      rmSync(filler);
      await expect(o.accept(punch(-1))).resolves.toMatchObject({ seq: accepted + 1 });
      expect([...o.activeAlarms().keys()]).not.toContain('DISK_FULL');
    } finally {
      rmSync(filler, { force: true });
      await o.close();
    }
  }, 120_000);

  it('no room at all for the deletes: DISK_FULL is raised (not a silent stall), and the drain finishes once space returns', async () => {
    const path = join(mnt, 'none', 'outbox.db');
    const raised: string[] = [];
    const o = await Outbox.open({ path, capacity: 1_000_000, onAlarm: (a: OutboxAlarm, on: boolean) => raised.push(`${on ? '+' : '-'}${a}`) });
    const filler = join(mnt, 'filler');
    try {
      const accepted = await fillUntilRefused(o);
      await waitUntil(() => walSize(path) === 0, 10_000, 'the WAL truncated on the full disk');
      // Another process takes every byte left.
      writeFileSync(filler, Buffer.alloc(avail()));
      expect(avail()).toBe(0);
      raised.length = 0;
      for (let seq = 1; seq <= accepted; seq++) o.ack(seq);
      await waitUntil(() => o.activeAlarms().get('DISK_FULL')?.includes('cannot be deleted') === true, 10_000, 'DISK_FULL for the stuck deletes');
      expect(o.depth).toBe(accepted); // nothing lost, nothing deleted
      rmSync(filler);
      await waitUntil(() => o.depth === 0, 30_000, `the drain finished once space returned (depth ${o.depth})`);
      expect(o.activeAlarms().has('DISK_FULL')).toBe(false);
      expect(raised).toContain('-DISK_FULL');
    } finally {
      rmSync(filler, { force: true });
      await o.close();
    }
  }, 120_000);
});
