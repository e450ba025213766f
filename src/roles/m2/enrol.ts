/**
 * M2 face enrolment (after a SubjectUpsert with consent): the module takes
 * `captures` captures, the org's matcher averages them, checks liveness and
 * consistency and refuses a face already enrolled for another subject
 * (FACE_DUPLICATE); the template (in the org's rotated space) is sealed in
 * the vault, then joins the index. Re-enrolling replaces slot 0. One
 * enrolment at a time (the kit's serial queue).
 */
import type { FaceCapture } from '../../../firmware-bridge/devices.js';
import type { FaceModule } from '../../../firmware-bridge/devices.js';
import type { Logger } from '../../util/log.js';
import { assertBiometricConsent } from '../../vault/consent.js';
import { SerialQueue } from '../kit/serial-queue.js';
import { errorCode } from '../kit/supervisor.js';
import type { FaceIndex } from './face-index.js';
import type { M2Feedback } from './feedback.js';
import { M2Error, type M2EnrolResult, type M2Stats, type M2Vault } from './types.js';

export interface FaceEnrolmentOptions {
  module: FaceModule;
  vault: Pick<M2Vault, 'getSubject' | 'enrolTemplate'>;
  index: FaceIndex;
  feedback: M2Feedback;
  log: Logger;
  stats: M2Stats;
  captures: number;
  timeoutMs: number;
  locked(): boolean;
  /** Is the module there (ready or degraded)? */
  moduleUsable(): boolean;
  moduleStatus(): string;
  onStarted(e: { orgId: string; captures: number }): void;
  onEnrolled(r: M2EnrolResult): void;
}

export class FaceEnrolment {
  readonly #o: FaceEnrolmentOptions;
  readonly #queue = new SerialQueue();

  constructor(opts: FaceEnrolmentOptions) {
    this.#o = opts;
  }

  enrol(orgId: string, subjectId: string, opts: { captures?: number; timeoutMs?: number } = {}): Promise<M2EnrolResult> {
    return this.#queue.run(() => this.#enrolNow(orgId, subjectId, opts));
  }

  async #enrolNow(orgId: string, subjectId: string, opts: { captures?: number; timeoutMs?: number }): Promise<M2EnrolResult> {
    const o = this.#o;
    if (o.locked()) throw new M2Error('ROLE_LOCKED', 'the M2 role is locked after a tamper event; restart the agent');
    const subject = await o.vault.getSubject(orgId, subjectId);
    assertBiometricConsent({
      minor: subject.minor,
      biometricAtMs: subject.consents.biometric?.grantedAtMs ?? null,
      guardianAtMs: subject.consents.guardian?.grantedAtMs ?? null,
    });
    if (!o.moduleUsable() || o.module.status !== 'ready') throw new M2Error('MODULE_OFFLINE', `face module is ${o.moduleStatus()}`, { status: o.moduleStatus() });
    const matcher = await o.index.matcherFor(orgId);
    const captures = opts.captures ?? o.captures;
    o.feedback.show(true, 'Enrolment', 'Look at the camera');
    o.onStarted({ orgId, captures });
    let shots: FaceCapture[] = [];
    try {
      shots = await o.module.enrol({ captures, timeoutMs: opts.timeoutMs ?? o.timeoutMs });
      const { template, consistency } = matcher.prepareEnrolment(subjectId, shots);
      const bytes = new Uint8Array(template.buffer, template.byteOffset, template.byteLength);
      let recordId: string;
      try {
        ({ recordId } = await o.vault.enrolTemplate(orgId, subjectId, 'face', 0, bytes));
        if (o.locked() || !o.index.isCurrent(orgId, matcher)) throw new M2Error('ROLE_LOCKED', 'the face index was zeroised or erased during the enrolment');
        matcher.remove(subjectId);
        matcher.add(subjectId, template);
      } finally {
        template.fill(0);
      }
      o.stats.enrolments++;
      o.log.info({ event: 'm2_enrolled', orgId, consistency: Math.round(consistency * 1000) / 1000 }, 'face enrolled; template sealed in the vault');
      o.feedback.show(true, 'Enrolled', 'Thank you');
      const result = { orgId, subjectId, recordId, consistency };
      o.onEnrolled(result);
      return result;
    } catch (err) {
      o.stats.enrolFailures++;
      const code = errorCode(err);
      o.log.info({ event: 'm2_enrol_failed', orgId, code }, `face enrolment not done: ${code}`);
      o.feedback.show(false, 'Enrolment failed', code === 'FACE_DUPLICATE' ? 'Already enrolled' : 'Please try again');
      throw err;
    } finally {
      for (const s of shots) s.vector.fill(0);
    }
  }
}
