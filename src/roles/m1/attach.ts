/**
 * Joins the M1 role to the agent's services through the kit's one attach
 * path (kit/attach.ts): erasure participant, erased people stop matching at
 * once (forget) and leave the gate, the repeat window follows ConfigPatch,
 * and a SubjectUpsert inviting 'fingerprint' for someone without one yet
 * starts an enrolment (the person is asked to place a finger; refusals are
 * logged with their reason code only).
 */
import type { Logger } from '../../util/log.js';
import { attachRole, type RoleAgentHooks } from '../kit/attach.js';
import type { M1Role, M1Vault } from './role.js';

export type M1AgentHooks = RoleAgentHooks;

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

export function attachM1Role(opts: AttachM1Options): { enrolments: () => Promise<unknown> } {
  const { role, vault } = opts;
  return attachRole({
    agent: opts.agent,
    participant: role,
    gate: role.gate,
    onErased: (orgId, ids) => void role.forget(orgId, ids),
    tag: 'm1',
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.followSettings !== undefined ? { followSettings: opts.followSettings } : {}),
    ...(opts.enrolOnUpsert === false
      ? {}
      : {
          enrol: {
            modality: 'fingerprint',
            run: async (orgId: string, subjectId: string) => {
              const existing = await vault.listTemplates(orgId, subjectId);
              if (existing.some((t) => t.modality === 'fingerprint')) return undefined;
              const r = await role.enrol(orgId, subjectId);
              return `enrolled at page ${r.page}`;
            },
          },
        }),
  });
}
