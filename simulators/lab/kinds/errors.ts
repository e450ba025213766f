import { TallyboxError } from '../../../src/util/errors.js';

/** A person used a method this device has no peripheral for. */
export function methodUnavailable(device: string, method: string, has: readonly string[]): TallyboxError {
  return new TallyboxError('LAB_METHOD_UNAVAILABLE', `device ${device} has no peripheral for "${method}" (it takes: ${has.join(', ') || 'nothing'})`, { device, method });
}

/** The person lacks the trait (no finger, no card, no phone described in the lab file). */
export function traitMissing(person: string, what: string): TallyboxError {
  return new TallyboxError('LAB_PERSON_TRAIT_MISSING', `person ${person} has no ${what} in the lab file`, { person, what });
}

export function unknownPeripheral(device: string, name: string, has: readonly string[]): TallyboxError {
  return new TallyboxError('LAB_UNKNOWN_PERIPHERAL', `device ${device} has no peripheral "${name}" (it has: ${has.join(', ')})`, { device, peripheral: name });
}

/** Wait for `cond` (polled), false on timeout. */
export async function waitFor(cond: () => boolean, timeoutMs: number, everyMs = 10): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > end) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return true;
}
