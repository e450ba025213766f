/**
 * Watches the agent for security incidents and records each occurrence once
 * (store.ts); reports open records on tallybox/v1/{org}/{device}/incident
 * (QoS 1) at every new connection and every `resendSec` until an IncidentAck
 * command closes them.
 *
 * Sources (read through the agent's public surface; nothing is hooked in):
 *  - TAMPER: the agent is zeroised (one record per zeroisation, by its stamp)
 *  - STORAGE_LOST: the outbox alarm (one record per lost range: the same loss
 *    seen again at the next start is the same record)
 *  - KEY_FILE_CHANGED / KEY_FILE_MISSING: keyfiles.ts
 *  - AUTH_FAILURES: the command rejection gate's count of rejected commands
 *    (forged, replayed, expired, addressed elsewhere) reaching `authFailures`
 *    within `authWindowSec` (monotonic clock); one record per burst
 *  - PURGE_INCOMPLETE: a purge outcome that is not verified, and purges still
 *    pending after the start resumed them (one record per purge job)
 */
import type { Config } from '../config/schema.js';
import type { RejectionGateStats } from '../link/commands/index.js';
import type { Session } from '../link/connection.js';
import type { EgressGate } from '../link/egress.js';
import type { PrivacyServices } from '../agent/privacy.js';
import { describeZeroised, zeroisedInfo, type ZeroisedInfo } from '../agent/zeroise.js';
import { SerialQueue } from '../util/serial-queue.js';
import { IncidentKind } from '../proto/index.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { checkKeyFiles } from './keyfiles.js';
import { IncidentStore, type Incident, type IncidentInput, type IncidentKindName } from './store.js';
import { randomUUID } from 'node:crypto';

/** What the monitor reads from the agent. */
export interface MonitoredAgent {
  readonly config: Config;
  readonly outbox: { activeAlarms(): ReadonlyMap<string, string> };
  readonly zeroised: ZeroisedInfo | undefined;
  readonly privacy: PrivacyServices | undefined;
  intakeStats(): RejectionGateStats | undefined;
  readonly session: Session | undefined;
  readonly egress: EgressGate;
  readonly logger: Logger;
}

export const KIND_CODE: Record<IncidentKindName, IncidentKind> = {
  TAMPER: IncidentKind.INCIDENT_KIND_TAMPER,
  STORAGE_LOST: IncidentKind.INCIDENT_KIND_STORAGE_LOST,
  KEY_FILE_CHANGED: IncidentKind.INCIDENT_KIND_KEY_FILE_CHANGED,
  KEY_FILE_MISSING: IncidentKind.INCIDENT_KIND_KEY_FILE_MISSING,
  AUTH_FAILURES: IncidentKind.INCIDENT_KIND_AUTH_FAILURES,
  PURGE_INCOMPLETE: IncidentKind.INCIDENT_KIND_PURGE_INCOMPLETE,
};

const DEFAULTS = { authFailures: 5, authWindowSec: 60, resendSec: 60, checkSec: 5 };

/** Before the vault opens: a vanished or replaced key file is recorded even if the start then fails on it. */
export async function checkKeyFilesAtStart(config: Config, logger: Logger): Promise<void> {
  const store = await IncidentStore.open(config.dataDir);
  try {
    // A zeroised device destroyed its own KEK: that is the TAMPER record, not a key-file incident.
    const n = await checkKeyFiles(store, config, zeroisedInfo(config.dataDir) ? ['kek'] : []);
    if (n > 0) logger.error({ event: 'incident_recorded', kind: 'KEY_FILE', count: n }, `${n} key file change(s) since the last start recorded as incidents`);
  } finally {
    await store.close();
  }
}

export class IncidentMonitor {
  private timer: NodeJS.Timeout | undefined;
  private lastSession: Session | undefined;
  private lastSendMono = 0;
  private readonly auth: Array<{ mono: number; offered: number }> = [];
  private burstOpen = false;
  private stopped = false;
  /** One check at a time; a tick's failure is logged, never stops the next. */
  private readonly ticks = new SerialQueue();
  private readonly opts: typeof DEFAULTS;

  private constructor(
    private readonly agent: MonitoredAgent,
    readonly store: IncidentStore,
  ) {
    this.opts = { ...DEFAULTS, ...(agent.config.incidents ?? {}) };
  }

  static async start(agent: MonitoredAgent): Promise<IncidentMonitor> {
    const store = await IncidentStore.open(agent.config.dataDir);
    const m = new IncidentMonitor(agent, store);
    agent.privacy?.onOutcome((o) => {
      if (o.ok) return;
      void m.record({
        kind: 'PURGE_INCOMPLETE',
        dedup: `PURGE_INCOMPLETE:${o.receipt.orgId}:${o.receipt.startedAtMs}`,
        orgIds: [o.receipt.orgId],
        counts: { scanHits: o.receipt.scan.hits, samples: o.receipt.scan.samples },
        detail: `${o.receipt.kind} ${o.receipt.verification} (${o.receipt.problem ?? 'unknown'})`,
      });
    });
    // Purges still pending now failed again when the start resumed them.
    for (const j of (await agent.privacy?.purger.pending().catch(() => [])) ?? []) {
      await m.record({ kind: 'PURGE_INCOMPLETE', dedup: `PURGE_INCOMPLETE:${j.scope.orgId}:${j.startedAtMs}`, orgIds: [j.scope.orgId], counts: { attempts: j.attempts }, detail: `${j.scope.kind} erasure not verified complete` });
    }
    await m.tick();
    m.timer = setInterval(() => void m.tick(), m.opts.checkSec * 1000);
    m.timer.unref();
    return m;
  }

  /** Record (once) and, when online, send at once. */
  async record(i: IncidentInput): Promise<Incident | undefined> {
    // A purge outcome arriving while the agent stops: the next start sees the pending purge and records it.
    if (this.stopped) return undefined;
    const r = await this.store.record(i);
    if (r.created) {
      this.agent.logger.error({ event: 'incident_recorded', incidentId: r.incident.id, seq: r.incident.seq, kind: i.kind, orgIds: i.orgIds ?? [], counts: i.counts ?? {} }, `INCIDENT ${i.kind}: ${i.detail}`);
      this.lastSendMono = 0;
    }
    return r.incident;
  }

  tick(): Promise<void> {
    return this.ticks.run(() => this.check()).catch((err: unknown) => this.agent.logger.warn({ event: 'incident_check_failed', err: errorMessage(err) }, `incident check failed: ${errorMessage(err)}`));
  }

  private async check(): Promise<void> {
    if (this.stopped) return;
    const a = this.agent;
    const z = a.zeroised;
    if (z) await this.record({ kind: 'TAMPER', dedup: `TAMPER:${z.atMs}`, counts: {}, detail: describeZeroised(z) });
    const lost = a.outbox.activeAlarms().get('STORAGE_LOST');
    if (lost !== undefined) {
      // The occurrence is the lost range; the rest of the text (where numbering continues) changes per start.
      const m = /seq (\d+)\.\.(\d+)/.exec(lost);
      const counts: Record<string, number> = m ? { fromSeq: Number(m[1]), toSeq: Number(m[2]), punches: Number(m[2]) - Number(m[1]) + 1 } : {};
      await this.record({ kind: 'STORAGE_LOST', dedup: `STORAGE_LOST:${m ? `${m[1]}..${m[2]}` : lost}`, counts, detail: m ? `${counts.punches} accepted punches lost from the outbox (seq ${m[1]}..${m[2]})` : lost });
    }
    // A KEK the agent destroyed itself (tamper response) is no key-file incident: the TAMPER record covers it.
    await checkKeyFiles(this.store, a.config, z ? ['kek'] : []).then((n) => (n > 0 ? (this.lastSendMono = 0) : 0));
    await this.checkAuth();
    await this.send();
  }

  private async checkAuth(): Promise<void> {
    const stats = this.agent.intakeStats();
    if (!stats) return;
    const now = performance.now();
    this.auth.push({ mono: now, offered: stats.offered });
    const windowMs = this.opts.authWindowSec * 1000;
    while (this.auth.length > 1 && now - this.auth[0]!.mono > windowMs) this.auth.shift();
    const n = stats.offered - this.auth[0]!.offered;
    if (n >= this.opts.authFailures && !this.burstOpen) {
      this.burstOpen = true;
      await this.record({
        kind: 'AUTH_FAILURES',
        // One record per burst: a random id, not the wall clock (which can step back onto an earlier burst's key).
        dedup: `AUTH_FAILURES:${randomUUID()}`,
        counts: { rejected: n, windowSec: this.opts.authWindowSec },
        detail: `${n} commands rejected within ${this.opts.authWindowSec} s (forged, replayed, expired or misaddressed)`,
      });
    } else if (n === 0 && this.auth.length > 1) this.burstOpen = false;
  }

  /** Every open record at a new connection, and again every resendSec, until acknowledged. */
  private async send(): Promise<void> {
    const s = this.agent.session;
    if (!s) return;
    const due = s !== this.lastSession || performance.now() - this.lastSendMono >= this.opts.resendSec * 1000;
    if (!due) return;
    const open = await this.store.open();
    for (const i of open) {
      await this.agent.egress.publishIncident(s.client, { incidentId: i.id, seq: i.seq, kind: KIND_CODE[i.kind], atMs: i.atMs, orgIds: i.orgIds, counts: i.counts, detail: i.detail, resend: i.sends });
      await this.store.markSent([i.id]);
    }
    this.lastSession = s;
    this.lastSendMono = performance.now();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.ticks.idle();
    await this.store.close();
  }
}
