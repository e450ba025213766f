import { describe, expect, it } from 'vitest';
import { SerialQueue } from './serial-queue.js';

/** A promise and the hands that settle it: each job waits on one, so the test decides when it ends. */
function gate(): { promise: Promise<void>; open: () => void; fail: (e: Error) => void } {
  let open!: () => void;
  let fail!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    open = res;
    fail = rej;
  });
  return { promise, open, fail };
}

describe('SerialQueue', () => {
  it('runs jobs one at a time, in the order they were queued', async () => {
    const q = new SerialQueue();
    const order: string[] = [];
    let running = 0;
    const gates = [gate(), gate(), gate()];
    const runs = gates.map((g, i) =>
      q.run(async () => {
        running++;
        expect(running).toBe(1);
        order.push(`start ${i}`);
        await g.promise;
        order.push(`end ${i}`);
        running--;
        return i;
      }),
    );
    // Released last-first: the order still follows the queue, not the release.
    gates[2]!.open();
    gates[1]!.open();
    gates[0]!.open();
    expect(await Promise.all(runs)).toEqual([0, 1, 2]);
    expect(order).toEqual(['start 0', 'end 0', 'start 1', 'end 1', 'start 2', 'end 2']);
  });

  it("gives a job's error to its caller only; the next job still runs", async () => {
    const q = new SerialQueue();
    const bad = q.run(async () => {
      throw Object.assign(new Error('boom'), { code: 'BOOM' });
    });
    const sync = q.run((() => {
      throw new Error('thrown before any await');
    }) as () => Promise<never>);
    const good = q.run(async () => 'after');
    await expect(bad).rejects.toMatchObject({ code: 'BOOM' });
    await expect(sync).rejects.toThrow('thrown before any await');
    expect(await good).toBe('after');
  });

  it('idle() waits for every job queued so far, and does not reject when one failed', async () => {
    const q = new SerialQueue();
    const g1 = gate();
    const g2 = gate();
    const done: number[] = [];
    const a = q.run(async () => {
      await g1.promise;
      done.push(1);
    });
    const b = q.run(async () => {
      await g2.promise;
      done.push(2);
    });
    b.catch(() => undefined); // its rejection is asserted below; idle() must not carry it
    let idle = false;
    const waiting = q.idle().then(() => {
      idle = true;
    });
    g1.open();
    await a;
    // Still busy with the second job: idle() has not resolved.
    await new Promise((r) => setImmediate(r));
    expect(idle).toBe(false);
    g2.fail(new Error('second failed'));
    await waiting;
    expect(idle).toBe(true);
    expect(done).toEqual([1]);
    await expect(b).rejects.toThrow('second failed');
  });

  it('idle() on an empty queue resolves, and a job queued after it is not waited for', async () => {
    const q = new SerialQueue();
    await q.idle();
    const later = gate();
    const waiting = q.idle();
    const job = q.run(() => later.promise);
    await waiting; // resolves although the job queued after it is still running
    later.open();
    await job;
  });
});
