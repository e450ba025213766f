/**
 * Joins the M1 role to the agent's services, through the agent's optional
 * hooks (duck-typed, so the role does not depend on the agent's internals):
 *
 * - the role becomes an erasure participant of the purge pipeline;
 * - the repeat window follows the agent's runtime settings (ConfigPatch);
 * - a SubjectUpsert with consent for someone without a fingerprint yet starts
 *   an enrolment (the person is asked to place a finger; refusals are logged
 *   with their reason code only).
 */
import type { ErasureParticipant } from '../../privacy/types.js';
import { isTallyboxError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/log.js';
import type { M1Role, M1Vault } from './role.js';

export interface M1AgentHooks {
  registerErasureParticipant?(p: ErasureParticipant): void;
  onSubjectChanged?(fn: (orgId: string, subjectId: string, invited: readonly string[]) => void): void;
  onSubjectsErased?(fn: (orgId: string, subjectIds: readonly string[] | 'all') => void): void;
  settings?: { repeatWindowSec: number };
}

export interface AttachM1Options {
  agent: M1AgentHooks;
  role: M1Role;
  vault: Pick<M1Vault, 'listTemplates'>;
  logger?: Logger;
  /** Start an enrolment on SubjectUpsert (default true). */
  enrolOnUpsert?: boolean;
  /** Follow agent.settings.repeatWindowSec (default true when the agent has settings). */
  followSettings?: boolean;
}

export function attachM1Role(opts: AttachM1Options): void {
  const { agent, role, vault } = opts;
  const log = (opts.logger ?? silentLogger()).child({ component: 'm1' });
  agent.registerErasureParticipant?.(role);
  agent.onSubjectsErased?.((orgId, ids) => role.forget(orgId, ids));
  const settings = agent.settings;
  if (settings && opts.followSettings !== false) role.repeatWindowSec = () => settings.repeatWindowSec;
  if (opts.enrolOnUpsert === false || !agent.onSubjectChanged) return;
  let queue: Promise<unknown> = Promise.resolve();
  agent.onSubjectChanged((orgId, subjectId, invited) => {
    // Only an invitation to enrol this modality starts an enrolment (SubjectUpsert.enrol).
    if (!invited.includes('fingerprint')) return;
    queue = queue.then(async () => {
      try {
        const existing = await vault.listTemplates(orgId, subjectId);
        if (existing.some((t) => t.modality === 'fingerprint')) return;
        const r = await role.enrol(orgId, subjectId);
        log.info({ event: 'm1_enrolled_on_upsert', orgId, page: r.page }, 'fingerprint enrolled after SubjectUpsert');
      } catch (err) {
        const code = isTallyboxError(err) ? err.code : 'ERROR';
        const reason = (err as { reason?: string }).reason;
        log.info({ event: 'm1_enrol_skipped', orgId, code, ...(reason ? { reason } : {}) }, `fingerprint enrolment after SubjectUpsert not done: ${code}`);
      }
    });
  });
}
