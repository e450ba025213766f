/**
 * Disk full, for real: the agent's data directory is a 1 MiB tmpfs, filled up
 * by another file. Punches are refused with DISK_FULL and an alarm (never
 * accepted and then lost); when the space returns, the next punch is accepted
 * and the alarm clears by itself. Needs root for the mount (CI runs as root);
 * skipped elsewhere.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { Outbox } from '../../src/outbox/outbox.js';
import { AlarmCode, PunchMethod } from '../../src/proto/index.js';
import { isTallyboxError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/log.js';
import { testConfig } from '../helpers/agent-config.js';

const base = mkdtempSync(join(tmpdir(), 'tbx-diskfull-'));
const mnt = join(base, 'mnt');
mkdirSync(mnt);
const mounted = process.getuid?.() === 0 && spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]).status === 0;

describe.runIf(mounted)('disk full (1 MiB tmpfs)', () => {
  afterAll(() => {
    spawnSync('umount', [mnt]);
    rmSync(base, { recursive: true, force: true });
  });

  it('refuses punches with DISK_FULL and an alarm, keeps every accepted one, and recovers when space returns', async () => {
    const dataDir = join(mnt, 'data');
    // Broker unreachable: the punches stay in the outbox.
    const config = validateConfig(testConfig({ dataDir, brokerUrl: 'mqtt://127.0.0.1:1' }));
    const agent = await Agent.start({ config, logger: silentLogger() });
    const filler = join(mnt, 'filler');
    let accepted = 0;
    let refusal: unknown;
    try {
      // Leave a little room, then punch until the disk is full.
      const stat = spawnSync('df', ['--output=avail', '-B1', mnt], { encoding: 'utf8' });
      const avail = Number(stat.stdout.trim().split('\n').at(-1));
      writeFileSync(filler, Buffer.alloc(Math.max(0, avail - 96 * 1024)));
      for (let i = 0; i < 20_000 && !refusal; i++) {
        try {
          await Promise.all(Array.from({ length: 50 }, (_, k) => agent.punch({ orgId: 'org-a', subjectId: `subject-with-a-longish-id-${i}-${k}`, method: PunchMethod.PUNCH_METHOD_CARD }).then(() => accepted++)));
        } catch (err) {
          refusal = err;
        }
      }
      expect(isTallyboxError(refusal, 'DISK_FULL'), String(refusal)).toBe(true);
      expect(agent.state().alarms?.map((a) => a.code)).toContain(AlarmCode.ALARM_CODE_DISK_FULL);
      // Punches in flight when the disk filled may still land; wait for them, then count.
      await new Promise((r) => setTimeout(r, 200));
      expect(agent.outbox.depth).toBe(accepted);

      rmSync(filler); // space returns
      await expect(agent.punch({ orgId: 'org-a', subjectId: 'after', method: PunchMethod.PUNCH_METHOD_CARD })).resolves.toMatchObject({ seq: accepted + 1 });
      accepted++;
      expect(agent.state().alarms?.map((a) => a.code) ?? []).not.toContain(AlarmCode.ALARM_CODE_DISK_FULL);
    } finally {
      rmSync(filler, { force: true });
      await agent.stop();
    }
    // Every accepted punch is on disk.
    const o = await Outbox.open({ path: join(dataDir, 'outbox.db'), capacity: 1_000_000 });
    expect(o.depth).toBe(accepted);
    expect(o.lastSeq).toBe(accepted);
    await o.close();
  });
});
