/**
 * Joins the M2 role to the agent's services through the kit's one attach
 * path (kit/attach.ts): erasure participant, erased people leave the face
 * index and the gate, the repeat window follows ConfigPatch, and a
 * SubjectUpsert inviting 'face' for someone with consent and no face
 * template yet starts a face enrolment (refusals logged with their code only).
 */
import { TallyboxError } from '../../util/errors.js';
import type { Logger } from '../../util/log.js';
import { attachRole, type RoleAgentHooks } from '../kit/attach.js';
import type { M2Role, M2Vault } from './role.js';

export type M2AgentHooks = RoleAgentHooks;

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
  const { role, vault } = opts;
  return attachRole({
    agent: opts.agent,
    participant: role,
    gate: role.gate,
    onErased: (orgId, ids) => role.subjectsErased(orgId, ids),
    tag: 'm2',
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.followSettings !== undefined ? { followSettings: opts.followSettings } : {}),
    ...(opts.enrolOnUpsert === false
      ? {}
      : {
          enrol: {
            modality: 'face',
            run: async (orgId: string, subjectId: string) => {
              const existing = await vault.listTemplates(orgId, subjectId);
              if (existing.some((t) => t.modality === 'face' && !t.quarantined)) return undefined;
              const s = await vault.getSubject(orgId, subjectId);
              // Without consent nobody is asked to look at the camera.
              if (!s.consents.biometric || (s.minor && !s.consents.guardian)) {
                throw new TallyboxError('CONSENT_REFUSED', 'no recorded consent');
              }
              await role.enrol(orgId, subjectId);
              return 'enrolled';
            },
          },
        }),
  });
}
