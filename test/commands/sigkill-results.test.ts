/**
 * Issue 8 §2, second bullet: every accepted command ends in exactly one
 * result, whatever moment the agent is killed at.
 *
 * The built agent (`tallybox run`, with a vault and a pinned cloud key) runs
 * as a child process against an embedded broker; a cloud client streams
 * signed commands at it (upserts, OrgWithdraw with its purge, erasures,
 * roster syncs, config patches, pings) and the child is SIGKILLed at random
 * moments, 22 times, then started again. At the end every command the device
 * accepted (its journal in commands.db) has exactly one distinct result at
 * the cloud — completed, or INTERRUPTED with what was done — each signed by
 * the device; a result delivered twice (QoS 1 after a crash) is the same
 * bytes. Before: a command killed mid-handler kept finished=NULL and never
 * got any result.
 *
 * An OrgWithdraw that completes also erases the org's delivered journal rows
 * (their results can echo subject ids: src/link/commands/erasure.ts), so the
 * journal at the end is not the whole list of accepted commands: a counter
 * missing from it is accounted for only if some withdrawal was accepted in the run
 * (before it: its purge; after it: a purge resumed or retried); it must still have
 * exactly one distinct signed result.
 */
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { verifyCommandResult } from '../../src/link/commands/index.js';
import { ResultCode, pb, type CommandBodyProps } from '../../src/proto/index.js';
import { Sqlite } from '../../src/store/sqlite.js';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { AgentProcess, writeConfig } from '../helpers/agent-process.js';
import { freePort, sleep, waitUntil } from '../helpers/ports.js';

const KILLS = 22;
/** Stands for the result of a journal row a withdrawal erased (its kind is not known any more). */
const ERASED = '(erased from the journal by a withdrawal)';
/** The codes an accepted command ends with (a rejection before acceptance has others). */
const OUTCOMES: number[] = [ResultCode.RESULT_CODE_OK, ResultCode.RESULT_CODE_REFUSED, ResultCode.RESULT_CODE_FAILED, ResultCode.RESULT_CODE_INTERRUPTED];
const DEV = 'dev-kill';

describe('exactly one result per accepted command under SIGKILL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tbx-cmdkill-'));
  let broker: EmbeddedBroker | undefined;
  let sink: CloudSink | undefined;
  let agent: AgentProcess | undefined;
  afterAll(async () => {
    await agent?.kill();
    await sink?.close();
    await broker?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it(`${KILLS} kills at random points; every accepted command has one result`, async () => {
    broker = await startEmbeddedBroker();
    sink = await CloudSink.connect({ url: broker.url });
    const signer = new CommandSigner({ keyId: 'cloud-kill' });
    const dataDir = join(dir, 'data');
    const keys = await provisionKeyFiles({ kekPath: join(dir, 'keys', 'tallybox.kek'), dataDir });
    const apiPort = await freePort();
    const file = writeConfig(dir, {
      version: 1,
      device: { id: DEV, kind: 'sim', orgId: 'org-a' },
      region: 'sg',
      dataDir,
      broker: { url: broker.url, allowLoopback: true, keepaliveSec: 5, reconnectMinMs: 50, reconnectMaxMs: 300, connectTimeoutMs: 2000 },
      vault: { kekFile: keys.kekPath },
      cloud: { commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }] },
      punchApi: { enabled: true, port: apiPort },
      clock: { source: 'assume-synced' },
      outbox: { backlogRatePerSec: 0 },
      log: { level: 'error' },
    });
    agent = new AgentProcess(file, apiPort);
    const online = async () => {
      const r = await fetch(`http://127.0.0.1:${apiPort}/v1/state`);
      return ((await r.json()) as { online: boolean }).online;
    };

    let seed = 4242;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    let n = 0;
    const next = (): CommandBodyProps => {
      const i = n++;
      switch (i % 7) {
        case 0:
        case 1:
          return { subjectUpsert: { subjectId: `s-${i}`, displayName: `Person ${i}`, minor: false, credentials: [{ kind: 2, value: `02:00:00:00:${String(i % 100).padStart(2, '0')}:01` }] } };
        case 2:
          return { orgWithdraw: { reason: 'test' } };
        case 3:
          return { subjectErase: { subjectId: `s-${i - 3}` } };
        case 4:
          return { rosterSync: { subjectIds: [`s-${i - 4}`] } };
        case 5:
          return { configPatch: { retentionDays: 30 + (i % 300) } };
        default:
          return { ping: { note: `p-${i}` } };
      }
    };

    const withdrawals = new Set<number>(); // counters of the OrgWithdraw commands sent
    for (let k = 0; k <= KILLS; k++) {
      await agent.start();
      await waitUntil(online, 10_000, 'agent online');
      if (k === KILLS) break; // the last start only delivers
      const killAt = performance.now() + 150 + rand() * 1200;
      // Commands in a stream, a few in flight, so kills land in handlers, journal writes and handovers.
      while (performance.now() < killAt) {
        const body = next();
        await sink.sendCommand(signer, 'org-a', DEV, body);
        if (body.orgWithdraw) withdrawals.add(signer.lastCounter);
        await sleep(rand() * 60);
      }
      await agent.kill('SIGKILL');
    }

    // Read the journal through a separate connection while the agent runs (WAL).
    const journal = async () => {
      const db = await Sqlite.open(join(dataDir, 'commands.db'), { readonly: true });
      try {
        return await db.all<{ counter: number; kind: string; result: string | null }>('SELECT counter, kind, result FROM journal ORDER BY counter');
      } finally {
        await db.close();
      }
    };
    const resultsFor = (c: number) => sink!.rawResults().filter((r) => Number(r.result.counter) === c && r.result.code !== ResultCode.RESULT_CODE_REPLAYED);
    let accepted: Awaited<ReturnType<typeof journal>> = [];
    await waitUntil(
      async () => {
        accepted = await journal();
        return accepted.length > 0 && accepted.every((e) => e.result !== null && resultsFor(e.counter).length > 0);
      },
      30_000,
      'a result for every accepted command',
      100,
    );
    await sleep(500); // anything late would show up as a second result
    await agent.kill('SIGTERM');

    // Rows a withdrawal erased: those accepted before an accepted withdrawal (its purge), and also rows
    // accepted after one (a purge killed and resumed at the next start, or retried later, erases them too).
    const accWithdrawals = sink
      .rawResults()
      .filter((r) => withdrawals.has(Number(r.result.counter)) && OUTCOMES.includes(r.result.code))
      .map((r) => Number(r.result.counter));
    // Before a withdrawal or after one, every row can be gone: with one accepted, a missing row is accounted for.
    const erasable = accWithdrawals.length > 0;
    const inJournal = new Set(accepted.map((e) => e.counter));
    const erased = [...new Set(sink.rawResults().map((r) => Number(r.result.counter)))].filter((c) => c !== 0 && erasable && !inJournal.has(c) && resultsFor(c).some((r) => OUTCOMES.includes(r.result.code)));
    accepted = [...accepted, ...erased.map((counter) => ({ counter, kind: withdrawals.has(counter) ? 'orgWithdraw' : '(erased)', result: ERASED }))];

    const devKey = createPublicKey(keys.publicKeyPem);
    const interrupted: number[] = [];
    for (const e of accepted) {
      const got = resultsFor(e.counter);
      const distinct = new Set(got.map((r) => r.raw.toString('base64')));
      expect(distinct.size, `counter ${e.counter} (${e.kind}): ${[...got].map((r) => pb.ResultCode[r.result.code]).join(', ')}`).toBe(1);
      expect(verifyCommandResult(got[0]!.raw, devKey)).toBe(true);
      const code = got[0]!.result.code;
      expect(OUTCOMES).toContain(code);
      if (code === ResultCode.RESULT_CODE_INTERRUPTED) {
        interrupted.push(e.counter);
        expect(got[0]!.result.reason).toBe('interrupted');
        expect(got[0]!.result.detail).toMatch(e.result === ERASED ? /the \w+ command/ : new RegExp(`the ${e.kind} command`));
      }
    }
    // No result for a counter the device did not accept, except rejections (which change nothing).
    const acceptedSet = new Set(accepted.map((e) => e.counter));
    for (const r of sink.rawResults()) {
      const c = Number(r.result.counter);
      if (c !== 0 && !acceptedSet.has(c)) expect(r.result.code, `result for unaccepted counter ${c}`).not.toBe(ResultCode.RESULT_CODE_OK);
    }
    // eslint-disable-next-line no-console
    console.log(
      `command SIGKILL: ${KILLS} kills, ${n} commands sent, ${accepted.length} accepted (${erased.length} of them erased from the journal by a withdrawal), ${interrupted.length} answered INTERRUPTED, ${sink.rawResults().length} results received`,
    );
    expect(accepted.length).toBeGreaterThan(KILLS);
  }, 240_000);
});
