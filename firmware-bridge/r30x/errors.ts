import { TallyboxError } from '../../src/util/errors.js';
import { confirmationName, type ConfirmationName, type InstructionName } from './constants.js';

/** Host-side failures that are not a confirmation code from the module. */
export type R30xLinkErrorCode =
  | 'TIMEOUT'
  | 'PROTOCOL_ERROR'
  | 'NOT_OPEN'
  | 'DISCONNECTED'
  | 'WRITE_FAILED'
  | 'CLOSED'
  | 'BAD_ARGUMENT'
  /** UpImage/DownImage: the agent never moves a fingerprint image (nothing is sent). */
  | 'IMAGE_TRANSFER_REFUSED';

export type R30xErrorCode = ConfirmationName | `UNKNOWN_0x${string}` | R30xLinkErrorCode;

/**
 * `code` is the confirmation code's name ('NO_FINGER', 'NOT_FOUND', ...) when the
 * module refused, or a link code ('TIMEOUT', ...) when it did not answer properly.
 * `confirmation` holds the numeric code in the first case.
 */
export class R30xError extends TallyboxError {
  declare readonly code: R30xErrorCode;
  readonly confirmation: number | undefined;
  readonly instruction: InstructionName | undefined;

  constructor(opts: {
    code: R30xErrorCode;
    message: string;
    instruction?: InstructionName;
    confirmation?: number;
    details?: Record<string, unknown>;
    cause?: unknown;
  }) {
    super(opts.code, opts.message, { instruction: opts.instruction, confirmation: opts.confirmation, ...opts.details }, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'R30xError';
    this.confirmation = opts.confirmation;
    this.instruction = opts.instruction;
  }

  /** The module answered with a non-OK confirmation code. */
  static fromConfirmation(instruction: InstructionName, confirmation: number): R30xError {
    const name = confirmationName(confirmation);
    const hex = `0x${confirmation.toString(16).padStart(2, '0').toUpperCase()}`;
    return new R30xError({
      code: name,
      confirmation,
      instruction,
      message: `R30x ${instruction} refused: ${name} (${hex})`,
    });
  }
}

export function isR30xError(err: unknown, code?: R30xErrorCode): err is R30xError {
  return err instanceof R30xError && (code === undefined || err.code === code);
}
