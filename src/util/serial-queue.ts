/**
 * Runs async jobs one at a time, in order. Each store owns one SQLite
 * connection; a transaction must not interleave with other statements on it,
 * so every statement of a store goes through its queue. Drivers use it the
 * same way for a half-duplex link (one exchange at a time).
 *
 * A job's error reaches the caller of run() and nowhere else: the next job
 * still runs.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(job: () => Promise<T>): Promise<T> {
    const next = this.tail.then(job, job);
    this.tail = next.catch(() => undefined); // the error is the caller's (returned below); the next job must still run
    return next;
  }

  /**
   * Resolves once every job queued so far has settled (never rejects: each
   * job's error went to its own caller). A close waits on this.
   */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}
