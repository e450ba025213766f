/**
 * The free-space check of the accept path (src/store/disk-space.ts): one
 * statfs per interval while there is room, one per decision near a full
 * disk, and a refusal when the disk is really filled from outside.
 */
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Outbox } from '../../src/outbox/outbox.js';
import { PunchMethod } from '../../src/proto/index.js';
import { DiskSpaceCheck } from '../../src/store/disk-space.js';
import { walBudgetBytes } from '../../src/store/sqlite.js';
import { isTallyboxError } from '../../src/util/errors.js';
import { waitUntil } from '../helpers/ports.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

const MiB = 1024 * 1024;

describe('DiskSpaceCheck (statfs answers scripted: the rule is under test, not the filesystem)', () => {
  function scripted(initial: number) {
    const fs = { free: initial, calls: 0, fail: false };
    let now = 0;
    const check = new DiskSpaceCheck('/data', {
      intervalMs: 1000,
      marginBytes: 8 * MiB,
      monotonic: () => now,
      statfs: () => {
        fs.calls++;
        if (fs.fail) throw new Error('ENOSYS');
        return fs.free;
      },
    });
    return { fs, check, advance: (ms: number) => (now += ms) };
  }

  it('with plenty of room: one lookup per interval, not one per decision', () => {
    const { fs, check, advance } = scripted(1024 * MiB);
    for (let i = 0; i < 1000; i++) expect(check.free(MiB, 256)).toBeGreaterThan(MiB);
    expect(fs.calls).toBe(1);
    advance(999);
    check.free(MiB, 256);
    expect(fs.calls).toBe(1);
    advance(1);
    check.free(MiB, 256);
    expect(fs.calls).toBe(2);
    expect(check.lookups).toBe(2);
  });

  it('counts what the caller wrote since the lookup, and looks every time once the headroom is within the margin', () => {
    const { fs, check } = scripted(10 * MiB);
    // 10 MiB free, need 1 MiB, margin 8 MiB: 1 MiB of own writes uses the headroom up.
    expect(check.free(MiB, MiB)).toBe(10 * MiB);
    expect(check.free(MiB, MiB)).toBe(9 * MiB);
    expect(fs.calls).toBe(1);
    // Now 8 MiB estimated: below need + margin, so every further decision looks.
    fs.free = 3 * MiB;
    expect(check.free(MiB, 0)).toBe(3 * MiB);
    expect(check.free(MiB, 0)).toBe(3 * MiB);
    expect(fs.calls).toBe(3);
  });

  it('a disk filled from outside is seen at the next lookup: within one interval', () => {
    const { fs, check, advance } = scripted(1024 * MiB);
    expect(check.free(MiB)).toBe(1024 * MiB);
    fs.free = 100 * 1024; // someone else filled the disk
    advance(1000);
    expect(check.free(MiB)).toBe(100 * 1024);
    // Near full: every decision looks, so space that returns is seen at once.
    fs.free = 2 * MiB;
    expect(check.free(MiB)).toBe(2 * MiB);
  });

  it('statfs unsupported: undefined (the caller relies on SQLITE_FULL), and it is asked again next time', () => {
    const { fs, check } = scripted(0);
    fs.fail = true;
    expect(check.free(MiB)).toBeUndefined();
    fs.fail = false;
    fs.free = 50 * MiB;
    expect(check.free(MiB)).toBe(50 * MiB);
    expect(fs.calls).toBe(2);
  });
});

const fs16 = mountTmpfs('tbx-diskspace-', '16m');
const mnt = fs16.dir;

describe.runIf(fs16.mounted)('the outbox on a real 16 MiB tmpfs', () => {
  afterAll(() => fs16.dispose());
  const punch = (i: number) => ({ orgId: 'org-a', subjectId: `subject-${i}`, method: PunchMethod.PUNCH_METHOD_CARD });

  it('accepting 300 punches one by one looks the free space up once, not 300 times', async () => {
    const dir = join(mnt, 'once');
    const o = await Outbox.open({ path: join(dir, 'outbox.db'), capacity: 10_000, diskCheck: { intervalMs: 600_000 } });
    try {
      for (let i = 0; i < 300; i++) await o.accept(punch(i));
      expect(o.spaceLookups).toBe(1);
      expect(o.depth).toBe(300);
    } finally {
      await o.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('filled from outside: punches are refused with DISK_FULL within the interval, every accepted one is kept, and accepted again once space returns', async () => {
    const dir = join(mnt, 'filled');
    const path = join(dir, 'outbox.db');
    const alarms: string[] = [];
    const o = await Outbox.open({ path, capacity: 100_000, diskCheck: { intervalMs: 200 }, onAlarm: (a, on) => on && alarms.push(a) });
    const filler = join(mnt, 'filler');
    let accepted = 0;
    try {
      for (let i = 0; i < 20; i++) accepted += (await o.accept(punch(i))) ? 1 : 0;
      const lookupsBefore = o.spaceLookups;
      // Leave less than the reserve (the WAL budget + 64 KiB) free.
      const reserve = walBudgetBytes(mnt) + 64 * 1024;
      const avail = Number(spawnSync('df', ['--output=avail', '-B1', mnt], { encoding: 'utf8' }).stdout.trim().split('\n').at(-1));
      writeFileSync(filler, Buffer.alloc(Math.max(0, avail - Math.floor(reserve / 2))));
      let refusal: unknown;
      let i = 100;
      await waitUntil(
        async () => {
          try {
            await o.accept(punch(i++));
            accepted++;
            return false;
          } catch (err) {
            refusal = err;
            return true;
          }
        },
        30_000,
        'a punch refused on the full disk',
      );
      expect(isTallyboxError(refusal, 'DISK_FULL'), String(refusal)).toBe(true);
      // Refused by the outbox's own check (the reserve), not by SQLite failing a write.
      expect(String(refusal)).toContain('kept for the queue');
      expect(alarms).toContain('DISK_FULL');
      expect(o.spaceLookups).toBeGreaterThan(lookupsBefore);
      expect(o.depth).toBe(accepted);
      rmSync(filler);
      await waitUntil(
        () =>
          o.accept(punch(-1)).then(
            () => true,
            () => false,
          ),
        30_000,
        'a punch accepted once space returned',
      );
      accepted++;
      expect(o.activeAlarms().has('DISK_FULL')).toBe(false);
    } finally {
      rmSync(filler, { force: true });
      await o.close();
    }
    const again = await Outbox.open({ path, capacity: 100_000 });
    expect(again.depth).toBe(accepted);
    expect(again.lastSeq).toBe(accepted);
    await again.close();
  }, 60_000);
});
