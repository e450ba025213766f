/**
 * Every error the agent raises on purpose carries a machine-readable `code`
 * (stable, SCREAMING_SNAKE) and a message for people that names the bad value
 * or key. Callers branch on `code`, never on message text.
 *
 * The message does not repeat the code: whoever prints an error prints
 * `CODE: message` (describeError), so a message written as "CODE: …" has the
 * prefix dropped here, once, instead of being printed twice.
 */
export class TallyboxError extends Error {
  readonly code: string;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: string, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message.startsWith(`${code}: `) ? message.slice(code.length + 2) : message, options);
    this.name = 'TallyboxError';
    this.code = code;
    this.details = details;
  }
}

export function isTallyboxError(err: unknown, code?: string): err is TallyboxError {
  return err instanceof TallyboxError && (code === undefined || err.code === code);
}

/** Best-effort message of an unknown thrown value, for logs. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `CODE: message` for a TallyboxError, the message otherwise: what people are shown. */
export function describeError(err: unknown): string {
  return isTallyboxError(err) ? `${err.code}: ${err.message}` : errorMessage(err);
}

/**
 * Codes that mean "the configuration, a key, or the files the agent was
 * pointed at are wrong": retrying cannot help, a person must fix something.
 * `tallybox` exits 78 (EX_CONFIG) on them, so a systemd unit with
 * RestartPreventExitStatus=78 stops instead of restart-looping.
 */
const CONFIG_ERROR_CODES = new Set([
  'CONFIG_INVALID',
  'CONFIG_UNREADABLE',
  'REGION_MISMATCH',
  'KEK_MISMATCH',
  'IDENTITY_KEY_INVALID',
  'KEY_INVALID',
  'KEY_PROVIDER_UNAVAILABLE',
  'DATA_DIR_INSECURE',
  'FILE_INSECURE',
  'SETTINGS_CORRUPT',
  // State files an operator must look at: restarting cannot fix them.
  'SERVED_ORGS_CORRUPT',
  'VAULT_SCHEMA_UNSUPPORTED',
  'VAULT_SCHEMA_UNKNOWN',
  // Provisioning by claim: a person must get a new code, the right region, CA or cloud key.
  'CLAIM_CODE_UNKNOWN',
  'CLAIM_CODE_USED',
  'CLAIM_CODE_EXPIRED',
  'CLAIM_REFUSED',
  'CLAIM_TLS_FAILED',
  'CLAIM_TRUST_ANCHOR_MISSING',
  'PROVISION_OUT_EXISTS',
]);

export function isConfigErrorCode(code: string): boolean {
  // Every key-file problem (missing, insecure, unreadable, invalid, in the data directory, already there).
  return CONFIG_ERROR_CODES.has(code) || code.startsWith('KEY_FILE_');
}
