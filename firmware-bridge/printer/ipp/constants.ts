/** IPP operation ids, status codes and enum values (RFC 8011 and the IANA IPP registry) that Tallybox uses. */

export const OP = {
  'Print-Job': 0x0002,
  'Print-URI': 0x0003,
  'Validate-Job': 0x0004,
  'Create-Job': 0x0005,
  'Send-Document': 0x0006,
  'Send-URI': 0x0007,
  'Cancel-Job': 0x0008,
  'Get-Job-Attributes': 0x0009,
  'Get-Jobs': 0x000a,
  'Get-Printer-Attributes': 0x000b,
  'Hold-Job': 0x000c,
  'Release-Job': 0x000d,
  'Restart-Job': 0x000e,
  'Pause-Printer': 0x0010,
  'Resume-Printer': 0x0011,
  'Purge-Jobs': 0x0012,
} as const;
export type OperationName = keyof typeof OP;

export const STATUS = {
  'successful-ok': 0x0000,
  'successful-ok-ignored-or-substituted-attributes': 0x0001,
  'successful-ok-conflicting-attributes': 0x0002,
  'client-error-bad-request': 0x0400,
  'client-error-forbidden': 0x0401,
  'client-error-not-authenticated': 0x0402,
  'client-error-not-authorized': 0x0403,
  'client-error-not-possible': 0x0404,
  'client-error-timeout': 0x0405,
  'client-error-not-found': 0x0406,
  'client-error-gone': 0x0407,
  'client-error-request-entity-too-large': 0x0408,
  'client-error-request-value-too-long': 0x0409,
  'client-error-document-format-not-supported': 0x040a,
  'client-error-attributes-or-values-not-supported': 0x040b,
  'client-error-uri-scheme-not-supported': 0x040c,
  'client-error-charset-not-supported': 0x040d,
  'client-error-conflicting-attributes': 0x040e,
  'client-error-compression-not-supported': 0x040f,
  'client-error-compression-error': 0x0410,
  'client-error-document-format-error': 0x0411,
  'client-error-document-access-error': 0x0412,
  'server-error-internal-error': 0x0500,
  'server-error-operation-not-supported': 0x0501,
  'server-error-service-unavailable': 0x0502,
  'server-error-version-not-supported': 0x0503,
  'server-error-device-error': 0x0504,
  'server-error-temporary-error': 0x0505,
  'server-error-not-accepting-jobs': 0x0506,
  'server-error-busy': 0x0507,
  'server-error-job-canceled': 0x0508,
  'server-error-multiple-document-jobs-not-supported': 0x0509,
} as const;
export type StatusName = keyof typeof STATUS;

const STATUS_NAMES = new Map<number, string>(Object.entries(STATUS).map(([k, v]) => [v, k]));

/** The keyword of a status code; unknown codes by class (RFC 8011 §B: 0x04xx client, 0x05xx server). */
export function statusName(code: number): string {
  const known = STATUS_NAMES.get(code);
  if (known) return known;
  const hex = `0x${code.toString(16).padStart(4, '0')}`;
  if (code < 0x0100) return `successful-${hex}`;
  if (code >= 0x0400 && code < 0x0500) return `client-error-${hex}`;
  if (code >= 0x0500 && code < 0x0600) return `server-error-${hex}`;
  return `status-${hex}`;
}

export function isSuccess(code: number): boolean {
  return code < 0x0100;
}

/** printer-state (RFC 8011 §5.4.11). */
export const PRINTER_STATE = { idle: 3, processing: 4, stopped: 5 } as const;

/** job-state (RFC 8011 §5.3.7). */
export const JOB_STATE = {
  pending: 3,
  'pending-held': 4,
  processing: 5,
  'processing-stopped': 6,
  canceled: 7,
  aborted: 8,
  completed: 9,
} as const;
export type JobStateName = keyof typeof JOB_STATE;

export const JOB_STATE_NAMES = new Map<number, JobStateName>(Object.entries(JOB_STATE).map(([k, v]) => [v, k as JobStateName]));

/** Terminal job states: the printer will not change them any more. */
export function isTerminalJobState(state: number): boolean {
  return state === JOB_STATE.canceled || state === JOB_STATE.aborted || state === JOB_STATE.completed;
}
