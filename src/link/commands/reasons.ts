/**
 * Machine-readable `reason` strings of CommandResult, one place. The cloud
 * branches on (code, reason); they are stable: add, never rename.
 */
export const Reason = {
  /** TOO_LARGE: the payload is larger than maxBytes. */
  payloadTooLarge: 'payload_too_large',
  /** MALFORMED: the payload is not a SignedCommand. */
  decodeFailed: 'decode_failed',
  /** MALFORMED: SignedCommand without body. */
  missingBody: 'missing_body',
  /** MALFORMED: SignedCommand without signature. */
  missingSignature: 'missing_signature',
  /** BAD_SIGNATURE: the signature is not 64 bytes. */
  signatureLength: 'signature_length',
  /** BAD_SIGNATURE: key_id names no pinned cloud key. */
  unknownKey: 'unknown_key_id',
  /** BAD_SIGNATURE: Ed25519 verification failed. */
  signatureInvalid: 'signature_invalid',
  /** MALFORMED: the (correctly signed) body is not a CommandBody. */
  bodyDecodeFailed: 'body_decode_failed',
  /** WRONG_DEVICE: body.device_id is another device. */
  deviceMismatch: 'device_mismatch',
  /** WRONG_DEVICE: the topic's org/device disagrees with the body (or the topic is not a cmd topic). */
  topicMismatch: 'topic_mismatch',
  /** NOT_YET_VALID: issued_at is beyond now + maxSkew. */
  issuedInFuture: 'issued_in_future',
  /** EXPIRED: expires_at is at or before now. */
  expired: 'expired',
  /** EXPIRED: expires_at is not after issued_at. */
  expiresBeforeIssued: 'expires_before_issued',
  /** EXPIRED: expires_at − issued_at exceeds maxTtl. */
  ttlTooLong: 'ttl_too_long',
  /** MALFORMED: the nonce is not 16 bytes. */
  nonceLength: 'nonce_length',
  /** REPLAYED: this nonce was accepted before. */
  nonceSeen: 'nonce_seen',
  /** MALFORMED: the counter is above 2^53 − 1 (cannot be held exactly). */
  counterOutOfRange: 'counter_out_of_range',
  /** STALE_COUNTER: the counter is not above the last accepted counter. */
  counterNotIncreasing: 'counter_not_increasing',
  /** UNKNOWN_COMMAND: the oneof is empty (or holds a command this agent does not know). */
  noCommand: 'no_command',
  /** OK: a Ping, answered by the intake itself. */
  pong: 'pong',
  /** FAILED: the counter/nonce could not be persisted; the command did not run. */
  statePersistFailed: 'state_persist_failed',
  /** FAILED: a handler threw something without a usable `code`. */
  handlerFailed: 'handler_failed',
  /** FAILED: a handler returned something that is not a HandlerOutcome. */
  handlerBadOutcome: 'handler_bad_outcome',
  /** FAILED: handle() was called after close(). */
  intakeClosed: 'intake_closed',
  /** FAILED: an unexpected error inside the intake. */
  internalError: 'internal_error',
  /** REFUSED: the command is for an organisation this device does not serve (nothing changed). */
  orgNotServed: 'org_not_served',
  /** REFUSED: ServedOrgsSet from an organisation other than the one operating the device. */
  notOperatorOrg: 'not_operator_org',
  /** INTERRUPTED: accepted, but the agent stopped before the command finished; `detail` says what was done. */
  interrupted: 'interrupted',
} as const;

export type ReasonString = (typeof Reason)[keyof typeof Reason];
