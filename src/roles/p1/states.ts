/**
 * The print job state machine, in one place. Every state change of the spool
 * goes through `assertTransition`; an illegal one is a bug and throws
 * P1_BAD_TRANSITION (naming both states), so it is found by a test instead of
 * printing a job twice or losing one.
 *
 *   queued → fetching → ready → sending → sent → confirmed
 *      └────(inline)────↗   ↑       │        ↘ uncertain ─(ReprintJob)→ ready
 *                           └(retry: printer offline, nothing accepted)
 *   any state before an end → failed | cancelled;  sending/sent → uncertain
 */
import { TallyboxError } from '../../util/errors.js';
import { PrintJobState } from '../../proto/index.js';

/**
 * The reason of a job's later statuses: signed results under the PrintJob's own
 * counter, so a cloud waiting for the command's answer must skip them.
 */
export const PRINT_JOB_STATUS_REASON = 'print_job_status';

export type JobState = 'queued' | 'fetching' | 'ready' | 'sending' | 'sent' | 'confirmed' | 'failed' | 'cancelled' | 'uncertain';

export const END_STATES: ReadonlySet<JobState> = new Set(['confirmed', 'failed', 'cancelled']);

export const JOB_TRANSITIONS: Readonly<Record<JobState, readonly JobState[]>> = {
  // Inline documents are spooled at intake: queued → ready directly.
  queued: ['fetching', 'ready', 'failed', 'cancelled'],
  // A fetch restarted after a crash or a network error stays in fetching.
  fetching: ['fetching', 'ready', 'failed', 'cancelled'],
  ready: ['sending', 'failed', 'cancelled'],
  // back to ready: the printer refused before taking any responsibility (offline, busy, out of paper).
  sending: ['ready', 'sent', 'uncertain', 'failed', 'cancelled'],
  sent: ['confirmed', 'uncertain', 'failed', 'cancelled'],
  // Only a signed ReprintJob (→ ready) or CancelJob leaves uncertain; or the printer's later word.
  uncertain: ['ready', 'confirmed', 'failed', 'cancelled'],
  confirmed: [],
  failed: [],
  cancelled: [],
};

export function assertTransition(jobId: string, from: JobState, to: JobState): void {
  if (!JOB_TRANSITIONS[from]?.includes(to)) {
    throw new TallyboxError('P1_BAD_TRANSITION', `P1_BAD_TRANSITION: print job ${jobId}: ${from} → ${to} is not a transition of the job state machine`, { from, to });
  }
}

export function isJobState(s: string): s is JobState {
  return Object.hasOwn(JOB_TRANSITIONS, s);
}

const PROTO_STATE: Record<JobState, PrintJobState> = {
  queued: PrintJobState.PRINT_JOB_STATE_QUEUED,
  fetching: PrintJobState.PRINT_JOB_STATE_FETCHING,
  ready: PrintJobState.PRINT_JOB_STATE_READY,
  sending: PrintJobState.PRINT_JOB_STATE_SENDING,
  sent: PrintJobState.PRINT_JOB_STATE_SENT,
  confirmed: PrintJobState.PRINT_JOB_STATE_CONFIRMED,
  failed: PrintJobState.PRINT_JOB_STATE_FAILED,
  cancelled: PrintJobState.PRINT_JOB_STATE_CANCELLED,
  uncertain: PrintJobState.PRINT_JOB_STATE_UNCERTAIN,
};

export function protoState(s: JobState): PrintJobState {
  return PROTO_STATE[s];
}
