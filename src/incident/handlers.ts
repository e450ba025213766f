/**
 * Command handlers of the device's life cycle: IncidentAck (the cloud has
 * recorded these incidents: stop re-sending them) and DeviceDecommission
 * (src/decommission/command.ts). Both only from the operating organisation
 * (the intake's org policy).
 */
import type { Agent } from '../agent/agent.js';
import type { CommandContext, CommandHandlers, HandlerOutcome } from '../link/commands/index.js';
import { ResultCode, type DeviceDecommission, type IncidentAck } from '../proto/index.js';

export function lifecycleHandlers(agent: Agent): Pick<CommandHandlers, 'incidentAck' | 'deviceDecommission'> {
  return {
    async incidentAck(_orgId: string, cmd: IncidentAck): Promise<HandlerOutcome> {
      const m = agent.incidents;
      if (!m) return { code: ResultCode.RESULT_CODE_REFUSED, reason: 'no_incident_store', detail: 'incident records are not open' };
      const ids = (cmd.incidentIds ?? []).filter((i) => typeof i === 'string' && i.length <= 64);
      const n = await m.store.ack(ids);
      return { code: ResultCode.RESULT_CODE_OK, reason: 'incidents_acknowledged', detail: `${n} of ${ids.length} incident(s) closed` };
    },
    async deviceDecommission(_orgId: string, _cmd: DeviceDecommission, ctx: CommandContext): Promise<HandlerOutcome> {
      const { handleDeviceDecommission } = await import('../decommission/command.js');
      return handleDeviceDecommission(agent, ctx);
    },
  };
}
