export { C1ConfigSchema, type C1Config } from './config.js';
export { C1Role, type C1RoleOptions, type C1Sink, type C1Vault } from './role.js';
export { decideJoin, siteClock } from './rules.js';
export { sameDevice } from './fingerprint.js';
