/**
 * Every error the agent raises on purpose carries a machine-readable `code`
 * (stable, SCREAMING_SNAKE) and a message for people that names the bad value
 * or key. Callers branch on `code`, never on message text.
 */
export class TallyboxError extends Error {
  readonly code: string;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: string, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
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
