/** Identifier checks shared by every vault store: ids end up in SQL parameters, AADs and logs. */
import { TallyboxError } from '../util/errors.js';

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

export function checkId(what: string, id: unknown): string {
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    throw new TallyboxError('INVALID_ID', `INVALID_ID: ${what} must be 1-128 characters of [A-Za-z0-9._:@-] starting with a letter or digit`, { field: what });
  }
  return id;
}
