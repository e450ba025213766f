/**
 * The lab: a described site running on one machine. It starts the cloud
 * emulator (the embedded broker, or a broker given by URL; the punch sink;
 * the command signer), then for each device its simulated hardware (through
 * the device's kind, kinds/), a TCP proxy between its agent and the broker
 * (the uplink the lab cuts or black-holes), its own small disk, and a real
 * agent (`tallybox run` as a child process). The people of the lab file are
 * enrolled through signed cloud commands, the simulated person following the
 * terminal's prompts.
 *
 * Every action (lab.act) is validated, recorded (timestamp, monotonic offset,
 * the seed in the header) and run in its device's queue, so one device's
 * actions happen in order and a replay of the record gives the same punches.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { dump as toYaml } from 'js-yaml';
import { ConsentKind, CredentialKind, Modality, ResultCode, pb, type CommandBodyProps, type CommandResult, type PunchEvent } from '../../src/proto/index.js';
import { SerialQueue } from '../../src/util/serial-queue.js';
import { parseTopic } from '../../src/link/topics.js';
import { TallyboxError, errorMessage, isTallyboxError } from '../../src/util/errors.js';
import { provisionKeyFiles } from '../../src/vault/keys.js';
import { startEmbeddedBroker } from '../cloud/broker.js';
import { CommandSigner } from '../cloud/signer.js';
import { CloudSink } from '../cloud/sink.js';
import { freePort } from '../lib/ports.js';
import { BlackholeProxy } from '../lib/tcp-proxy.js';
import { LabActionSchema, type LabAction, type RecordedAction, type RecordHeader } from './actions.js';
import { AgentChild, type AgentLogLine } from './agent-child.js';
import type { LabConfig, LabDeviceConfig } from './config.js';
import { DeviceDisk, sweepStaleLabDisks } from './disk.js';
import { LAB_KINDS } from './kinds/index.js';
import type { EnrolOutcome, KindHardware, LabMethod, LabModality, LabPerson, LabPrinter, LabPrinterView } from './kinds/types.js';
import { assertBuilt } from './paths.js';
import { Recorder, readRecord } from './record.js';

export type LabEventType = 'punch' | 'receipt' | 'result' | 'device' | 'action' | 'print';

export interface LabEvent {
  id: number;
  at: string;
  type: LabEventType;
  data: Record<string, unknown>;
}

export interface PunchView {
  eventId: string;
  deviceId: string;
  orgId: string;
  subjectId: string;
  /** The lab person behind the subject id (null for a subject the lab does not know). */
  person: string | null;
  method: string;
  seq: number;
  bdSeq: number;
  historical: boolean;
  clockSynced: boolean;
  occurredAtMs: number;
  receivedAt: string;
}

export interface DeviceView {
  name: string;
  kind: string;
  org: string;
  servedOrgs: string[];
  methods: string[];
  agent: { running: boolean; pid: number | null; starts: number; lastExit: string | null };
  connected: boolean;
  link: string;
  queueDepth: number;
  lastSeq: number;
  alarms: string[];
  peripherals: { name: string; plugged: boolean; online: boolean | null; detail: string }[];
  uplink: 'ok' | 'cut' | 'blackhole' | 'unavailable';
  disk: { tmpfs: boolean; full: boolean; freeBytes: number | null; note: string | null };
  clock: { offsetMs: number; deviceTimeMs: number; synced: boolean | null };
  enrolled: Record<string, string[]>;
  /** P1: the simulated printer (its side) and what the agent reports of it; null on other kinds. */
  printer: (LabPrinterView & { agent: { state: string; reasons: string[]; jobsWaiting: number; jobsUncertain: number } | null }) | null;
}

export interface PersonView {
  id: string;
  org: string;
  subjectId: string;
  minor: boolean;
  consent: { fingerprint: boolean; face: boolean; guardian: boolean };
  traits: string[];
  enrolled: Record<string, string[]>;
}

export interface CommandOutcome {
  device: string;
  counter: number;
  code: string;
  reason: string;
  enrolled?: { modality: string; ok: boolean; code?: string }[];
}

export interface LabOptions {
  config: LabConfig;
  /** The lab file's text (its hash heads the record and is checked on replay). */
  configText: string;
  brokerUrl?: string;
  seed?: number;
  /** Working directory (default a fresh temp dir, removed by close()). */
  dir?: string;
  /** Record every action to this file. */
  record?: string;
  /** Agent log level (default info: the lab follows enrolment outcomes in the log). */
  onProgress?: (line: string) => void;
}

const METHOD_NAMES = pb.PunchMethod as unknown as Record<number, string>;
const ENROL_LOG: Record<LabModality, string> = { fingerprint: 'm1', face: 'm2' };

function labError(code: string, message: string, details: Record<string, unknown> = {}): TallyboxError {
  return new TallyboxError(code, message, details);
}

/** The opaque subject id of a lab person: derived from the seed, so a replay sees the same ids. */
export function subjectIdFor(seed: number, personId: string): string {
  return `sub-${createHash('sha256').update(`tallybox-lab\0${seed}\0${personId}`).digest('hex').slice(0, 16)}`;
}

class Device {
  readonly cfg: LabDeviceConfig;
  readonly dir: string;
  readonly hw: KindHardware;
  readonly agent: AgentChild;
  readonly uplink: BlackholeProxy | undefined;
  readonly disk: DeviceDisk;
  readonly clockFile: string;
  readonly queue = new SerialQueue();
  uplinkMode: 'ok' | 'cut' | 'blackhole' = 'ok';
  clockOffsetMs = 0;
  state: Record<string, unknown> | undefined;
  /** Person id → modalities enrolled here. */
  readonly enrolled = new Map<string, Set<string>>();
  /** People recorded here (SubjectUpsert accepted). */
  readonly upserted = new Set<string>();
  /** Print jobs the lab sent here (p1): numbers the job ids. */
  printJobs = 0;

  constructor(o: { cfg: LabDeviceConfig; dir: string; hw: KindHardware; agent: AgentChild; uplink: BlackholeProxy | undefined; disk: DeviceDisk; clockFile: string }) {
    this.cfg = o.cfg;
    this.dir = o.dir;
    this.hw = o.hw;
    this.agent = o.agent;
    this.uplink = o.uplink;
    this.disk = o.disk;
    this.clockFile = o.clockFile;
  }

  get name(): string {
    return this.cfg.name;
  }
  get servedOrgs(): string[] {
    return this.cfg.servedOrgs ?? [this.cfg.org];
  }
}

export class Lab extends EventEmitter {
  readonly config: LabConfig;
  readonly seed: number;
  readonly dir: string;
  readonly brokerUrl: string;
  readonly startedAt = new Date().toISOString();
  readonly people: ReadonlyMap<string, LabPerson>;
  readonly #devices = new Map<string, Device>();
  readonly #bySubject = new Map<string, string>();
  readonly #events: LabEvent[] = [];
  readonly #punches: PunchView[] = [];
  readonly #actions: RecordedAction[] = [];
  readonly #cleanups: (() => Promise<unknown> | unknown)[] = [];
  readonly #t0 = performance.now();
  readonly #ownDir: boolean;
  readonly #configSha: string;
  #recorder: Recorder | undefined;
  #signer = new CommandSigner({ keyId: 'lab-cloud' });
  #sink!: CloudSink;
  readonly #printEvents = new SerialQueue();
  #eventId = 0;
  #actionSeq = 0;
  #poll: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(opts: LabOptions, brokerUrl: string, dir: string) {
    super();
    this.setMaxListeners(100);
    this.config = opts.config;
    this.seed = opts.seed ?? opts.config.seed;
    this.dir = dir;
    this.#ownDir = !opts.dir;
    this.brokerUrl = brokerUrl;
    this.#configSha = createHash('sha256').update(opts.configText).digest('hex');
    const people = new Map<string, LabPerson>();
    opts.config.people.forEach((p, i) => {
      const subjectId = subjectIdFor(this.seed, p.id);
      people.set(p.id, {
        id: p.id,
        org: p.org,
        subjectId,
        name: p.name ?? `Simulated ${p.id}`,
        minor: p.minor,
        consent: p.consent,
        finger: p.finger,
        face: p.face,
        facePerson: i + 1,
        card: p.card,
        phone: p.phone === true ? { randomised: false } : p.phone,
      });
      this.#bySubject.set(subjectId, p.id);
    });
    this.people = people;
  }

  static async start(opts: LabOptions): Promise<Lab> {
    assertBuilt();
    const say = opts.onProgress ?? (() => undefined);
    const swept = sweepStaleLabDisks(tmpdir());
    if (swept.length) say(`lab: unmounted ${swept.length} disks left by a lab that was killed`);
    const dir = opts.dir ? resolve(opts.dir) : mkdtempSync(join(tmpdir(), 'tallybox-lab-'));
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Who owns this lab's mounts: a later lab sweeps them if this process dies without unmounting.
    writeFileSync(join(dir, 'lab.pid'), `${process.pid}\n`);
    let brokerUrl = opts.brokerUrl;
    let embedded: Awaited<ReturnType<typeof startEmbeddedBroker>> | undefined;
    if (!brokerUrl) {
      embedded = await startEmbeddedBroker();
      brokerUrl = embedded.url;
    }
    const lab = new Lab(opts, brokerUrl, dir);
    if (embedded) lab.#cleanups.push(() => embedded.close());
    try {
      lab.#sink = await CloudSink.connect({
        url: brokerUrl,
        onPunch: (p, info) => lab.#onPunch(p, info.duplicate),
        onResult: (r, topic) => lab.#onResult(r, topic),
      });
      lab.#cleanups.push(() => lab.#sink.close());
      if (opts.record) {
        const header: RecordHeader = { type: 'header', format: 'tallybox-lab-record', version: 1, seed: lab.seed, configSha256: lab.#configSha, startedAt: lab.startedAt };
        lab.#recorder = new Recorder(opts.record, header);
      }
      say(`lab: broker ${brokerUrl}, ${opts.config.devices.length} devices, ${lab.people.size} people, seed ${lab.seed}, in ${dir}`);
      // Devices start side by side: each is its own agent process.
      await Promise.all(opts.config.devices.map((d) => lab.#startDevice(d)));
      say('lab: every agent is up; enrolling people through signed commands');
      await Promise.all([...lab.#devices.values()].map((d) => lab.#prepareDevice(d)));
      lab.#poll = setInterval(() => void lab.#pollStates(), 500);
      lab.#poll.unref();
      await lab.#pollStates();
      say('lab: ready');
      return lab;
    } catch (err) {
      await lab.close();
      throw err;
    }
  }

  async #startDevice(cfg: LabDeviceConfig): Promise<void> {
    const kind = LAB_KINDS[cfg.kind]!;
    const dir = join(this.dir, 'devices', cfg.name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const disk = DeviceDisk.create(join(dir, 'disk'), cfg.diskMiB);
    this.#cleanups.push(() => disk.unmount());
    const dataDir = join(disk.dir, 'data');
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const hw = await kind.start({ device: cfg, dir, seed: this.seed });
    this.#cleanups.push(() => hw.close());
    const loopback = plainLoopbackPort(this.brokerUrl);
    const uplink = loopback !== undefined ? await BlackholeProxy.start(loopback) : undefined;
    if (uplink) this.#cleanups.push(() => uplink.close());
    const kekPath = join(dir, 'keys', 'tallybox.kek');
    const { publicKeyPem } = await provisionKeyFiles({ kekPath, dataDir });
    hw.printer?.trust(publicKeyPem);
    const clockFile = join(dir, 'clock-offset-ms');
    writeFileSync(clockFile, '0\n');
    for (let attempt = 1; ; attempt++) {
      const apiPort = await freePort();
      const configFile = join(dir, 'agent.yaml');
      const config = {
        version: 1,
        device: { id: cfg.name, kind: cfg.kind, orgId: cfg.org, ...(cfg.servedOrgs ? { servedOrgs: cfg.servedOrgs } : {}) },
        region: this.config.site.region,
        dataDir,
        broker: { url: uplink?.url ?? this.brokerUrl, allowLoopback: true, keepaliveSec: 5, connectTimeoutMs: 3000, reconnectMinMs: 100, reconnectMaxMs: 1000 },
        outbox: { backlogRatePerSec: 0 },
        punchApi: { enabled: true, port: apiPort },
        clock: { source: 'assume-synced' },
        vault: { kekFile: kekPath },
        cloud: { commandKeys: [{ id: this.#signer.keyId, publicKey: this.#signer.publicKeyBase64() }] },
        log: { level: 'info' },
        ...hw.agentConfig,
      };
      writeFileSync(configFile, toYaml(config), { mode: 0o600 });
      const agent = new AgentChild({ configFile, apiPort, logFile: join(dir, 'agent.log'), clockFile });
      try {
        await agent.start();
      } catch (err) {
        await agent.close();
        // Another process took the port between freePort() and the agent's listen: once more with another.
        if (attempt < 3) continue;
        throw err;
      }
      this.#cleanups.push(() => agent.close());
      const device = new Device({ cfg, dir, hw, agent, uplink, disk, clockFile });
      this.#devices.set(cfg.name, device);
      const off = hw.printer?.onChange((jobId) => void this.#emitPrintJob(device, jobId));
      if (off) this.#cleanups.push(off);
      return;
    }
  }

  /** The repeat window (c1's comes only from ConfigPatch), then everyone this device serves. */
  async #prepareDevice(d: Device): Promise<void> {
    await this.#waitOnline(d, 30_000);
    await this.#command(d, d.cfg.org, { configPatch: { repeatWindowSec: d.cfg.repeatWindowSec } });
    for (const p of this.people.values()) {
      if (!this.#enrolsHere(p, d)) continue;
      await this.#enrolOn(d, p);
    }
  }

  #enrolsHere(p: LabPerson, d: Device): boolean {
    if (d.hw.methods.length === 0) return false; // a print box identifies nobody: no one to enrol there
    const listed = this.config.people.find((x) => x.id === p.id)?.devices;
    return listed ? listed.includes(d.name) : d.servedOrgs.includes(p.org);
  }

  async #waitOnline(d: Device, timeoutMs: number): Promise<void> {
    const end = performance.now() + timeoutMs;
    while (performance.now() < end) {
      const s = await d.agent.state();
      if (s?.online === true) return;
      await sleep(50);
    }
    throw labError('LAB_AGENT_OFFLINE', `device ${d.name}'s agent did not come online within ${timeoutMs} ms; see ${join(d.dir, 'agent.log')}`);
  }

  // ---- views ---------------------------------------------------------------

  device(name: string): DeviceView {
    return this.#view(this.#device(name));
  }

  devices(): DeviceView[] {
    return [...this.#devices.values()].map((d) => this.#view(d));
  }

  persons(): PersonView[] {
    return [...this.people.values()].map((p) => this.#personView(p));
  }

  person(id: string): PersonView {
    return this.#personView(this.#person(id));
  }

  punches(): PunchView[] {
    return [...this.#punches];
  }

  events(sinceId = 0): LabEvent[] {
    return this.#events.filter((e) => e.id > sinceId);
  }

  actions(): RecordedAction[] {
    return [...this.#actions];
  }

  info(): { site: string; region: string; seed: number; broker: string; startedAt: string; dir: string; configSha256: string; devices: number; people: number } {
    return {
      site: this.config.site.name,
      region: this.config.site.region,
      seed: this.seed,
      broker: this.brokerUrl,
      startedAt: this.startedAt,
      dir: this.dir,
      configSha256: this.#configSha,
      devices: this.#devices.size,
      people: this.people.size,
    };
  }

  #device(name: string): Device {
    const d = this.#devices.get(name);
    if (!d) throw labError('LAB_UNKNOWN_DEVICE', `no device "${name}" in this lab (devices: ${[...this.#devices.keys()].join(', ')})`, { device: name });
    return d;
  }

  #person(id: string): LabPerson {
    const p = this.people.get(id);
    if (!p) throw labError('LAB_UNKNOWN_PERSON', `no person "${id}" in this lab`, { person: id });
    return p;
  }

  #view(d: Device): DeviceView {
    const s = d.agent.running ? d.state : undefined;
    const agentPeripherals = Array.isArray(s?.peripherals) ? (s.peripherals as { name: string; online: boolean; detail: string }[]) : [];
    const peripherals = d.hw.peripherals().map((p) => {
      const a = agentPeripherals.find((x) => x.name === p.name);
      return { name: p.name, plugged: p.plugged, online: a ? a.online : null, detail: a?.detail || p.detail || '' };
    });
    for (const a of agentPeripherals) if (!peripherals.some((p) => p.name === a.name)) peripherals.push({ name: a.name, plugged: true, online: a.online, detail: a.detail });
    let freeBytes: number | null = null;
    try {
      freeBytes = d.disk.freeBytes();
    } catch {
      freeBytes = null; // unmounted during close
    }
    const exit = d.agent.lastExit;
    return {
      name: d.name,
      kind: d.cfg.kind,
      org: d.cfg.org,
      servedOrgs: d.servedOrgs,
      methods: [...d.hw.methods],
      agent: { running: d.agent.running, pid: d.agent.pid ?? null, starts: d.agent.starts, lastExit: exit ? (exit.signal ?? `exit ${exit.code}`) : null },
      connected: s?.online === true,
      link: typeof s?.link === 'string' ? s.link : 'LINK_STATUS_UNKNOWN',
      queueDepth: Number(s?.queueDepth ?? 0),
      lastSeq: Number(s?.lastSeq ?? 0),
      alarms: Array.isArray(s?.alarms) ? (s.alarms as { code: string }[]).map((a) => String(a.code)) : [],
      peripherals,
      uplink: d.uplink ? d.uplinkMode : 'unavailable',
      disk: { tmpfs: d.disk.tmpfs, full: d.disk.full, freeBytes, note: d.disk.reason ?? null },
      clock: { offsetMs: d.clockOffsetMs, deviceTimeMs: Date.now() + d.clockOffsetMs, synced: s ? s.clock === 'CLOCK_STATUS_SYNCED' : null },
      enrolled: Object.fromEntries([...d.enrolled].map(([k, v]) => [k, [...v]])),
      printer: d.hw.printer ? { ...d.hw.printer.view(), agent: agentPrinter(s?.printers, d.hw.printer.name) } : null,
    };
  }

  #personView(p: LabPerson): PersonView {
    const traits = [...(p.finger !== undefined ? ['finger'] : []), ...(p.face ? ['face'] : []), ...(p.card ? ['card'] : []), ...(p.phone ? ['phone'] : [])];
    const enrolled: Record<string, string[]> = {};
    for (const d of this.#devices.values()) {
      const m = d.enrolled.get(p.id);
      if (m?.size) enrolled[d.name] = [...m];
    }
    return { id: p.id, org: p.org, subjectId: p.subjectId, minor: p.minor, consent: { ...p.consent }, traits, enrolled };
  }

  // ---- events ----------------------------------------------------------------

  #emit(type: LabEventType, data: Record<string, unknown>): void {
    const e: LabEvent = { id: ++this.#eventId, at: new Date().toISOString(), type, data };
    this.#events.push(e);
    if (this.#events.length > 10_000) this.#events.splice(0, this.#events.length - 10_000);
    this.emit('event', e);
  }

  #onPunch(p: PunchEvent, duplicate: boolean): void {
    if (duplicate) return; // QoS 1 redelivery: the cloud de-duplicates by event id
    const view: PunchView = {
      eventId: p.eventId,
      deviceId: p.deviceId,
      orgId: p.orgId,
      subjectId: p.subjectId,
      person: this.#bySubject.get(p.subjectId) ?? null,
      method: (METHOD_NAMES[p.method] ?? 'UNSPECIFIED').replace('PUNCH_METHOD_', ''),
      seq: Number(p.seq),
      bdSeq: Number(p.bdSeq),
      historical: p.historical,
      clockSynced: p.clockSynced,
      occurredAtMs: Number(p.occurredAtMs),
      receivedAt: new Date().toISOString(),
    };
    this.#punches.push(view);
    this.#emit('punch', { ...view });
  }

  #onResult(r: CommandResult, topic: string): void {
    const t = parseTopic(topic);
    const base = { deviceId: t?.deviceId ?? '', orgId: t?.orgId ?? '', counter: Number(r.counter) };
    // The sink pushed this result's bytes just before calling here: the printer verifies those, byte for byte.
    if (r.printJobStatus) this.#devices.get(base.deviceId)?.hw.printer?.onResult(this.#sink.rawResults().at(-1)!.raw);
    this.#emit('result', { ...base, code: ResultCode[r.code] ?? String(r.code), reason: r.reason });
    if (!r.receipt || r.receipt.length === 0) return;
    try {
      const signed = JSON.parse(Buffer.from(r.receipt).toString('utf8')) as { body: string };
      const rc = JSON.parse(signed.body) as { receiptId: string; kind: string; orgId: string; ok: boolean; verification: string; counts: Record<string, number>; scan?: { hits: number; samples: number } };
      this.#emit('receipt', { ...base, orgId: rc.orgId, receiptId: rc.receiptId, kind: rc.kind, ok: rc.ok, verification: rc.verification, counts: rc.counts, scanHits: rc.scan?.hits ?? null });
    } catch (err) {
      this.#emit('receipt', { ...base, receiptId: null, kind: 'unreadable', ok: false, verification: 'unreadable', error: errorMessage(err) });
    }
  }

  async #pollStates(): Promise<void> {
    await Promise.all(
      [...this.#devices.values()].map(async (d) => {
        const before = JSON.stringify(this.#summary(d));
        d.state = d.agent.running ? await d.agent.state() : undefined;
        if (this.#closed) return;
        const after = JSON.stringify(this.#summary(d));
        if (after !== before) this.#emit('device', this.#view(d) as unknown as Record<string, unknown>);
      }),
    );
  }

  /** What a device-state event is sent for (not every tick's clock). */
  #summary(d: Device): unknown {
    const v = this.#view(d);
    return { ...v, clock: { offsetMs: v.clock.offsetMs, synced: v.clock.synced }, disk: { ...v.disk, freeBytes: null } };
  }

  // ---- actions -----------------------------------------------------------------

  /** Validate, record and run one action (in its device's queue). */
  async act(input: unknown): Promise<Record<string, unknown>> {
    if (this.#closed) throw labError('LAB_CLOSED', 'the lab is shutting down');
    const parsed = LabActionSchema.safeParse(input);
    if (!parsed.success) {
      const i = parsed.error.issues[0]!;
      throw labError('LAB_BAD_REQUEST', `${i.path.join('.') || 'body'}: ${i.message}`);
    }
    const action = parsed.data;
    // Name checks before recording: a record holds only actions that ran.
    if ('device' in action && action.device !== undefined) this.#device(action.device);
    if ('person' in action) this.#person(action.person);
    if (action.type === 'present') {
      const d = this.#device(action.device);
      if (!d.hw.methods.includes(action.method)) throw labError('LAB_METHOD_UNAVAILABLE', `device ${d.name} has no peripheral for "${action.method}" (it takes: ${d.hw.methods.join(', ')})`);
    }
    if (action.type === 'print' || action.type === 'printer') this.#printerOf(this.#device(action.device));
    if (action.type === 'print') this.#printerOf(this.#device(action.device)).validate(action);
    if (action.type === 'withdraw' && !this.config.orgs.some((o) => o.id === action.org)) throw labError('LAB_UNKNOWN_ORG', `no organisation "${action.org}" in this lab`, { org: action.org });
    const rec: RecordedAction = { type: 'action', seq: ++this.#actionSeq, t: Math.round(performance.now() - this.#t0), at: new Date().toISOString(), action };
    this.#actions.push(rec);
    this.#recorder?.write(rec);
    this.#emit('action', { seq: rec.seq, action });
    return this.#run(action);
  }

  #run(a: LabAction): Promise<Record<string, unknown>> {
    switch (a.type) {
      case 'present': {
        const d = this.#device(a.device);
        return d.queue.run(() => this.#present(d, this.#person(a.person), a.method));
      }
      case 'uplink': {
        const d = this.#device(a.device);
        return d.queue.run(async () => {
          if (!d.uplink) throw labError('LAB_UPLINK_FAULT_UNAVAILABLE', `device ${d.name}'s broker ${this.brokerUrl} is not a plain loopback one the lab can put a proxy in front of`);
          d.uplink.cut(a.mode === 'cut');
          d.uplink.blackhole(a.mode === 'blackhole');
          d.uplinkMode = a.mode;
          return this.#afterFault(d);
        });
      }
      case 'peripheral': {
        const d = this.#device(a.device);
        return d.queue.run(async () => {
          await d.hw.setPlugged(a.peripheral, a.plugged);
          return this.#afterFault(d);
        });
      }
      case 'disk': {
        const d = this.#device(a.device);
        return d.queue.run(async () => {
          d.disk.setFull(a.full);
          // The agent re-reads the free space at most once a second while it last saw plenty
          // (src/store/disk-space.ts): a punch within that second may still be accepted into the room
          // its WAL already has. Filled, the disk is full for the device once that second is out.
          if (a.full) await sleep(AGENT_DISK_RECHECK_MS + 250);
          return this.#afterFault(d);
        });
      }
      case 'clock': {
        const d = this.#device(a.device);
        return d.queue.run(async () => {
          writeFileSync(d.clockFile, `${a.offsetMs}\n`);
          d.clockOffsetMs = a.offsetMs;
          // The agent re-reads the offset every 200 ms.
          await sleep(300);
          return this.#afterFault(d);
        });
      }
      case 'agent': {
        const d = this.#device(a.device);
        return d.queue.run(async () => {
          if (a.op === 'kill') await d.agent.kill();
          else {
            if (d.agent.running) await d.agent.stop();
            await d.agent.start();
          }
          return this.#afterFault(d);
        });
      }
      case 'enrol': {
        const p = this.#person(a.person);
        const targets = a.device ? [this.#device(a.device)] : [...this.#devices.values()].filter((d) => this.#enrolsHere(p, d));
        return this.#each(targets, (d) => this.#enrolOn(d, p));
      }
      case 'erase': {
        const p = this.#person(a.person);
        const targets = [...this.#devices.values()].filter((d) => d.servedOrgs.includes(p.org));
        return this.#each(targets, async (d) => {
          const r = await this.#command(d, p.org, { subjectErase: { subjectId: p.subjectId } });
          if (r.code === 'RESULT_CODE_OK') {
            d.enrolled.delete(p.id);
            d.upserted.delete(p.id);
          }
          return r;
        });
      }
      case 'print': {
        const d = this.#device(a.device);
        return d.queue.run(() => this.#print(d, a.source, a.pages));
      }
      case 'printer': {
        const d = this.#device(a.device);
        return d.queue.run(async () => {
          this.#printerOf(d).setFault(a.fault, a.on, a.afterBytes);
          return this.#afterFault(d);
        });
      }
      case 'withdraw': {
        const targets = [...this.#devices.values()].filter((d) => d.servedOrgs.includes(a.org));
        return this.#each(targets, async (d) => {
          const r = await this.#command(d, a.org, { orgWithdraw: { reason: 'lab_withdraw' } });
          if (r.code === 'RESULT_CODE_OK') {
            for (const p of this.people.values()) {
              if (p.org !== a.org) continue;
              d.enrolled.delete(p.id);
              d.upserted.delete(p.id);
            }
          }
          return r;
        });
      }
    }
  }

  #printerOf(d: Device): LabPrinter {
    if (!d.hw.printer) throw labError('PRINT_NOT_AVAILABLE', `device ${d.name} is a ${d.cfg.kind}, not a print box: only p1 devices take print jobs and printer faults`, { device: d.name });
    return d.hw.printer;
  }

  /** A print job's current view (device report next to the evidence), or an error for a device without a printer. */
  async printJobs(name: string): Promise<{ printer: NonNullable<DeviceView['printer']>; jobs: Awaited<ReturnType<LabPrinter['jobs']>> }> {
    const d = this.#device(name);
    const printer = this.#printerOf(d);
    return { printer: this.#view(d).printer!, jobs: await printer.jobs() };
  }

  /** In order: a job's views are computed (hashing the recordings) one at a time, so an older one never follows a newer. */
  #emitPrintJob(d: Device, jobId: string): Promise<void> {
    return this.#printEvents.run(async () => {
      const job = await d.hw.printer?.job(jobId).catch(() => undefined); // a recording half-gone at close: no event
      if (job && !this.#closed) this.#emit('print', { deviceId: d.name, ...job });
    });
  }

  async #print(d: Device, source: 'inline' | 'fetch', pages: number): Promise<Record<string, unknown>> {
    const printer = this.#printerOf(d);
    if (!d.agent.running) throw labError('LAB_AGENT_DOWN', `device ${d.name}'s agent is not running (restart it first)`);
    // Job ids follow the device's action order, so a replay sends the same ids.
    const jobId = `${d.name}-job-${++d.printJobs}`;
    const job = printer.prepare(jobId, { source, pages });
    const result = await this.#command(d, d.cfg.org, job.body, 60_000, (counter) => job.record(counter));
    return { result, job: await printer.job(jobId) };
  }

  async #each(targets: Device[], fn: (d: Device) => Promise<CommandOutcome>): Promise<Record<string, unknown>> {
    const results = await Promise.all(targets.map((d) => d.queue.run(() => fn(d))));
    return { results };
  }

  async #afterFault(d: Device): Promise<Record<string, unknown>> {
    d.state = d.agent.running ? await d.agent.state() : undefined;
    const v = this.#view(d);
    this.#emit('device', v as unknown as Record<string, unknown>);
    return { device: v };
  }

  async #present(d: Device, p: LabPerson, method: LabMethod): Promise<Record<string, unknown>> {
    if (!d.hw.methods.includes(method)) throw labError('LAB_METHOD_UNAVAILABLE', `device ${d.name} has no peripheral for "${method}" (it takes: ${d.hw.methods.join(', ')})`);
    if (!d.agent.running) throw labError('LAB_AGENT_DOWN', `device ${d.name}'s agent is not running (restart it first)`);
    // The sequence number before, read from an answer: a state request that timed out (a loaded
    // machine) once counted as seq 0, so any later answer looked like a new punch.
    const before = await this.#lastSeq(d);
    // A refusal the agent logs is its verdict at once; listening starts before the presentation.
    let refused = false;
    const off = d.agent.onLog((l) => {
      if (typeof l.event === 'string' && REFUSAL_EVENTS.has(l.event)) refused = true;
    });
    try {
      const r = await d.hw.present(p, method);
      if (r === 'no-match') return { outcome: 'no-match' };
      // The agent's verdict: a new sequence number is a punch accepted on disk. A refusal it does not
      // log (a repeat inside the window) is only known by the time it takes: generously, since an
      // accepted punch on a loaded machine must not be mistaken for one.
      const end = performance.now() + PRESENT_VERDICT_MS;
      for (;;) {
        const wasRefused = refused; // read before the state: a refusal logged meanwhile gets one more look
        const s = await d.agent.state();
        const seq = Number(s?.lastSeq ?? Number.NaN);
        if (seq > before) return { outcome: 'punch', seq };
        if ((wasRefused && s !== undefined) || performance.now() > end) return { outcome: 'no-punch' };
        await sleep(25);
      }
    } finally {
      off();
    }
  }

  /** The agent's last accepted sequence number, from a state it answered (LAB_AGENT_UNRESPONSIVE when it does not). */
  async #lastSeq(d: Device, timeoutMs = 30_000): Promise<number> {
    const end = performance.now() + timeoutMs;
    for (;;) {
      const s = await d.agent.state();
      if (s !== undefined) return Number(s.lastSeq ?? 0);
      if (!d.agent.running) throw labError('LAB_AGENT_DOWN', `device ${d.name}'s agent is not running (restart it first)`);
      if (performance.now() > end) throw labError('LAB_AGENT_UNRESPONSIVE', `device ${d.name}'s agent did not answer its state within ${timeoutMs} ms`, { device: d.name });
      await sleep(100);
    }
  }

  /** Sign a command for one device and wait for its result. */
  async #command(d: Device, orgId: string, body: CommandBodyProps, timeoutMs = 60_000, beforeSend?: (counter: number) => void): Promise<CommandOutcome> {
    // Signed and its counter read in one synchronous step: commands to several devices go out side by side.
    const bytes = this.#signer.sign({ deviceId: d.name, orgId, ...body });
    const counter = this.#signer.lastCounter;
    beforeSend?.(counter);
    await this.#sink.sendRaw(orgId, d.name, bytes);
    try {
      const { result } = await this.#sink.waitForResult(counter, timeoutMs);
      return { device: d.name, counter, code: ResultCode[result.code] ?? String(result.code), reason: result.reason };
    } catch (err) {
      return { device: d.name, counter, code: 'LAB_NO_RESULT', reason: errorMessage(err) };
    }
  }

  /** Next enrolment log line of `tag` from this device's agent (the role logs one per invitation it ran). */
  #enrolWaiter(d: Device, tag: string, timeoutMs = 60_000): { done: Promise<EnrolOutcome>; cancel(o: EnrolOutcome): void } {
    let settle!: (o: EnrolOutcome) => void;
    const done = new Promise<EnrolOutcome>((resolve) => {
      const timer = setTimeout(() => finish({ ok: false, code: 'LAB_ENROL_TIMEOUT' }), timeoutMs);
      const off = d.agent.onLog((l: AgentLogLine) => {
        if (l.event === `${tag}_enrolled_on_upsert`) finish({ ok: true });
        else if (l.event === `${tag}_enrol_skipped`) finish({ ok: false, code: typeof l.code === 'string' ? l.code : 'ERROR' });
      });
      function finish(o: EnrolOutcome) {
        clearTimeout(timer);
        off();
        resolve(o);
      }
      settle = finish;
    });
    return { done, cancel: (o) => settle(o) };
  }

  /**
   * SubjectUpsert (consents, credentials, and an enrolment invitation for
   * each biometric the device has and the person has not enrolled here yet),
   * then the person at the terminal. A face enrolment whose captures
   * disagreed is invited again (up to three times), as staff would.
   */
  async #enrolOn(d: Device, p: LabPerson): Promise<CommandOutcome> {
    let outcome: CommandOutcome | undefined;
    const enrolled: { modality: string; ok: boolean; code?: string }[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const have = d.enrolled.get(p.id) ?? new Set<string>();
      const mods = d.hw.modalities(p).filter((m) => !have.has(m));
      const credentials = d.hw.credentials(p);
      const consents = [
        ...(mods.some((m) => p.consent[m]) ? [{ kind: ConsentKind.CONSENT_KIND_BIOMETRIC, grantedAtMs: Date.now(), evidence: 'lab consent record' }] : []),
        ...(p.consent.guardian ? [{ kind: ConsentKind.CONSENT_KIND_GUARDIAN, grantedAtMs: Date.now(), evidence: 'lab guardian record' }] : []),
      ];
      const waiters = new Map(mods.map((m) => [m, this.#enrolWaiter(d, ENROL_LOG[m])] as const));
      outcome = await this.#command(d, p.org, {
        subjectUpsert: {
          subjectId: p.subjectId,
          displayName: p.name,
          minor: p.minor,
          consents,
          credentials,
          enrol: mods.map((m) => (m === 'fingerprint' ? Modality.MODALITY_FINGERPRINT : Modality.MODALITY_FACE)),
        },
      });
      if (outcome.code !== 'RESULT_CODE_OK') {
        for (const w of waiters.values()) w.cancel({ ok: false, code: outcome.reason });
        return { ...outcome, enrolled };
      }
      d.upserted.add(p.id);
      for (const c of credentials) have.add(c.kind === CredentialKind.CREDENTIAL_KIND_CARD ? 'card' : 'phone');
      if (have.size) d.enrolled.set(p.id, have);
      const results = await Promise.all(
        mods.map(async (m) => {
          const w = waiters.get(m)!;
          await d.hw.enrol(p, m, w.done).catch((err: unknown) => w.cancel({ ok: false, code: isTallyboxError(err) ? err.code : 'LAB_ENROL_FAILED' }));
          return { modality: m, ...(await w.done) };
        }),
      );
      let retry = false;
      for (const r of results) {
        if (r.ok) {
          have.add(r.modality);
          d.enrolled.set(p.id, have);
        }
        if (!r.ok && r.code === 'FACE_CAPTURES_INCONSISTENT' && attempt < 3) retry = true;
        else enrolled.push(r);
      }
      if (!retry) break;
    }
    return { ...outcome!, enrolled };
  }

  // ---- replay -------------------------------------------------------------------

  /**
   * Run a record's actions again, in order, each at its recorded offset from
   * the start (or as soon as the one before it finished). Refused when the
   * record was made with another lab file or seed.
   */
  async replay(file: string, opts: { onAction?: (a: RecordedAction, r: Record<string, unknown> | { error: string }) => void } = {}): Promise<{ actions: number; failed: number }> {
    const { header, actions } = readRecord(file);
    if (header.configSha256 !== this.#configSha) throw new TallyboxError('LAB_REPLAY_MISMATCH', `${file} was recorded with another lab file (sha256 ${header.configSha256.slice(0, 12)}…, this one is ${this.#configSha.slice(0, 12)}…)`);
    if (header.seed !== this.seed) throw new TallyboxError('LAB_REPLAY_MISMATCH', `${file} was recorded with seed ${header.seed}, this lab runs with seed ${this.seed}`);
    const t0 = performance.now();
    let failed = 0;
    for (const a of actions) {
      const wait = a.t - (performance.now() - t0);
      if (wait > 0) await sleep(wait);
      try {
        const r = await this.act(a.action);
        opts.onAction?.(a, r);
      } catch (err) {
        failed++;
        opts.onAction?.(a, { error: isTallyboxError(err) ? `${err.code}: ${err.message}` : errorMessage(err) });
      }
    }
    return { actions: actions.length, failed };
  }

  /** Wait until every punch the agents accepted has reached the cloud (or the timeout). */
  async settle(timeoutMs = 30_000): Promise<boolean> {
    const end = performance.now() + timeoutMs;
    while (performance.now() < end) {
      await this.#pollStates();
      const pending = [...this.#devices.values()].some((d) => d.agent.running && Number(d.state?.queueDepth ?? 0) > 0);
      if (!pending) return true;
      await sleep(100);
    }
    return false;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#poll) clearInterval(this.#poll);
    for (const f of this.#cleanups.splice(0).reverse())
      await Promise.resolve()
        .then(f)
        .catch(() => undefined); // every clean-up runs even when one fails (a child already gone, a mount already unmounted)
    if (this.#ownDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The agent's longest reuse of a free-space lookup (DiskSpaceCheck's default interval). */
const AGENT_DISK_RECHECK_MS = 1000;

/** How long a presentation may take to become a punch before it counts as refused (see #present). */
const PRESENT_VERDICT_MS = 30_000;

/** Agent log events that say a presentation was not a punch (no personal data in them). */
const REFUSAL_EVENTS = new Set(['punch_refused', 'm2_card_unknown', 'm2_card_invalid', 'm2_spoof']);

/** The agent's own summary of one printer from its DeviceState (JSON), or null when it reports none. */
function agentPrinter(printers: unknown, name: string): { state: string; reasons: string[]; jobsWaiting: number; jobsUncertain: number } | null {
  if (!Array.isArray(printers)) return null;
  const p = (printers as { name?: string; state?: string; reasons?: string[]; jobsWaiting?: number; jobsUncertain?: number }[]).find((x) => x.name === name);
  return p ? { state: String(p.state ?? 'unknown'), reasons: Array.isArray(p.reasons) ? p.reasons.map(String) : [], jobsWaiting: Number(p.jobsWaiting ?? 0), jobsUncertain: Number(p.jobsUncertain ?? 0) } : null;
}

/** The port of a plain mqtt:// URL on loopback (the lab can put a proxy in front of it), else undefined. */
function plainLoopbackPort(url: string): number | undefined {
  try {
    const u = new URL(url);
    if ((u.protocol !== 'mqtt:' && u.protocol !== 'tcp:') || !['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) return undefined;
    return Number(u.port || 1883);
  } catch {
    return undefined; // not a URL: the agent's config validation names it
  }
}
