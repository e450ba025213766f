export {
  M1Role,
  M1Error,
  runs,
  type M1RoleOptions,
  type M1PunchSink,
  type M1Vault,
  type M1Status,
  type M1Stats,
  type M1RoleEvents,
  type M1PunchEvent,
  type PageEntry,
  type ReconcileReport,
  type EnrolResult,
  type EnrolStep,
} from './role.js';
export { PERIPHERAL_TRANSITIONS as M1_TRANSITIONS } from '../kit/supervisor.js';
export { M1ConfigSchema, R30X_BAUD_RATES, type M1Config, type M1ConfigInput } from './config.js';
export { createM1Role, type CreateM1RoleOptions } from './create.js';
export { sealPageEnvelope, openPageEnvelope, ENVELOPE_MAGIC } from './envelope.js';
export { attachM1Role, type AttachM1Options, type M1AgentHooks } from './attach.js';
