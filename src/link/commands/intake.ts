/**
 * Signed-command intake: the one door through which the cloud changes a device.
 *
 * A command is a SignedCommand (proto/tallybox/v1/command.proto): a serialised
 * CommandBody, an Ed25519 signature over "tallybox.v1.SignedCommand\0" + body
 * by one of the cloud keys pinned in the config, and the id of that key.
 *
 * Checks, in this order (first failure wins; each a ResultCode + `reason`, see
 * reasons.ts): size → decode/shape → key id → signature → device → topic →
 * issued-at → expiry/TTL → nonce shape → nonce replay → counter → command
 * present. A command that fails any check changes nothing and its handler is
 * never called. A command that passes is ACCEPTED: its counter and nonce are
 * written in one transaction (synchronous=FULL) before its handler runs, so a
 * command can take effect at most once even across a power cut mid-handler.
 *
 * With an `orgPolicy`, an authentic command for an organisation the device
 * does not serve is refused (REFUSED org_not_served) before it is accepted:
 * nothing changes. OrgWithdraw is also allowed for an organisation that is no
 * longer served but whose data is still held; ServedOrgsSet only from the
 * organisation operating the device.
 *
 * Commands are processed one at a time, in arrival order. handle() never
 * throws: every input, however broken, ends as a CommandResult that is
 * returned. Two ways out:
 * - an ACCEPTED command's result is signed, written into its journal row with
 *   its outcome (one transaction), then handed to `publishResult` (durable);
 *   after a crash, open() queues results not yet handed over and gives every
 *   command that never finished an INTERRUPTED result (exactly one result per
 *   accepted command);
 * - a REJECTED message changed nothing; its result goes through the
 *   RejectionGate (rate-limited, only to served orgs, in memory, bounded) and
 *   is signed only if the gate lets it through. A rejection of an authentic
 *   message with the same bytes and the same verdict as before reuses the
 *   result signed then (a retained replay costs no new signature), and a
 *   replayed command's result names the counter it was first accepted under.
 * Nothing personal is logged: rejections log the code, the reason and the
 * counter; handler failures log the error's code only.
 */
import { createHash, verify as edVerify, type KeyObject } from 'node:crypto';
import {
  pb,
  ResultCode,
  type CancelJob,
  type CommandBody,
  type CommandResultProps,
  type ConfigPatch,
  type DeviceDecommission,
  type IncidentAck,
  type OrgWithdraw,
  type PrintJob,
  type PrintJobStatusProps,
  type ReprintJob,
  type ServedOrgsSet,
  type SignedCommand,
  type RosterSync,
  type SubjectErase,
  type SubjectUpsert,
  type WifiEnrolmentOutcomeProps,
} from '../../proto/index.js';
import { SerialQueue } from '../../util/serial-queue.js';
import { TallyboxError } from '../../util/errors.js';
import type { Logger } from '../../util/log.js';
import { parseTopic } from '../topics.js';
import { Reason } from './reasons.js';
import { ed25519PublicKey, resultSigningBytes } from './result.js';
import { RejectionGate, type RejectionGateOptions, type RejectionGateStats } from './rejection-gate.js';
import { ReplayStore, type JournalEntry } from './store.js';

/** Domain prefix of the cloud's command signature (same bytes as simulators/cloud/signer.ts). */
export const COMMAND_SIGNING_DOMAIN = Buffer.from('tallybox.v1.SignedCommand\0', 'latin1');

export const DEFAULT_MAX_BYTES = 64 * 1024;
export const DEFAULT_MAX_SKEW_MS = 5 * 60_000;
export const DEFAULT_MAX_TTL_MS = 24 * 60 * 60_000;
export const NONCE_BYTES = 16;
const SIGNATURE_BYTES = 64;

export interface HandlerOutcome {
  code: ResultCode;
  reason?: string;
  detail?: string;
  /** Erasure commands: the SignedErasureReceipt as UTF-8 JSON. */
  receipt?: Uint8Array;
  /** ServedOrgsSet: the list now in force. */
  servedOrgs?: { served: readonly string[]; retired: readonly string[] };
  /** C1 (issue 11): an enrolment window's state, and who needs re-enrolment (opaque subject ids). */
  wifiEnrolment?: WifiEnrolmentOutcomeProps;
  wifiReenrolment?: { subjectIds: readonly string[] };
  /** Print commands: the job's status (never content, file or user names). */
  printJobStatus?: PrintJobStatusProps;
}

export interface CommandContext {
  counter: number;
  nonce: Uint8Array;
  issuedAtMs: number;
  keyId: string;
  /** Added: the command's expiry (ms since epoch). */
  expiresAtMs: number;
}

export interface CommandHandlers {
  subjectUpsert(orgId: string, cmd: SubjectUpsert, ctx: CommandContext): Promise<HandlerOutcome>;
  subjectErase(orgId: string, cmd: SubjectErase, ctx: CommandContext): Promise<HandlerOutcome>;
  orgWithdraw(orgId: string, cmd: OrgWithdraw, ctx: CommandContext): Promise<HandlerOutcome>;
  rosterSync(orgId: string, cmd: RosterSync, ctx: CommandContext): Promise<HandlerOutcome>;
  configPatch(orgId: string, cmd: ConfigPatch, ctx: CommandContext): Promise<HandlerOutcome>;
  /** Absent: ServedOrgsSet is answered UNKNOWN_COMMAND (the device cannot change its list). */
  servedOrgsSet?(orgId: string, cmd: ServedOrgsSet, ctx: CommandContext): Promise<HandlerOutcome>;
  /** Absent: DeviceDecommission / IncidentAck are answered UNKNOWN_COMMAND (src/decommission, src/incident). */
  deviceDecommission?(orgId: string, cmd: DeviceDecommission, ctx: CommandContext): Promise<HandlerOutcome>;
  incidentAck?(orgId: string, cmd: IncidentAck, ctx: CommandContext): Promise<HandlerOutcome>;
  /** P1 print box (absent elsewhere: answered UNKNOWN_COMMAND). */
  printJob?(orgId: string, cmd: PrintJob, ctx: CommandContext): Promise<HandlerOutcome>;
  cancelJob?(orgId: string, cmd: CancelJob, ctx: CommandContext): Promise<HandlerOutcome>;
  reprintJob?(orgId: string, cmd: ReprintJob, ctx: CommandContext): Promise<HandlerOutcome>;
}

/** Which organisations commands may address (src/agent/served-orgs.ts). */
export interface OrgPolicy {
  /** Commands, and results of rejections, for served organisations only. */
  serves(orgId: string): boolean;
  /** Served, or no longer served with data still held: OrgWithdraw may erase it. */
  holds(orgId: string): boolean;
  /** The organisation operating the device: the only one that may send ServedOrgsSet. */
  operatorOrgId: string;
}

export interface TrustedKey {
  id: string;
  /** Raw 32-byte Ed25519 public key, base64. */
  publicKey: string;
}

export interface CommandIntakeOptions {
  /** The intake's own SQLite file (counter, nonces, journal). Its directory is created. */
  dbPath: string;
  deviceId: string;
  /** Pinned cloud keys; a command names the one that signed it by key_id. */
  trustedKeys: TrustedKey[];
  handlers: CommandHandlers;
  /**
   * Deliver an accepted command's result (tallybox/v1/{orgId}/{device}/result):
   * resolves once it is durably queued. Errors are logged, never thrown, and
   * the handover is retried at the next open() or resumeResults().
   */
  publishResult: (orgId: string, result: CommandResultProps) => Promise<void>;
  /**
   * Send a rejection's result now, without writing it anywhere; rejects when
   * it cannot be sent (offline). Default: publishResult.
   */
  publishRejection?: (orgId: string, result: CommandResultProps) => Promise<void>;
  /** Rate limit and queue bound of rejection results (see rejection-gate.ts). */
  rejections?: Pick<RejectionGateOptions, 'ratePerSec' | 'burst' | 'capacity' | 'mono' | 'summaryEveryMs'>;
  /** Served organisations. Absent: every organisation is served (tests, tools). */
  orgPolicy?: OrgPolicy;
  /**
   * What is known to have been done by a command the agent was killed during
   * (called by open() once per such command); its `detail` goes into the
   * INTERRUPTED result. Default: "effect unknown".
   */
  describeInterrupted?: (entry: JournalEntry) => string | Promise<string>;
  /**
   * Device identity (Ed25519) signer. It is given the exact bytes to sign —
   * RESULT_SIGNING_DOMAIN ("tallybox.v1.CommandResult\0") + the CommandResult
   * encoded with its signature field empty — and returns the 64-byte signature.
   */
  signResult?: (bytes: Uint8Array) => Uint8Array;
  /** Device identity key id, copied into CommandResult.key_id. */
  resultKeyId?: string;
  logger: Logger;
  now?: () => number;
  /** Largest accepted payload (default 64 KiB). */
  maxBytes?: number;
  /** How far issued-at may be in the future (clock skew; default 5 min). */
  maxSkewMs?: number;
  /** Longest allowed expires-at − issued-at (default 24 h). */
  maxTtlMs?: number;
}

export type CommandKind = NonNullable<CommandBody['command']>;

interface Rejection {
  ok: false;
  code: ResultCode;
  reason: string;
  detail: string;
  /** A replay: the counter the same command was first accepted under. */
  firstCounter?: number;
}

interface Verified {
  ok: true;
  orgId: string;
  body: CommandBody;
  keyId: string;
}

/** What process() decided: an accepted command (durable result) or a rejection (gate). */
type Decision = { accepted: true; orgId: string; result: CommandResultProps; counter: number } | { accepted: false; route: string | undefined; result: CommandResultProps; cacheKey: string | undefined };

/** Authentic rejections remembered, so an identical replay reuses its signed result. */
const REPLAY_CACHE = 256;

function reject(code: ResultCode, reason: string, detail: string): Rejection {
  return { ok: false, code, reason, detail };
}

const ERROR_CODE_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const KNOWN_CODES = new Set<number>(Object.values(ResultCode).filter((v): v is number => typeof v === 'number'));

function codeName(code: ResultCode): string {
  return (pb.ResultCode as unknown as Record<number, string>)[code] ?? String(code);
}

export class CommandIntake {
  /** One command (or handover) at a time: a result is never queued twice by two handovers. */
  private readonly queue = new SerialQueue();
  private closed = false;
  private readonly gate: RejectionGate;
  private readonly signedRejections = new Map<string, CommandResultProps>();

  private constructor(
    private readonly store: ReplayStore,
    private readonly keys: ReadonlyMap<string, KeyObject>,
    private readonly opts: CommandIntakeOptions,
    private readonly now: () => number,
    private readonly maxBytes: number,
    private readonly maxSkewMs: number,
    private readonly maxTtlMs: number,
    /** Commands accepted before the last shutdown whose handler never finished (power loss). */
    readonly interruptedAtOpen: readonly JournalEntry[],
  ) {
    this.gate = new RejectionGate({
      ...opts.rejections,
      send: opts.publishRejection ?? opts.publishResult,
      logger: opts.logger,
    });
  }

  /**
   * Open the intake's state file and pin the cloud keys. Throws CONFIG_INVALID
   * on a bad key or device id, and storage errors as the store raises them.
   */
  static async open(opts: CommandIntakeOptions): Promise<CommandIntake> {
    if (typeof opts.deviceId !== 'string' || opts.deviceId === '' || opts.deviceId.includes('/')) {
      throw new TallyboxError('CONFIG_INVALID', `command intake needs a device id without '/', got ${JSON.stringify(opts.deviceId)}`, { key: 'deviceId' });
    }
    if (!Array.isArray(opts.trustedKeys) || opts.trustedKeys.length === 0) {
      throw new TallyboxError('CONFIG_INVALID', 'no trusted cloud command key is pinned (trustedKeys is empty)', { key: 'trustedKeys' });
    }
    const keys = new Map<string, KeyObject>();
    for (const [i, k] of opts.trustedKeys.entries()) {
      if (typeof k.id !== 'string' || k.id === '') throw new TallyboxError('CONFIG_INVALID', `trustedKeys[${i}].id is empty`, { key: `trustedKeys[${i}].id` });
      if (keys.has(k.id)) throw new TallyboxError('CONFIG_INVALID', `trustedKeys[${i}].id ${JSON.stringify(k.id)} is pinned twice`, { key: `trustedKeys[${i}].id` });
      const raw = typeof k.publicKey === 'string' && /^[A-Za-z0-9+/]+={0,2}$/.test(k.publicKey) ? Buffer.from(k.publicKey, 'base64') : Buffer.alloc(0);
      if (raw.length !== 32) {
        throw new TallyboxError('CONFIG_INVALID', `trustedKeys[${i}].publicKey must be a raw 32-byte Ed25519 key in base64`, { key: `trustedKeys[${i}].publicKey` });
      }
      keys.set(k.id, ed25519PublicKey(raw));
    }
    const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    const maxSkewMs = opts.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
    const maxTtlMs = opts.maxTtlMs ?? DEFAULT_MAX_TTL_MS;
    for (const [name, v] of [
      ['maxBytes', maxBytes],
      ['maxSkewMs', maxSkewMs],
      ['maxTtlMs', maxTtlMs],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new TallyboxError('CONFIG_INVALID', `${name} must be a non-negative integer, got ${v}`, { key: name });
    }
    const store = await ReplayStore.open(opts.dbPath);
    let intake: CommandIntake;
    try {
      const interrupted = await store.unfinished();
      intake = new CommandIntake(store, keys, opts, opts.now ?? Date.now, maxBytes, maxSkewMs, maxTtlMs, interrupted);
      if (interrupted.length > 0) {
        opts.logger.warn({ event: 'command_interrupted', counters: interrupted.map((e) => e.counter), kinds: interrupted.map((e) => e.kind) }, 'commands accepted before the last shutdown did not finish');
      }
      for (const e of interrupted) await intake.finishInterrupted(e);
    } catch (err) {
      await store.close().catch(() => undefined);
      throw err;
    }
    await intake.handOver();
    return intake;
  }

  /**
   * A command accepted before the last shutdown never finished: decide its
   * one result now — INTERRUPTED, with what is known to have been done — and
   * journal it, before anything is handed over.
   */
  private async finishInterrupted(e: JournalEntry): Promise<void> {
    let detail = `the agent stopped while the ${e.kind} command was running; what it did is not known`;
    try {
      if (this.opts.describeInterrupted) detail = await this.opts.describeInterrupted(e);
    } catch (err) {
      this.opts.logger.warn({ event: 'command_interrupted_describe_failed', counter: e.counter, errorCode: errCode(err) }, 'could not tell what the interrupted command did');
    }
    const nonce = await this.store.nonceOf(e.counter);
    const result = this.buildResult({ code: ResultCode.RESULT_CODE_INTERRUPTED, reason: Reason.interrupted, detail }, e.counter, nonce);
    this.sign(result);
    await this.store.finish(e.counter, result.code ?? 0, Reason.interrupted, this.now(), resultToJson(result));
    this.opts.logger.warn({ event: 'command_done', counter: e.counter, kind: e.kind, code: codeName(ResultCode.RESULT_CODE_INTERRUPTED), reason: Reason.interrupted }, 'interrupted command answered');
  }

  /**
   * Hand every decided result not yet queued to publishResult, oldest first.
   * Called by open(), by resumeResults(), and after each accepted command.
   */
  private async handOver(): Promise<void> {
    let pending: JournalEntry[];
    try {
      pending = await this.store.unqueued();
    } catch (err) {
      this.opts.logger.warn({ event: 'command_journal_failed', errorCode: errCode(err) }, 'could not read results waiting for delivery');
      return;
    }
    for (const e of pending) {
      if (e.result === null) continue;
      try {
        await this.opts.publishResult(e.orgId, resultFromJson(e.result));
      } catch (err) {
        this.opts.logger.warn({ event: 'command_result_publish_failed', counter: e.counter, errorCode: errCode(err) }, 'command result could not be queued; retried later');
        return;
      }
      try {
        await this.store.markQueued(e.counter);
      } catch (err) {
        // At worst the same result (same bytes) is queued once more after a restart.
        this.opts.logger.warn({ event: 'command_journal_failed', counter: e.counter, errorCode: errCode(err) }, 'could not note the result as queued');
      }
    }
  }

  /**
   * The link is up: send held rejection results, and hand over any accepted
   * command's result whose handover failed before (e.g. the disk was full).
   */
  resumeResults(): void {
    this.gate.resume();
    void this.queue
      .run(async () => {
        if (!this.closed) await this.handOver();
      })
      // handOver() logs and catches its own failures; only the logger itself could throw here.
      .catch((err: unknown) => this.opts.logger.warn({ event: 'command_journal_failed', errorCode: errCode(err) }, 'result handover failed; retried later'));
  }

  /** Counts of rejection results sent, rate-limited, unrouted, dropped; how many are held. */
  rejectionStats(): RejectionGateStats {
    return this.gate.stats();
  }

  /** The last accepted counter, as persisted. */
  lastCounter(): Promise<number> {
    return this.store.lastCounter();
  }

  /** The newest accepted commands (counter, org, kind, outcome); nothing personal. */
  journal(limit = 100): Promise<JournalEntry[]> {
    return this.store.journal(limit);
  }

  /**
   * Process one message from `tallybox/v1/{org}/{device}/cmd`. Never throws.
   * Resolves once the command is processed and its result handed over (an
   * accepted command's) or offered to the rejection gate (a rejection's).
   */
  handle(topic: string, payload: Uint8Array): Promise<CommandResultProps> {
    // Handover inside the turn: one handover at a time, so a result is never queued twice by two of them.
    const turn = this.queue.run(async () => {
      const d = await this.process(topic, payload);
      if (d.accepted) await this.handOver();
      return d;
    });
    return turn.then(
      (d) => {
        if (!d.accepted) this.offerRejection(d);
        return d.result;
      },
      // process() catches everything; this is the last line of defence (nothing published).
      () => this.buildResult(reject(ResultCode.RESULT_CODE_FAILED, Reason.internalError, 'internal error'), 0, undefined),
    );
  }

  /** Wait for queued commands, then close the state file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.idle();
    this.gate.close();
    await this.store.close();
  }

  private offerRejection(d: Extract<Decision, { accepted: false }>): void {
    const cached = d.cacheKey ? this.signedRejections.get(d.cacheKey) : undefined;
    if (cached) {
      // Same bytes, same verdict: the result signed the first time, no new signature.
      Object.assign(d.result, cached);
      this.gate.offer(d.route, () => d.result);
      return;
    }
    this.gate.offer(d.route, () => {
      this.sign(d.result);
      if (d.cacheKey) {
        this.signedRejections.set(d.cacheKey, { ...d.result });
        if (this.signedRejections.size > REPLAY_CACHE) this.signedRejections.delete(this.signedRejections.keys().next().value as string);
      }
      return d.result;
    });
  }

  /** Where a rejection's result may go: the organisation if served, else nowhere. */
  private route(orgId: string | undefined): string | undefined {
    if (orgId === undefined) return undefined;
    const p = this.opts.orgPolicy;
    return !p || p.serves(orgId) ? orgId : undefined;
  }

  private async process(topic: string, payload: Uint8Array): Promise<Decision> {
    const parsed = typeof topic === 'string' ? parseTopic(topic) : undefined;
    const topicOrg = parsed?.kind === 'cmd' ? parsed.orgId : undefined;
    let counter = 0;
    let nonce: Uint8Array | undefined;
    let accepted: { orgId: string } | undefined;
    // Authentic messages only: the same bytes with the same verdict get the same signed result.
    let cacheKey: string | undefined;
    const rejected = (r: Rejection, route = this.route(topicOrg), alreadyLogged = false): Decision => {
      if (!alreadyLogged) this.opts.logger.warn({ event: 'command_rejected', code: codeName(r.code), reason: r.reason, counter }, 'command rejected');
      const result = this.buildResult(r, counter, nonce);
      if (r.firstCounter) result.firstCounter = r.firstCounter;
      return { accepted: false, route, result, cacheKey: cacheKey === undefined ? undefined : `${cacheKey}:${r.code}:${r.reason}:${r.firstCounter ?? 0}` };
    };
    try {
      if (this.closed) return rejected(reject(ResultCode.RESULT_CODE_FAILED, Reason.intakeClosed, 'the command intake is closed'));
      const v = this.verify(topic, payload);
      if (!v.ok) return rejected(v);
      const body = v.body;
      cacheKey = createHash('sha256').update(payload).digest('hex');
      // From here the body is authentic: echo its counter and nonce so the cloud can correlate.
      counter = Number.isSafeInteger(body.counter) ? body.counter : 0;
      nonce = body.nonce.length === NONCE_BYTES ? body.nonce : undefined;
      const policy = this.checkOrg(v.orgId, body);
      if (policy) return rejected(policy.rejection, policy.route);
      const timing = this.checkTiming(body);
      if (timing) return rejected(timing);
      if (body.nonce.length !== NONCE_BYTES) {
        return rejected(reject(ResultCode.RESULT_CODE_MALFORMED, Reason.nonceLength, `the nonce must be ${NONCE_BYTES} bytes, got ${body.nonce.length}`));
      }
      if (await this.store.nonceSeen(body.nonce)) {
        const first = await this.store.byNonce(body.nonce);
        const r = reject(ResultCode.RESULT_CODE_REPLAYED, Reason.nonceSeen, first ? `this command was accepted before, as counter ${first.counter}; its result was sent then` : 'this nonce was accepted before');
        if (first) r.firstCounter = first.counter;
        return rejected(r);
      }
      if (!Number.isSafeInteger(body.counter) || body.counter < 0) {
        return rejected(reject(ResultCode.RESULT_CODE_MALFORMED, Reason.counterOutOfRange, 'the counter is above 2^53-1'));
      }
      const last = await this.store.lastCounter();
      if (body.counter <= last) {
        return rejected(reject(ResultCode.RESULT_CODE_STALE_COUNTER, Reason.counterNotIncreasing, `counter ${body.counter} is not above the last accepted counter ${last}`));
      }
      const kind = body.command;
      if (kind === undefined) {
        return rejected(reject(ResultCode.RESULT_CODE_UNKNOWN_COMMAND, Reason.noCommand, 'the command body carries no command this agent knows'));
      }

      // ACCEPT: counter + nonce on disk before anything takes effect.
      const nowMs = this.now();
      try {
        await this.store.accept({ counter: body.counter, nonce: body.nonce, keepNonceUntilMs: body.expiresAtMs + this.maxSkewMs, orgId: v.orgId, kind, nowMs });
      } catch (err) {
        this.opts.logger.error({ event: 'command_persist_failed', counter, kind, errorCode: errCode(err) }, 'command counter could not be persisted; the command did not run');
        cacheKey = undefined; // a storage failure is not a verdict on these bytes
        return rejected(reject(ResultCode.RESULT_CODE_FAILED, Reason.statePersistFailed, `the command state could not be written (${errCode(err)}); the command did not run`), this.route(topicOrg), true);
      }
      accepted = { orgId: v.orgId };
      this.opts.logger.info({ event: 'command_accepted', counter, kind, keyId: v.keyId }, 'command accepted');

      const ctx: CommandContext = { counter: body.counter, nonce: body.nonce, issuedAtMs: body.issuedAtMs, expiresAtMs: body.expiresAtMs, keyId: v.keyId };
      const outcome = await this.runHandler(v.orgId, body, kind, ctx);
      this.opts.logger.info({ event: 'command_done', counter, kind, code: codeName(outcome.code), reason: outcome.reason ?? '' }, 'command done');
      return await this.decided(outcome, v.orgId, counter, nonce);
    } catch (err) {
      this.opts.logger.error({ event: 'command_intake_error', counter, errorCode: errCode(err) }, 'unexpected error in the command intake');
      const r = reject(ResultCode.RESULT_CODE_FAILED, Reason.internalError, 'internal error in the command intake');
      if (accepted) {
        try {
          return await this.decided(r, accepted.orgId, counter, nonce);
        } catch {
          // The journal cannot be written: open() answers this counter as interrupted after a restart.
        }
      }
      cacheKey = undefined;
      return rejected(r, this.route(topicOrg), true);
    }
  }

  /** An accepted command's one result: signed, then journalled with its outcome (before any handover). */
  private async decided(outcome: HandlerOutcome | Rejection, orgId: string, counter: number, nonce: Uint8Array | undefined): Promise<Decision> {
    const result = this.buildResult(outcome, counter, nonce);
    this.sign(result);
    try {
      await this.store.finish(counter, outcome.code, outcome.reason ?? '', this.now(), resultToJson(result));
    } catch (err) {
      // Not journalled: open() after a restart answers this counter INTERRUPTED; nothing is sent now, so it
      // can never get two different results.
      this.opts.logger.error({ event: 'command_journal_failed', counter, errorCode: errCode(err) }, 'command outcome could not be journalled; its result is sent after the next start');
    }
    return { accepted: true, orgId, result, counter };
  }

  /**
   * Served organisations (with an orgPolicy): ServedOrgsSet only from the
   * operating org; OrgWithdraw for a served or still-held org; anything else
   * for a served org only. The refusal goes to the operating org's topic when
   * the addressed org is not served (never to an org the device does not serve).
   */
  private checkOrg(orgId: string, body: CommandBody): { rejection: Rejection; route: string | undefined } | undefined {
    const p = this.opts.orgPolicy;
    if (!p) return undefined;
    if (body.command === 'servedOrgsSet' || body.command === 'deviceDecommission' || body.command === 'incidentAck') {
      if (orgId === p.operatorOrgId) return undefined;
      return { rejection: reject(ResultCode.RESULT_CODE_REFUSED, Reason.notOperatorOrg, 'only the organisation operating the device may set the organisations it serves'), route: this.route(orgId) ?? this.route(p.operatorOrgId) };
    }
    if (p.serves(orgId) || (body.command === 'orgWithdraw' && p.holds(orgId))) return undefined;
    return { rejection: reject(ResultCode.RESULT_CODE_REFUSED, Reason.orgNotServed, 'this device does not serve the organisation the command is for'), route: this.route(p.operatorOrgId) };
  }

  /** Pure checks up to and including the topic: size, shape, key, signature, device, topic. */
  private verify(topic: string, payload: Uint8Array): Rejection | Verified {
    if (!(payload instanceof Uint8Array)) return reject(ResultCode.RESULT_CODE_MALFORMED, Reason.decodeFailed, 'the payload is not bytes');
    if (payload.length > this.maxBytes) {
      return reject(ResultCode.RESULT_CODE_TOO_LARGE, Reason.payloadTooLarge, `the payload is ${payload.length} bytes; at most ${this.maxBytes} are accepted`);
    }
    let signed: SignedCommand;
    try {
      signed = pb.SignedCommand.decode(payload);
    } catch {
      return reject(ResultCode.RESULT_CODE_MALFORMED, Reason.decodeFailed, 'the payload is not a SignedCommand');
    }
    if (!signed.body || signed.body.length === 0) return reject(ResultCode.RESULT_CODE_MALFORMED, Reason.missingBody, 'the SignedCommand has no body');
    if (!signed.signature || signed.signature.length === 0) return reject(ResultCode.RESULT_CODE_MALFORMED, Reason.missingSignature, 'the SignedCommand has no signature');
    if (signed.signature.length !== SIGNATURE_BYTES) {
      return reject(ResultCode.RESULT_CODE_BAD_SIGNATURE, Reason.signatureLength, `an Ed25519 signature is ${SIGNATURE_BYTES} bytes, got ${signed.signature.length}`);
    }
    const key = this.keys.get(signed.keyId ?? '');
    if (!key) return reject(ResultCode.RESULT_CODE_BAD_SIGNATURE, Reason.unknownKey, 'the command names a key id that is not pinned on this device');
    let good = false;
    try {
      good = edVerify(null, Buffer.concat([COMMAND_SIGNING_DOMAIN, signed.body]), key, signed.signature);
    } catch {
      good = false;
    }
    if (!good) return reject(ResultCode.RESULT_CODE_BAD_SIGNATURE, Reason.signatureInvalid, 'the signature does not verify');
    let body: CommandBody;
    try {
      body = pb.CommandBody.decode(signed.body);
    } catch {
      return reject(ResultCode.RESULT_CODE_MALFORMED, Reason.bodyDecodeFailed, 'the signed body is not a CommandBody');
    }
    if (body.deviceId !== this.opts.deviceId) return reject(ResultCode.RESULT_CODE_WRONG_DEVICE, Reason.deviceMismatch, 'the command is addressed to another device');
    const t = typeof topic === 'string' ? parseTopic(topic) : undefined;
    if (!t || t.kind !== 'cmd' || t.deviceId !== this.opts.deviceId || t.orgId !== body.orgId) {
      return reject(ResultCode.RESULT_CODE_WRONG_DEVICE, Reason.topicMismatch, "the topic's organisation or device does not match the command");
    }
    return { ok: true, orgId: body.orgId, body, keyId: signed.keyId };
  }

  private checkTiming(body: CommandBody): Rejection | undefined {
    const now = this.now();
    if (body.issuedAtMs > now + this.maxSkewMs) {
      return reject(ResultCode.RESULT_CODE_NOT_YET_VALID, Reason.issuedInFuture, `issued ${body.issuedAtMs - now} ms in the future; at most ${this.maxSkewMs} ms of clock skew is tolerated`);
    }
    if (body.expiresAtMs <= now) return reject(ResultCode.RESULT_CODE_EXPIRED, Reason.expired, `expired ${now - body.expiresAtMs} ms ago`);
    if (body.expiresAtMs <= body.issuedAtMs) return reject(ResultCode.RESULT_CODE_EXPIRED, Reason.expiresBeforeIssued, 'expires-at is not after issued-at');
    if (body.expiresAtMs - body.issuedAtMs > this.maxTtlMs) {
      return reject(ResultCode.RESULT_CODE_EXPIRED, Reason.ttlTooLong, `the command is valid for longer than the ${this.maxTtlMs} ms allowed`);
    }
    return undefined;
  }

  private async runHandler(orgId: string, body: CommandBody, kind: CommandKind, ctx: CommandContext): Promise<HandlerOutcome> {
    const h = this.opts.handlers;
    let out: unknown;
    try {
      switch (kind) {
        case 'ping':
          return { code: ResultCode.RESULT_CODE_OK, reason: Reason.pong };
        case 'subjectUpsert':
          out = await h.subjectUpsert(orgId, body.subjectUpsert as SubjectUpsert, ctx);
          break;
        case 'subjectErase':
          out = await h.subjectErase(orgId, body.subjectErase as SubjectErase, ctx);
          break;
        case 'orgWithdraw':
          out = await h.orgWithdraw(orgId, body.orgWithdraw as OrgWithdraw, ctx);
          break;
        case 'rosterSync':
          out = await h.rosterSync(orgId, body.rosterSync as RosterSync, ctx);
          break;
        case 'configPatch':
          out = await h.configPatch(orgId, body.configPatch as ConfigPatch, ctx);
          break;
        case 'servedOrgsSet':
          if (!h.servedOrgsSet) return { code: ResultCode.RESULT_CODE_UNKNOWN_COMMAND, reason: Reason.noCommand, detail: 'this device cannot change the organisations it serves' };
          out = await h.servedOrgsSet(orgId, body.servedOrgsSet as ServedOrgsSet, ctx);
          break;
        case 'deviceDecommission':
          if (!h.deviceDecommission) return { code: ResultCode.RESULT_CODE_UNKNOWN_COMMAND, reason: Reason.noCommand, detail: 'this device cannot decommission itself' };
          out = await h.deviceDecommission(orgId, body.deviceDecommission as DeviceDecommission, ctx);
          break;
        case 'incidentAck':
          if (!h.incidentAck) return { code: ResultCode.RESULT_CODE_UNKNOWN_COMMAND, reason: Reason.noCommand, detail: 'this device keeps no incident records' };
          out = await h.incidentAck(orgId, body.incidentAck as IncidentAck, ctx);
          break;
        case 'printJob':
        case 'cancelJob':
        case 'reprintJob': {
          const fn = h[kind];
          if (!fn) return { code: ResultCode.RESULT_CODE_UNKNOWN_COMMAND, reason: Reason.noCommand, detail: 'this device is not a print box' };
          out = await (fn as (o: string, c: unknown, x: CommandContext) => Promise<HandlerOutcome>).call(h, orgId, body[kind], ctx);
          break;
        }
        default: {
          const never: never = kind;
          return { code: ResultCode.RESULT_CODE_UNKNOWN_COMMAND, reason: Reason.noCommand, detail: `no handler for ${String(never)}` };
        }
      }
    } catch (err) {
      const code = errCode(err);
      this.opts.logger.warn({ event: 'command_handler_failed', counter: ctx.counter, kind, errorCode: code }, 'command handler failed');
      return { code: ResultCode.RESULT_CODE_FAILED, reason: code === 'UNKNOWN' ? Reason.handlerFailed : code, detail: `the ${kind} handler failed (${code})` };
    }
    const o = out as Partial<HandlerOutcome> | null | undefined;
    if (!o || typeof o !== 'object' || typeof o.code !== 'number' || !KNOWN_CODES.has(o.code) || o.code === ResultCode.RESULT_CODE_UNSPECIFIED) {
      return { code: ResultCode.RESULT_CODE_FAILED, reason: Reason.handlerBadOutcome, detail: `the ${kind} handler returned no result code` };
    }
    const outcome: HandlerOutcome = { code: o.code };
    if (typeof o.reason === 'string') outcome.reason = o.reason;
    if (typeof o.detail === 'string') outcome.detail = o.detail;
    if (o.receipt instanceof Uint8Array && o.receipt.length > 0) outcome.receipt = o.receipt;
    if (o.servedOrgs && Array.isArray(o.servedOrgs.served) && Array.isArray(o.servedOrgs.retired)) outcome.servedOrgs = { served: [...o.servedOrgs.served], retired: [...o.servedOrgs.retired] };
    if (o.wifiEnrolment && typeof o.wifiEnrolment === 'object') outcome.wifiEnrolment = { ...o.wifiEnrolment };
    if (o.wifiReenrolment && Array.isArray(o.wifiReenrolment.subjectIds)) outcome.wifiReenrolment = { subjectIds: o.wifiReenrolment.subjectIds.filter((x): x is string => typeof x === 'string') };
    if (o.printJobStatus && typeof o.printJobStatus === 'object') outcome.printJobStatus = o.printJobStatus;
    return outcome;
  }

  /** The result of an outcome, unsigned. */
  private buildResult(o: HandlerOutcome | Rejection, counter: number, nonce: Uint8Array | undefined): CommandResultProps {
    const result: CommandResultProps = { deviceId: this.opts.deviceId, counter, code: o.code, atMs: safeNow(this.now) };
    if (nonce) result.nonce = nonce;
    if (o.reason) result.reason = o.reason;
    if (o.detail) result.detail = o.detail;
    if ('receipt' in o && o.receipt) result.receipt = o.receipt;
    if ('servedOrgs' in o && o.servedOrgs) result.servedOrgs = { served: [...o.servedOrgs.served], retired: [...o.servedOrgs.retired] };
    if ('wifiEnrolment' in o && o.wifiEnrolment) result.wifiEnrolment = { ...o.wifiEnrolment };
    if ('wifiReenrolment' in o && o.wifiReenrolment) result.wifiReenrolment = { subjectIds: [...o.wifiReenrolment.subjectIds] };
    if ('printJobStatus' in o && o.printJobStatus) result.printJobStatus = o.printJobStatus;
    if (this.opts.resultKeyId) result.keyId = this.opts.resultKeyId;
    return result;
  }

  /** Sign a result in place with the device identity (when a signer is configured). */
  private sign(result: CommandResultProps): void {
    if (!this.opts.signResult) return;
    const counter = result.counter ?? 0;
    try {
      const sig = this.opts.signResult(resultSigningBytes(result));
      if (sig instanceof Uint8Array && sig.length === SIGNATURE_BYTES) result.signature = sig;
      else this.opts.logger.error({ event: 'command_result_sign_failed', counter, errorCode: 'SIGNATURE_LENGTH' }, 'result signer returned something that is not a 64-byte signature');
    } catch (err) {
      this.opts.logger.error({ event: 'command_result_sign_failed', counter, errorCode: errCode(err) }, 'command result could not be signed');
    }
  }
}

/** The JSON form of a result (bytes as base64) kept in the journal; the same fields re-encode to the same bytes. */
export function resultToJson(r: CommandResultProps): string {
  return JSON.stringify(pb.CommandResult.toObject(pb.CommandResult.fromObject(r), { bytes: String, longs: Number, enums: Number }));
}

export function resultFromJson(body: string): CommandResultProps {
  return pb.CommandResult.fromObject(JSON.parse(body) as Record<string, unknown>);
}

function safeNow(now: () => number): number {
  try {
    const t = now();
    return Number.isSafeInteger(t) && t > 0 ? t : Date.now();
  } catch {
    return Date.now();
  }
}

/** The machine-readable code of an error (TallyboxError.code, sqlite/system codes); never its message. */
function errCode(err: unknown): string {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' && ERROR_CODE_RE.test(c) ? c : 'UNKNOWN';
}
