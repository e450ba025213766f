/**
 * Joins the M2 role to the agent's services, through the agent's optional
 * hooks (duck-typed, so the role does not depend on the agent's internals):
 *
 * - the role becomes an erasure participant of the purge pipeline (an erased
 *   subject or org leaves the in-memory face index);
 * - onSubjectsErased (roster sync, commands) drops them from the index too;
 * - the repeat window follows the agent's runtime settings (ConfigPatch);
 * - a SubjectUpsert for someone with consent and no face template yet starts
 *   a face enrolment on the module (refusals are logged with their code only).
 */
import type { ErasureParticipant } from '../../privacy/types.js';
import { isTallyboxError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/log.js';
import type { M2Role, M2Vault } from './role.js';

export interface M2AgentHooks {
  registerErasureParticipant?(p: ErasureParticipant): void;
  onSubjectChanged?(fn: (orgId: string, subjectId: string, invited: readonly string[]) => void): void;
  onSubjectsErased?(fn: (orgId: string, subjectIds: readonly string[] | 'all') => void): void;
  settings?: { repeatWindowSec: number };
}

export interface AttachM2Options {
  agent: M2AgentHooks;
  role: M2Role;
  vault: Pick<M2Vault, 'listTemplates' | 'getSubject'>;
  logger?: Logger;
  /** Start a face enrolment on SubjectUpsert (default true). */
  enrolOnUpsert?: boolean;
  /** Follow agent.settings.repeatWindowSec (default true when the agent has settings). */
  followSettings?: boolean;
}

export function attachM2Role(opts: AttachM2Options): { enrolments: () => Promise<unknown> } {
  const { agent, role, vault } = opts;
  const log = (opts.logger ?? silentLogger()).child({ component: 'm2' });
  agent.registerErasureParticipant?.(role);
  agent.onSubjectsErased?.((orgId, ids) => role.subjectsErased(orgId, ids));
  const settings = agent.settings;
  if (settings && opts.followSettings !== false) role.repeatWindowSec = () => settings.repeatWindowSec;
  let queue: Promise<unknown> = Promise.resolve();
  if (opts.enrolOnUpsert !== false && agent.onSubjectChanged) {
    agent.onSubjectChanged((orgId, subjectId, invited) => {
    // Only an invitation to enrol this modality starts an enrolment (SubjectUpsert.enrol).
    if (!invited.includes('face')) return;
      queue = queue.then(async () => {
        try {
          const existing = await vault.listTemplates(orgId, subjectId);
          if (existing.some((t) => t.modality === 'face' && !t.quarantined)) return;
          const s = await vault.getSubject(orgId, subjectId);
          // Without consent nobody is asked to look at the camera.
          if (!s.consents.biometric || (s.minor && !s.consents.guardian)) {
            log.info({ event: 'm2_enrol_skipped', orgId, code: 'CONSENT_REFUSED' }, 'face enrolment after SubjectUpsert not started: no recorded consent');
            return;
          }
          await role.enrol(orgId, subjectId);
          log.info({ event: 'm2_enrolled_on_upsert', orgId }, 'face enrolled after SubjectUpsert');
        } catch (err) {
          const code = isTallyboxError(err) ? err.code : 'ERROR';
          log.info({ event: 'm2_enrol_skipped', orgId, code }, `face enrolment after SubjectUpsert not done: ${code}`);
        }
      });
    });
  }
  return { enrolments: () => queue };
}
