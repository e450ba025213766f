/**
 * Consent rules (privacy rule 5): a biometric enrolment needs the subject's
 * recorded consent; a subject aged 14 or under also needs a guardian's.
 * Refusals are typed errors with a machine-readable reason that a command
 * handler passes straight into CommandResult.reason (RESULT_CODE_REFUSED).
 */
import { TallyboxError } from '../util/errors.js';

/** Subjects at or under this age need a guardian's consent as well. */
export const GUARDIAN_CONSENT_MAX_AGE = 14;

export type ConsentKind = 'biometric' | 'guardian';
export const CONSENT_KINDS: readonly ConsentKind[] = ['biometric', 'guardian'];

export type ConsentRefusalReason = 'consent_missing' | 'guardian_consent_missing';

export class ConsentRefusedError extends TallyboxError {
  readonly reason: ConsentRefusalReason;

  constructor(opts: { reason: ConsentRefusalReason; recordId?: string }) {
    const why = opts.reason === 'consent_missing' ? 'the subject has no recorded consent to biometric processing' : `the subject is marked ${GUARDIAN_CONSENT_MAX_AGE} or under and has no recorded guardian consent`;
    super('CONSENT_REFUSED', `CONSENT_REFUSED (${opts.reason}): biometric enrolment refused: ${why}`, { reason: opts.reason });
    this.name = 'ConsentRefusedError';
    this.reason = opts.reason;
  }
}

export interface ConsentState {
  /** Aged 14 or under. */
  minor: boolean;
  biometricAtMs: number | null;
  guardianAtMs: number | null;
}

/** Throws ConsentRefusedError unless a biometric enrolment is allowed. */
export function assertBiometricConsent(state: ConsentState): void {
  if (state.biometricAtMs === null) throw new ConsentRefusedError({ reason: 'consent_missing' });
  if (state.minor && state.guardianAtMs === null) throw new ConsentRefusedError({ reason: 'guardian_consent_missing' });
}
