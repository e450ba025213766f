/**
 * The organisations this device serves (DESIGN "Served organisations").
 *
 * Set at provisioning: config `device.servedOrgs` (default: the operating org,
 * `device.orgId`). Changed only by the signed ServedOrgsSet command, whose new
 * list is persisted in `dataDir/served-orgs.json` and wins over the config from
 * then on (the config is the provisioning default, the file is the cloud's
 * latest word). Every command, punch-API call and identification lookup for an
 * organisation outside the list is refused and changes nothing.
 *
 * Removing an organisation from the list does not erase its data: it becomes
 * "retired" — held on the device, unreachable (no lookups, no punches, no
 * commands except OrgWithdraw). Only an OrgWithdraw erases it (and takes it
 * off the retired list); a later ServedOrgsSet that lists it again serves it
 * again with its data intact. Organisations found in the vault at start that
 * are not served are retired the same way (data from before this list
 * existed), and logged.
 *
 * The file: JSON {version:1, served:[...], retired:[...], counter, atMs},
 * written to a fresh temp file (O_EXCL, so never through a symlink), fsync'd,
 * renamed over the old one, directory fsync'd. A file that does not parse is
 * an error at start (SERVED_ORGS_CORRUPT): the agent never falls back to the
 * config silently, since that could serve an org the cloud removed.
 */
import { closeSync, constants, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { CommandHandlers, HandlerOutcome } from '../link/commands/index.js';
import { ResultCode } from '../proto/index.js';
import { TallyboxError, isTallyboxError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { Vault } from '../vault/vault.js';

export const SERVED_ORGS_FILE = 'served-orgs.json';
/** Same rule as config ids: they travel in MQTT topics. */
const ORG_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const MAX_SERVED_ORGS = 64;

export interface ServedOrgsSnapshot {
  served: readonly string[];
  retired: readonly string[];
}

export interface ServedOrgsChange extends ServedOrgsSnapshot {
  added: readonly string[];
  removed: readonly string[];
}

interface FileShape {
  version: 1;
  served: string[];
  retired: string[];
  /** Counter of the ServedOrgsSet that wrote it (0: written at start). */
  counter: number;
  atMs: number;
}

export function checkOrgIds(ids: readonly unknown[], what: string): string[] {
  if (ids.length === 0) throw new TallyboxError('SERVED_ORGS_INVALID', `${what}: the list of served organisations is empty`, { reason: 'served_orgs_empty' });
  if (ids.length > MAX_SERVED_ORGS) throw new TallyboxError('SERVED_ORGS_INVALID', `${what}: ${ids.length} organisations, at most ${MAX_SERVED_ORGS}`, { reason: 'served_orgs_too_many' });
  const out: string[] = [];
  for (const [i, id] of ids.entries()) {
    if (typeof id !== 'string' || !ORG_ID.test(id)) throw new TallyboxError('SERVED_ORGS_INVALID', `${what}[${i}] is not an organisation id (1-64 of A-Z a-z 0-9 _ . -)`, { reason: 'served_orgs_bad_id', index: i });
    if (!out.includes(id)) out.push(id);
  }
  return out;
}

export class ServedOrgs {
  #served: string[];
  #retired: string[];
  readonly #listeners = new Set<(c: ServedOrgsChange) => void>();

  private constructor(
    private readonly path: string | undefined,
    served: string[],
    retired: string[],
    private readonly logger: Logger | undefined,
    /** Where the list came from, for logs and doctor. */
    readonly source: 'config' | 'file',
  ) {
    this.#served = served;
    this.#retired = retired;
  }

  /** A list held only in memory (tests, tools that never persist). */
  static fixed(served: readonly string[]): ServedOrgs {
    return new ServedOrgs(undefined, checkOrgIds(served, 'served organisations'), [], undefined, 'config');
  }

  /**
   * The persisted list if the file exists, else the configured one. Throws
   * SERVED_ORGS_CORRUPT for a file that is empty, truncated or not the shape
   * above (the message names the file; nothing is changed).
   */
  static load(opts: { dataDir: string; configured: readonly string[]; logger?: Logger }): ServedOrgs {
    const path = join(opts.dataDir, SERVED_ORGS_FILE);
    let text: string | undefined;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new TallyboxError('SERVED_ORGS_UNREADABLE', `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'}); the served organisations are unknown, refusing to start`, { path }, { cause: err });
      }
    }
    if (text === undefined) return new ServedOrgs(path, checkOrgIds(opts.configured, 'device.servedOrgs'), [], opts.logger, 'config');
    let f: Partial<FileShape>;
    try {
      f = JSON.parse(text) as Partial<FileShape>;
      if (!f || typeof f !== 'object' || f.version !== 1 || !Array.isArray(f.served) || !Array.isArray(f.retired)) throw new Error('shape');
    } catch {
      throw new TallyboxError(
        'SERVED_ORGS_CORRUPT',
        `${path} is ${text.length === 0 ? 'empty' : 'not a served-organisations file (version 1)'}; the served organisations are unknown, refusing to start (restore it, or remove it to fall back to device.servedOrgs)`,
        { path },
      );
    }
    let served: string[];
    let retired: string[];
    try {
      served = checkOrgIds(f.served, `${path}: served`);
      retired = f.retired.length === 0 ? [] : checkOrgIds(f.retired, `${path}: retired`);
    } catch (err) {
      throw new TallyboxError('SERVED_ORGS_CORRUPT', `${(err as Error).message}; refusing to start`, { path }, { cause: err });
    }
    return new ServedOrgs(
      path,
      served,
      retired.filter((o) => !served.includes(o)),
      opts.logger,
      'file',
    );
  }

  has(orgId: string): boolean {
    return this.#served.includes(orgId);
  }

  /** Served, or retired with its data still on the device (an OrgWithdraw may erase it). */
  holds(orgId: string): boolean {
    return this.#served.includes(orgId) || this.#retired.includes(orgId);
  }

  snapshot(): ServedOrgsSnapshot {
    return { served: [...this.#served], retired: [...this.#retired] };
  }

  /** Throws ORG_NOT_SERVED (reason org_not_served) for an organisation outside the list. */
  assertServed(orgId: string, what: string): void {
    if (!this.has(orgId)) throw new TallyboxError('ORG_NOT_SERVED', `${what}: organisation ${JSON.stringify(orgId)} is not served by this device`, { reason: 'org_not_served', orgId });
  }

  /** Heard on every change (roles rebuild their indexes from the served view). */
  onChange(fn: (c: ServedOrgsChange) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /**
   * Replace the list (ServedOrgsSet). Organisations dropped from it are
   * retired (their data stays until OrgWithdraw); ones listed again leave the
   * retired list. Persisted before it takes effect; throws SERVED_ORGS_INVALID
   * on a bad list, storage errors as raised (nothing changed in either case).
   */
  set(orgIds: readonly unknown[], counter: number): ServedOrgsChange {
    const served = checkOrgIds(orgIds, 'ServedOrgsSet.org_ids');
    const removed = this.#served.filter((o) => !served.includes(o));
    const added = served.filter((o) => !this.#served.includes(o));
    const retired = [...new Set([...this.#retired, ...removed])].filter((o) => !served.includes(o));
    this.persist(served, retired, counter);
    this.#served = served;
    this.#retired = retired;
    const change: ServedOrgsChange = { served: [...served], retired: [...retired], added, removed };
    this.logger?.info({ event: 'served_orgs_set', counter, served, retired, added, removed }, `served organisations now ${served.join(', ')}`);
    this.emit(change);
    return change;
  }

  /** An OrgWithdraw for a retired organisation completed: nothing of it is held any more. */
  withdrawn(orgId: string): void {
    if (!this.#retired.includes(orgId)) return;
    const retired = this.#retired.filter((o) => o !== orgId);
    this.persist(this.#served, retired, 0);
    this.#retired = retired;
    this.emit({ served: [...this.#served], retired: [...retired], added: [], removed: [] });
  }

  /**
   * At start: organisations with data in the vault that are not served
   * (created before this list existed, or by a command it would now refuse)
   * are retired, so only an OrgWithdraw can erase them, and said so.
   */
  adoptHeld(orgsWithData: readonly string[]): void {
    const extra = orgsWithData.filter((o) => !this.holds(o));
    if (extra.length === 0) return;
    const retired = [...this.#retired, ...extra];
    this.persist(this.#served, retired, 0);
    this.#retired = retired;
    this.logger?.warn({ event: 'served_orgs_retired_at_start', retired: extra }, `the vault holds data of ${extra.length} organisation(s) this device does not serve: not searched, refused, kept until an OrgWithdraw`);
  }

  private emit(c: ServedOrgsChange): void {
    for (const fn of this.#listeners) {
      try {
        fn(c);
      } catch (err) {
        this.logger?.warn({ event: 'served_orgs_listener_failed', errorCode: (err as { code?: string }).code ?? 'ERROR' }, 'a served-organisations listener threw');
      }
    }
  }

  private persist(served: readonly string[], retired: readonly string[], counter: number): void {
    if (!this.path) return;
    const body: FileShape = { version: 1, served: [...served], retired: [...retired], counter, atMs: Date.now() };
    const tmp = `${this.path}.${process.pid}.tmp`;
    rmSync(tmp, { force: true });
    // O_EXCL: a symlink planted at the temp name is never followed.
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      writeSync(fd, `${JSON.stringify(body)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    const dir = openSync(join(this.path, '..'), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }
}

/**
 * The vault as identification sees it: only served organisations exist.
 * Card/MAC lookups (identifyCredential, identifyCredentials) and every "for each org" scan (the
 * face index, the fingerprint library) go through orgs(), so an organisation
 * that is not served is never searched. Reads the list at each call, so a
 * ServedOrgsSet takes effect at once. Everything else is the vault itself.
 */
export function servedVaultView<V extends Pick<Vault, 'orgs' | 'identifyCredential' | 'identifyCredentials'>>(vault: V, served: Pick<ServedOrgs, 'has'>): V {
  const orgs = async () => (await vault.orgs()).filter((o) => served.has(o));
  const accept = (orgId: string) => served.has(orgId);
  // The vault's own lookups, admitting only served organisations (one queue turn for every org).
  const identifyCredentials: Vault['identifyCredentials'] = (kind, values, also) => vault.identifyCredentials(kind, values, also ? (o) => accept(o) && also(o) : accept);
  const identifyCredential: Vault['identifyCredential'] = async (kind, value) => (await identifyCredentials(kind, [value])).map(({ orgId, subjectId }) => ({ orgId, subjectId }));
  return new Proxy(vault, {
    get(target, prop) {
      if (prop === 'orgs') return orgs;
      if (prop === 'identifyCredential') return identifyCredential;
      if (prop === 'identifyCredentials') return identifyCredentials;
      const v = Reflect.get(target, prop, target) as unknown;
      // Bound to the vault itself: its private fields are not reachable through a proxy.
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/**
 * The command handlers with the served-organisations list wired in: a
 * ServedOrgsSet replaces the list (its result carries the list now in force),
 * and an OrgWithdraw that erased a retired organisation takes it off the
 * retired list.
 */
export function servedOrgsHandlers(base: CommandHandlers, served: ServedOrgs): CommandHandlers {
  return {
    ...base,
    async orgWithdraw(orgId, cmd, ctx): Promise<HandlerOutcome> {
      const out = await base.orgWithdraw(orgId, cmd, ctx);
      if (out.code === ResultCode.RESULT_CODE_OK && !served.has(orgId)) served.withdrawn(orgId);
      return out;
    },
    async servedOrgsSet(_orgId, cmd, ctx): Promise<HandlerOutcome> {
      let change: ServedOrgsChange;
      try {
        change = served.set(cmd.orgIds, ctx.counter);
      } catch (err) {
        if (isTallyboxError(err, 'SERVED_ORGS_INVALID')) {
          return { code: ResultCode.RESULT_CODE_REFUSED, reason: String(err.details.reason ?? 'served_orgs_invalid'), detail: err.message, servedOrgs: served.snapshot() };
        }
        throw err;
      }
      const detail = `serving ${change.served.length} organisation(s)${change.added.length ? `; added ${change.added.join(', ')}` : ''}${change.removed.length ? `; no longer served (data kept until OrgWithdraw): ${change.removed.join(', ')}` : ''}`;
      return { code: ResultCode.RESULT_CODE_OK, reason: 'served_orgs_set', detail, servedOrgs: { served: change.served, retired: change.retired } };
    },
  };
}
