/**
 * Property-based: whatever arrives on the command topic — random bytes, random
 * mutations of a signed command — handle() resolves (never throws, never
 * crashes), no handler is called, and the persisted state does not change.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyCommandResult } from '../../src/link/commands/index.js';
import { ResultCode } from '../../src/proto/index.js';
import { bench, CMD_TOPIC, type Bench } from './helpers.js';

let b: Bench;
let accepted: Buffer;
let baseline: Awaited<ReturnType<Bench['state']>>;

beforeAll(async () => {
  // No rate limit here: every rejection's result is built and signed, so each one can be checked
  // (the limit itself is tested in amplification.test.ts).
  b = await bench({ rejections: { ratePerSec: 1e9, burst: 1e9, capacity: 1e9 } });
  accepted = b.cmd({ orgWithdraw: { reason: 'closed' } });
  expect((await b.intake.handle(CMD_TOPIC, accepted)).code).toBe(ResultCode.RESULT_CODE_OK);
  b.handlers.calls.length = 0;
  baseline = await b.state();
});
afterAll(() => b.cleanup());

type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; byte: number }
  | { op: 'insert'; at: number; byte: number }
  | { op: 'delete'; at: number }
  | { op: 'truncate'; at: number }
  | { op: 'append'; bytes: Uint8Array };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
);

function mutate(input: Uint8Array, ms: Mutation[]): Buffer {
  let a = Array.from(input);
  for (const m of ms) {
    const at = a.length === 0 ? 0 : 'at' in m ? m.at % a.length : 0;
    switch (m.op) {
      case 'flip':
        if (a.length) a[at] = a[at]! ^ (1 << m.bit);
        break;
      case 'set':
        if (a.length) a[at] = m.byte;
        break;
      case 'insert':
        a.splice(at, 0, m.byte);
        break;
      case 'delete':
        a.splice(at, 1);
        break;
      case 'truncate':
        a = a.slice(0, at);
        break;
      case 'append':
        a.push(...m.bytes);
        break;
    }
  }
  return Buffer.from(a);
}

const topicArb = fc.oneof({ weight: 4, arbitrary: fc.constant(CMD_TOPIC) }, { weight: 1, arbitrary: fc.string({ maxLength: 60 }) });

async function expectNothingHappened(topic: string, payload: Uint8Array): Promise<void> {
  const r = await b.intake.handle(topic, payload); // a rejection here would fail the property
  expect(r.code).not.toBe(ResultCode.RESULT_CODE_OK);
  expect(r.code).not.toBe(ResultCode.RESULT_CODE_FAILED);
  // Signed when it is sent; a message on anything but a cmd topic gets no result, so nothing is signed.
  if (topic === CMD_TOPIC) expect(verifyCommandResult(r, b.identity.publicKey)).toBe(true);
  else if (!/^tallybox\/v1\/[^/]+\/[^/]+\/cmd$/.test(topic)) expect(r.signature ?? null).toBeNull();
  expect(b.handlers.calls).toEqual([]);
  expect(await b.state()).toEqual(baseline);
}

describe('command intake under random input', () => {
  it('random bytes: no throw, no handler call, no state change', async () => {
    await fc.assert(
      fc.asyncProperty(topicArb, fc.uint8Array({ maxLength: 2048 }), async (topic, bytes) => expectNothingHappened(topic, bytes)),
      { numRuns: 1000 },
    );
  }, 20_000);

  it('random mutations of an accepted command: no throw, no handler call, no state change', async () => {
    await fc.assert(
      fc.asyncProperty(topicArb, fc.array(mutation, { minLength: 0, maxLength: 6 }), async (topic, ms) => expectNothingHappened(topic, mutate(accepted, ms))),
      { numRuns: 1000 },
    );
  }, 20_000);

  it('bit flips anywhere in a fresh, valid command are always rejected; the untouched command is then accepted', async () => {
    const fresh = b.cmd({ subjectErase: { subjectId: 'subj-fuzz' } });
    const flips = fc.array(fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }), { minLength: 1, maxLength: 4 });
    await fc.assert(
      fc.asyncProperty(flips, async (ms) => {
        const m = mutate(fresh, ms);
        fc.pre(!m.equals(fresh)); // an even number of flips of the same bit is no mutation
        await expectNothingHappened(CMD_TOPIC, m);
      }),
      { numRuns: 1000 },
    );
    // Nothing the fuzzer sent consumed the fresh command's counter or nonce.
    const r = await b.intake.handle(CMD_TOPIC, fresh);
    expect(r.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(b.handlers.calls.map((c) => c.kind)).toEqual(['subjectErase']);
  }, 20_000);
});
