/**
 * The intake runs commands through the shared SerialQueue. close() while a
 * command is running waits for it (its result is handed over before the state
 * file closes); a command queued behind it is answered intake_closed, never
 * run; a failing handler does not stop the command after it.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Reason } from '../../src/link/commands/index.js';
import { ResultCode } from '../../src/proto/index.js';
import { bench, CMD_TOPIC, type Bench } from './helpers.js';

let b: Bench;
beforeEach(async () => {
  b = await bench();
});
afterEach(async () => {
  await b.cleanup();
});

describe('command intake queue', () => {
  it('close() while a handler runs: that command finishes and is handed over, the next is refused intake_closed', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let entered!: () => void;
    const running = new Promise<void>((r) => {
      entered = r;
    });
    b.handlers.impl.orgWithdraw = async () => {
      entered();
      await held;
      return { code: ResultCode.RESULT_CODE_OK };
    };
    const first = b.intake.handle(CMD_TOPIC, b.cmd({ orgWithdraw: {} }));
    const second = b.intake.handle(CMD_TOPIC, b.cmd({ subjectErase: { subjectId: 'subj-2' } }));
    await running;
    let closed = false;
    const closing = b.intake.close().then(() => {
      closed = true;
    });
    // close() is waiting on the running command: give it every chance to finish early.
    await new Promise((r) => setImmediate(r));
    expect(closed).toBe(false);
    release();
    await closing;
    expect((await first).code).toBe(ResultCode.RESULT_CODE_OK);
    expect(await second).toMatchObject({ code: ResultCode.RESULT_CODE_FAILED, reason: Reason.intakeClosed });
    // The running command's result was handed over (before the state file closed); the second never reached a handler.
    expect(b.published[0]?.result.code).toBe(ResultCode.RESULT_CODE_OK);
    expect(b.handlers.calls.map((c) => c.kind)).toEqual(['orgWithdraw']);
  });

  it('a handler that throws answers FAILED for its command only; the command queued behind it runs', async () => {
    b.handlers.impl.orgWithdraw = async () => {
      throw new Error('handler broke');
    };
    const bad = b.intake.handle(CMD_TOPIC, b.cmd({ orgWithdraw: {} }));
    const good = b.intake.handle(CMD_TOPIC, b.cmd({ subjectErase: { subjectId: 'subj-3' } }));
    expect((await bad).code).toBe(ResultCode.RESULT_CODE_FAILED);
    expect((await good).code).toBe(ResultCode.RESULT_CODE_OK);
    expect(b.handlers.calls.map((c) => c.kind)).toEqual(['orgWithdraw', 'subjectErase']);
  });

  it('resumeResults() queued before close() does not touch the closed state file', async () => {
    b.intake.resumeResults();
    await b.intake.close();
    expect(b.logs.filter((l) => l.event === 'command_journal_failed')).toEqual([]);
  });
});
