/**
 * Runs async jobs one at a time, in order. Each store owns one SQLite
 * connection; a transaction must not interleave with other statements on it,
 * so every statement of a store goes through its queue.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(job: () => Promise<T>): Promise<T> {
    const next = this.tail.then(job, job);
    this.tail = next.catch(() => undefined);
    return next;
  }
}
