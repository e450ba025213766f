/**
 * Wait `ms`, or less when the signal aborts: a driver between polls or retries must honour a
 * cancel at once. Never rejects; the caller checks `signal.aborted` afterwards and says what was
 * cancelled (its own error, with its own details).
 */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
