export {
  CommandIntake,
  COMMAND_SIGNING_DOMAIN,
  DEFAULT_MAX_BYTES,
  DEFAULT_MAX_SKEW_MS,
  DEFAULT_MAX_TTL_MS,
  NONCE_BYTES,
  type CommandContext,
  type CommandHandlers,
  type CommandIntakeOptions,
  type CommandKind,
  type OrgPolicy,
  resultFromJson,
  resultToJson,
  type HandlerOutcome,
  type TrustedKey,
} from './intake.js';
export { Reason, type ReasonString } from './reasons.js';
export { ed25519PublicKey, RESULT_SIGNING_DOMAIN, resultSigningBytes, splitResultSignature, verifyCommandResult, type Ed25519PublicKey } from './result.js';
export type { JournalEntry } from './store.js';
export { RejectionGate, type RejectionGateOptions, type RejectionGateStats } from './rejection-gate.js';
