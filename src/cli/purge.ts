/**
 * `tallybox purge --org ID --config FILE [--yes]`: erase an organisation's data
 * locally, for IT when the cloud is unreachable. Same pipeline as the
 * OrgWithdraw command (key destroyed first, rows deleted, files compacted,
 * byte scan); the signed receipt is queued and delivered on the agent's next
 * connection. Refuses to run while the agent is running on the same data.
 *
 * An org the device holds nothing of (no data key, no pending purge, no
 * queued punch) is refused with ORG_UNKNOWN: a typo must not produce a signed
 * receipt saying an organisation was erased from this device.
 */
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { runningAgentPid } from '../agent/pidfile.js';
import { closePrivacy, openPrivacy, ReceiptDelivery } from '../agent/privacy.js';
import { resultToJson } from '../agent/results.js';
import { loadConfigFile } from '../config/load.js';
import { Outbox } from '../outbox/outbox.js';
import { TallyboxError } from '../util/errors.js';
import { createLogger } from '../util/log.js';

/** Exit code of a usage error (as in tallybox.ts). */
const EXIT_USAGE = 2;

export async function purgeOrg(opts: { configFile: string; orgId: string; yes: boolean; out: (s: string) => void; err?: (s: string) => void }): Promise<number> {
  const err = opts.err ?? ((s: string) => process.stderr.write(`${s}\n`));
  const config = loadConfigFile(opts.configFile);
  if (!config.vault) throw new TallyboxError('CONFIG_INVALID', `${opts.configFile}: no vault section: nothing personal is stored on this device`);
  const pid = runningAgentPid(config.dataDir);
  if (pid) throw new TallyboxError('AGENT_RUNNING', `the agent (pid ${pid}) is running on ${config.dataDir}; stop it first (systemctl stop tallybox)`);
  if (!opts.yes && !process.stdin.isTTY) {
    // Nobody can answer the question: a usage error, before anything is opened.
    err('tallybox: CONFIRMATION_REQUIRED: not a terminal: pass --yes to confirm the erasure');
    return EXIT_USAGE;
  }
  const logger = createLogger({ level: config.log.level, base: { deviceId: config.device.id } });
  const outbox = await Outbox.open({ path: join(config.dataDir, 'outbox.db'), capacity: config.outbox.capacity });
  try {
    const privacy = await openPrivacy({ config, outbox, logger });
    if (!privacy) return 1;
    try {
      const known = await privacy.vault.orgs();
      const pending = (await privacy.purger.pending()).some((j) => j.scope.orgId === opts.orgId);
      if (!known.includes(opts.orgId) && !pending && (await outbox.countOrg(opts.orgId)) === 0) {
        throw new TallyboxError(
          'ORG_UNKNOWN',
          `this device holds nothing of organisation "${opts.orgId}" (no data key, no pending purge, no queued punches); nothing erased, no receipt. Organisations on this device: ${known.length ? known.join(', ') : 'none'}`,
          { orgId: opts.orgId },
        );
      }
      if (!opts.yes) {
        const rl = createInterface({ input: process.stdin, output: process.stderr });
        const answer = await rl.question(`Erase ALL data of organisation "${opts.orgId}" on device ${config.device.id}? This cannot be undone. Type the org id to confirm: `);
        rl.close();
        if (answer.trim() !== opts.orgId) {
          opts.out(JSON.stringify({ purged: false, reason: 'not confirmed' }));
          return 1;
        }
      }
      const o = await privacy.purger.withdrawOrg(opts.orgId, { requestRef: 'local-purge' });
      // The receipt is in the purge journal; hand it to the result queue (the agent would at its next start).
      const delivery = new ReceiptDelivery({
        journal: privacy.journal,
        outbox,
        deviceId: config.device.id,
        identity: privacy.identity,
        enqueue: async (orgId, r) => {
          await outbox.enqueueResult(orgId, resultToJson(r));
        },
        logger,
      });
      const queued = await delivery.flushAll();
      opts.out(JSON.stringify({ purged: o.ok, verification: o.receipt.verification, orgId: opts.orgId, scanHits: o.receipt.scan.hits, counts: o.receipt.counts, durationMs: o.receipt.durationMs, receiptQueued: o.queued && queued > 0 }));
      return o.ok ? 0 : 1;
    } finally {
      await closePrivacy(privacy);
    }
  } finally {
    await outbox.close();
  }
}
