/**
 * `tallybox purge --org ID --config FILE [--yes]`: erase an organisation's data
 * locally, for IT when the cloud is unreachable. Same pipeline as the
 * OrgWithdraw command (key destroyed first, rows deleted, files compacted,
 * byte scan); the signed receipt is queued and delivered on the agent's next
 * connection. Refuses to run while the agent is running on the same data.
 */
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { runningAgentPid } from '../agent/pidfile.js';
import { openPrivacy, receiptResult } from '../agent/privacy.js';
import { resultToJson } from '../agent/results.js';
import { loadConfigFile } from '../config/load.js';
import { Outbox } from '../outbox/outbox.js';
import { TallyboxError } from '../util/errors.js';
import { createLogger } from '../util/log.js';

export async function purgeOrg(opts: { configFile: string; orgId: string; yes: boolean; out: (s: string) => void }): Promise<number> {
  const config = loadConfigFile(opts.configFile);
  if (!config.vault) throw new TallyboxError('CONFIG_INVALID', `${opts.configFile}: no vault section: nothing personal is stored on this device`);
  const pid = runningAgentPid(config.dataDir);
  if (pid) throw new TallyboxError('AGENT_RUNNING', `the agent (pid ${pid}) is running on ${config.dataDir}; stop it first (systemctl stop tallybox)`);
  if (!opts.yes) {
    if (!process.stdin.isTTY) throw new TallyboxError('CONFIRMATION_REQUIRED', 'not a terminal: pass --yes to confirm the erasure');
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question(`Erase ALL data of organisation "${opts.orgId}" on device ${config.device.id}? This cannot be undone. Type the org id to confirm: `);
    rl.close();
    if (answer.trim() !== opts.orgId) {
      opts.out(JSON.stringify({ purged: false, reason: 'not confirmed' }));
      return 1;
    }
  }
  const logger = createLogger({ level: config.log.level, base: { deviceId: config.device.id } });
  const outbox = await Outbox.open({ path: join(config.dataDir, 'outbox.db'), capacity: config.outbox.capacity });
  try {
    const privacy = await openPrivacy({ config, outbox, logger });
    if (!privacy) return 1;
    try {
      if (!(await privacy.vault.orgs()).includes(opts.orgId)) {
        logger.warn({ event: 'purge_unknown_org' }, 'the vault holds no key for this org; erasing whatever else remains');
      }
      const o = await privacy.purger.withdrawOrg(opts.orgId, { requestRef: 'local-purge' });
      const result = receiptResult({ deviceId: config.device.id, identity: privacy.identity, signed: o.signed, ok: o.ok, reason: 'local_purge' });
      await outbox.enqueueResult(opts.orgId, resultToJson(result));
      opts.out(JSON.stringify({ purged: o.ok, orgId: opts.orgId, scanHits: o.receipt.scan.hits, counts: o.receipt.counts, durationMs: o.receipt.durationMs, receiptQueued: true }));
      return o.ok ? 0 : 1;
    } finally {
      await privacy.vault.close();
    }
  } finally {
    await outbox.close();
  }
}
