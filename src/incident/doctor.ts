/**
 * Doctor's view of the incident records and of a decommission: every record
 * the cloud has not acknowledged yet (warn), a decommissioned or
 * decommissioning device (fail: it does not run). Read only.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Check } from '../cli/doctor.js';
import type { Config } from '../config/schema.js';
import { readDecommission } from '../decommission/state.js';
import { describeError } from '../util/errors.js';
import { INCIDENTS_FILE, IncidentStore } from './store.js';

export async function incidentChecks(config: Config): Promise<Check[]> {
  const out: Check[] = [];
  try {
    const s = readDecommission(config.dataDir);
    if (s?.phase === 'done') out.push({ name: 'decommission', verdict: 'fail', detail: `decommissioned (${s.id}, receipt ${s.receiptId ?? 'none'}): the agent refuses to run until provisioned again (tallybox provision)` });
    else if (s) out.push({ name: 'decommission', verdict: 'fail', detail: `a decommission is under way (${s.phase}): the next \`tallybox run\` or \`tallybox decommission\` finishes it` });
  } catch (err) {
    out.push({ name: 'decommission', verdict: 'fail', detail: describeError(err) });
  }
  if (!existsSync(join(config.dataDir, INCIDENTS_FILE))) return out;
  try {
    const store = await IncidentStore.open(config.dataDir, { readonly: true });
    try {
      const open = await store.open();
      for (const i of open) {
        const scope = [i.orgIds.length ? `orgs ${i.orgIds.join(',')}` : '', ...Object.entries(i.counts).map(([k, v]) => `${k}=${v}`)].filter(Boolean).join(', ');
        out.push({ name: 'incident', verdict: 'warn', detail: `#${i.seq} ${i.kind} ${new Date(i.atMs).toISOString()} (${i.id}): ${i.detail}${scope ? ` [${scope}]` : ''}; sent ${i.sends}x, not yet acknowledged by the cloud` });
      }
      if (open.length === 0) out.push({ name: 'incidents', verdict: 'ok', detail: 'no open incident records' });
    } finally {
      await store.close();
    }
  } catch (err) {
    out.push({ name: 'incidents', verdict: 'fail', detail: `${join(config.dataDir, INCIDENTS_FILE)}: ${describeError(err)}` });
  }
  return out;
}
