export {
  M2Role,
  M2Error,
  SCORE_LABEL,
  type M2RoleOptions,
  type M2PunchSink,
  type M2Vault,
  type M2Status,
  type M2Stats,
  type M2RoleEvents,
  type M2PunchEvent,
  type M2EnrolResult,
  type M2Outcome,
  type M2FaceOptions,
  type LoadReport,
  type TamperResponse,
} from './role.js';
export { M2ConfigSchema, BRIDGE_BAUD_RATES, type M2Config, type M2ConfigInput } from './config.js';
export { createM2Role, type CreateM2RoleOptions } from './create.js';
export { attachM2Role, type AttachM2Options, type M2AgentHooks } from './attach.js';
