/**
 * The one way a role joins the agent's services, through the agent's optional
 * hooks (duck-typed, so a role does not depend on the agent's internals):
 *
 * - the role becomes an erasure participant of the purge pipeline;
 * - onSubjectsErased (an erasure starting, a roster sync) reaches the role at
 *   once, and the punch gate forgets those people;
 * - the repeat window follows the agent's runtime settings (ConfigPatch);
 * - a SubjectUpsert that invites this role's modality starts an enrolment,
 *   one at a time (refusals are logged with their code only).
 */
import type { ErasureParticipant } from '../../privacy/types.js';
import { isTallyboxError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/log.js';
import type { PunchGate } from './punch-gate.js';
import { SerialQueue } from './serial-queue.js';

export interface RoleAgentHooks {
  registerErasureParticipant?(p: ErasureParticipant): void;
  onSubjectChanged?(fn: (orgId: string, subjectId: string, invited: readonly string[]) => void): void;
  onSubjectsErased?(fn: (orgId: string, subjectIds: readonly string[] | 'all') => void): void;
  settings?: { repeatWindowSec: number };
}

export interface AttachRoleOptions {
  agent: RoleAgentHooks;
  participant: ErasureParticipant;
  /** The role's gate: forgets erased people and follows the settings' repeat window. */
  gate?: PunchGate;
  /** Besides the gate: the role's own in-memory state for erased people (an index, a page map). */
  onErased?(orgId: string, subjectIds: readonly string[] | 'all'): void;
  /** Enrol on SubjectUpsert: the modality invited, and the enrolment (which checks consent and skips those already enrolled). */
  enrol?: { modality: string; run(orgId: string, subjectId: string): Promise<string | void> };
  /** Follow agent.settings.repeatWindowSec (default true when the agent has settings). */
  followSettings?: boolean;
  logger?: Logger;
  /** For log events: 'm1', 'm2', … */
  tag: string;
}

/** Returns the enrolment queue's tail (tests wait on it). */
export function attachRole(opts: AttachRoleOptions): { enrolments: () => Promise<unknown> } {
  const { agent, participant, gate } = opts;
  const log = (opts.logger ?? silentLogger()).child({ component: opts.tag });
  agent.registerErasureParticipant?.(participant);
  agent.onSubjectsErased?.((orgId, ids) => {
    gate?.forget(orgId, ids);
    opts.onErased?.(orgId, ids);
  });
  const settings = agent.settings;
  if (gate && settings && opts.followSettings !== false) gate.repeatWindowSec = () => settings.repeatWindowSec;
  const queue = new SerialQueue();
  const enrol = opts.enrol;
  if (enrol && agent.onSubjectChanged) {
    agent.onSubjectChanged((orgId, subjectId, invited) => {
      // Only an invitation to enrol this modality starts an enrolment (SubjectUpsert.enrol).
      if (!invited.includes(enrol.modality)) return;
      void queue.run(async () => {
        try {
          const what = await enrol.run(orgId, subjectId);
          if (what !== undefined) log.info({ event: `${opts.tag}_enrolled_on_upsert`, orgId }, `${enrol.modality} ${what} after SubjectUpsert`);
        } catch (err) {
          const code = isTallyboxError(err) ? err.code : 'ERROR';
          const reason = (err as { reason?: unknown }).reason;
          log.info({ event: `${opts.tag}_enrol_skipped`, orgId, code, ...(typeof reason === 'string' ? { reason } : {}) }, `${enrol.modality} enrolment after SubjectUpsert not done: ${code}`);
        }
      });
    });
  }
  return { enrolments: () => queue.idle() };
}
