/**
 * Test bench for the command intake: a real SQLite state file in a temp dir,
 * the real cloud CommandSigner, a real Ed25519 device identity, and handlers
 * that only record what they were called with.
 */
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { CommandIntake, type CommandContext, type CommandHandlers, type CommandIntakeOptions, type HandlerOutcome } from '../../src/link/commands/index.js';
import { topic } from '../../src/link/topics.js';
import { ResultCode, type CommandBodyProps, type CommandResultProps } from '../../src/proto/index.js';
import { Sqlite } from '../../src/store/sqlite.js';
import { silentLogger, type Logger } from '../../src/util/log.js';

export const DEVICE = 'dev-1';
export const ORG = 'org-a';
export const CMD_TOPIC = topic(ORG, DEVICE, 'cmd');

export interface Call {
  kind: keyof CommandHandlers;
  orgId: string;
  cmd: unknown;
  ctx: CommandContext;
}

/** Handlers that record their calls; `impl` can replace one to inspect or fail. */
export class RecordingHandlers implements CommandHandlers {
  readonly calls: Call[] = [];
  impl: Partial<Record<keyof CommandHandlers, (orgId: string, cmd: unknown, ctx: CommandContext) => Promise<HandlerOutcome>>> = {};

  private async rec(kind: keyof CommandHandlers, orgId: string, cmd: unknown, ctx: CommandContext): Promise<HandlerOutcome> {
    this.calls.push({ kind, orgId, cmd, ctx });
    const f = this.impl[kind];
    return f ? f(orgId, cmd, ctx) : { code: ResultCode.RESULT_CODE_OK };
  }
  subjectUpsert: CommandHandlers['subjectUpsert'] = (o, c, x) => this.rec('subjectUpsert', o, c, x);
  subjectErase: CommandHandlers['subjectErase'] = (o, c, x) => this.rec('subjectErase', o, c, x);
  orgWithdraw: CommandHandlers['orgWithdraw'] = (o, c, x) => this.rec('orgWithdraw', o, c, x);
  rosterSync: CommandHandlers['rosterSync'] = (o, c, x) => this.rec('rosterSync', o, c, x);
  configPatch: CommandHandlers['configPatch'] = (o, c, x) => this.rec('configPatch', o, c, x);
}

/** Logger that keeps every line's fields (to check what rejections log). */
export function recordingLogger(lines: Array<Record<string, unknown>>): Logger {
  const mk = (level: string) => (a: string | Record<string, unknown>, msg?: string) => void lines.push({ level, ...(typeof a === 'string' ? { msg: a } : { ...a, msg }) });
  const l: Logger = {
    level: 'trace',
    trace: mk('trace'),
    debug: mk('debug'),
    info: mk('info'),
    warn: mk('warn'),
    error: mk('error'),
    fatal: mk('fatal'),
    child: () => l,
  };
  return l;
}

export interface Bench {
  dir: string;
  dbPath: string;
  signer: CommandSigner;
  identity: { publicKey: KeyObject; privateKey: KeyObject; keyId: string };
  handlers: RecordingHandlers;
  published: Array<{ orgId: string; result: CommandResultProps }>;
  logs: Array<Record<string, unknown>>;
  intake: CommandIntake;
  /** (Re)open the intake on the same state file, e.g. after a simulated restart. */
  reopen(extra?: Partial<CommandIntakeOptions>): Promise<CommandIntake>;
  /** A valid, signed command (fresh nonce, next counter) for this device and org. */
  cmd(body?: CommandBodyProps, ttlMs?: number): Buffer;
  /** Persisted state read through a separate connection to the file. */
  state(): Promise<{ lastCounter: number; nonces: number; journal: number }>;
  /** Forget the handler calls, published results and log lines so far (a test's checks start after its setup). */
  forget(): void;
  cleanup(): Promise<void>;
}

export async function bench(extra: Partial<CommandIntakeOptions> = {}): Promise<Bench> {
  const dir = await mkdtemp(join(tmpdir(), 'tbx-cmd-'));
  const dbPath = join(dir, 'state', 'commands.db');
  const signer = new CommandSigner({ keyId: 'cloud-1' });
  const kp = generateKeyPairSync('ed25519');
  const identity = { ...kp, keyId: 'dev-1-id-1' };
  const handlers = new RecordingHandlers();
  const published: Bench['published'] = [];
  const logs: Bench['logs'] = [];
  const open = (more: Partial<CommandIntakeOptions> = {}) =>
    CommandIntake.open({
      dbPath,
      deviceId: DEVICE,
      trustedKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }],
      handlers,
      publishResult: async (orgId, result) => void published.push({ orgId, result }),
      signResult: (bytes) => sign(null, bytes, identity.privateKey),
      resultKeyId: identity.keyId,
      logger: recordingLogger(logs),
      ...extra,
      ...more,
    });
  const b: Bench = {
    dir,
    dbPath,
    signer,
    identity,
    handlers,
    published,
    logs,
    intake: await open(),
    async reopen(more) {
      await b.intake.close();
      b.intake = await open(more);
      return b.intake;
    },
    cmd(body = { subjectErase: { subjectId: 'subj-1' } }, ttlMs) {
      return signer.sign({ deviceId: DEVICE, orgId: ORG, ...body }, ttlMs);
    },
    async state() {
      const db = await Sqlite.open(dbPath, { readonly: true });
      try {
        const c = await db.get<{ last_counter: number }>('SELECT last_counter FROM intake_state');
        const n = await db.get<{ n: number }>('SELECT count(*) AS n FROM nonces');
        const j = await db.get<{ n: number }>('SELECT count(*) AS n FROM journal');
        return { lastCounter: c?.last_counter ?? 0, nonces: n?.n ?? 0, journal: j?.n ?? 0 };
      } finally {
        await db.close();
      }
    },
    forget() {
      handlers.calls.length = 0;
      published.length = 0;
      logs.length = 0;
    },
    async cleanup() {
      await b.intake.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
  return b;
}

export { silentLogger };
