import { sleep } from '../../simulators/lib/ports.js';

export { freePort, sleep } from '../../simulators/lib/ports.js';

/** Poll `cond` every `everyMs` until it is true or `timeoutMs` passes. */
export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string, everyMs = 25): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
