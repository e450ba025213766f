/**
 * The Printer contract's errors (firmware-bridge/devices.ts), made in one place so every printer
 * driver reports the same situation with the same code and the same machine-readable details. The
 * spool decides from the code alone whether a job is retried (UNREACHABLE, STOPPED), resumed or
 * given up, so a driver must not pick a code of its own for a situation another driver names.
 *
 * Messages name the printer by its description (configuration) and counts only: never a document,
 * a file name or a person.
 */
import { TallyboxError } from '../../src/util/errors.js';
import type { PrinterStatus } from '../devices.js';

export type PrinterErrorCode = 'PRINTER_UNREACHABLE' | 'PRINTER_STOPPED' | 'PRINTER_CLOSED' | 'PRINTER_REJECTED' | 'PRINTER_CANCELLED' | 'PRINTER_PROTOCOL';

export function printerError(code: PrinterErrorCode, message: string, details: Record<string, unknown> = {}): TallyboxError {
  return new TallyboxError(code, message, details);
}

/**
 * An I/O error on the link to the printer (a socket, a device file). Before the link was up the
 * printer took nothing: PRINTER_UNREACHABLE, the job can be sent again later. Once up, the printer
 * (or its cable) went away mid-conversation: PRINTER_CLOSED. The OS error code is kept as `errno`.
 */
export function linkError(errno: string, established: boolean, message: string, details: Record<string, unknown> = {}): TallyboxError {
  return printerError(established ? 'PRINTER_CLOSED' : 'PRINTER_UNREACHABLE', message, { ...details, errno });
}

/**
 * The printer says it takes no job now (stopped, or not accepting): PRINTER_STOPPED with its
 * state reasons in `reasons` (the spool shows them), raised before anything is sent so the job
 * stays queued for a retry.
 */
export function stoppedError(description: string, status: PrinterStatus, details: Record<string, unknown> = {}, note = ''): TallyboxError {
  return printerError('PRINTER_STOPPED', `${description} is ${status.state}${note}: ${status.reasons.join(', ') || 'no reason given'}`, { ...details, reasons: status.reasons });
}

/** The submission's signal aborted: PRINTER_CANCELLED, `when` saying how far the job got. */
export function cancelledError(when: string, details: Record<string, unknown> = {}): TallyboxError {
  return printerError('PRINTER_CANCELLED', `the job was cancelled ${when}`, details);
}
