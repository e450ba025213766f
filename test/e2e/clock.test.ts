/** The agent notices timesyncd's flag appear and re-stamps what it queued before. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { ClockStatus, PunchMethod } from '../../src/proto/index.js';
import { silentLogger } from '../../src/util/log.js';
import { testConfig } from '../helpers/agent-config.js';
import { waitUntil } from '../helpers/ports.js';

describe('clock synchronisation', () => {
  it('flags punches unsynced until timesyncd says so, then re-stamps the queued ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tbx-clock-'));
    const flag = join(dir, 'synchronized');
    const base = testConfig({ dataDir: join(dir, 'data'), brokerUrl: 'mqtt://127.0.0.1:1' });
    const agent = await Agent.start({ config: validateConfig({ ...base, clock: { source: 'systemd', syncedFlagFile: flag } }), logger: silentLogger() });
    try {
      const p = await agent.punch({ orgId: 'org-a', subjectId: 's-1', method: PunchMethod.PUNCH_METHOD_CARD });
      expect(p.clockSynced).toBe(false);
      expect(agent.state().clock).toBe(ClockStatus.CLOCK_STATUS_UNSYNCED);
      writeFileSync(flag, '');
      await waitUntil(async () => (await agent.outbox.peek(0, 1))[0]?.clockSynced === true, 5000, 'queued punch re-stamped');
      expect(agent.state().clock).toBe(ClockStatus.CLOCK_STATUS_SYNCED);
      const after = await agent.punch({ orgId: 'org-a', subjectId: 's-2', method: PunchMethod.PUNCH_METHOD_CARD });
      expect(after.clockSynced).toBe(true);
    } finally {
      await agent.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
