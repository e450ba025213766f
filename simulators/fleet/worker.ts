/**
 * A fleet worker process: runs a slice of the fleet, each device a full
 * Agent (its own data dir and SQLite outbox, its own MQTT connection and
 * client id), and produces punches through the agent's real accept path
 * (`agent.punch()`, resolved once the punch is on disk).
 *
 *   fork(worker.js, [JSON.stringify(WorkerSpec)])
 *
 * The coordinator may SIGKILL this process at any time (chaos) and fork it
 * again on the same data dirs: the agents reopen their outboxes and replay
 * whatever was not acknowledged.
 */
import { mkdirSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { createLogger, type Logger } from '../../src/util/log.js';
import { errorMessage } from '../../src/util/errors.js';
import mqtt, { MqttClient } from 'mqtt';
import { EgressGate } from '../../src/link/egress.js';
import { topic } from '../../src/link/topics.js';
import { uuidv7 } from '../../src/util/uuidv7.js';
import { hrNowMs } from '../cloud/consumer.js';
import { processCpuMs } from './cpu.js';

export interface WorkerSpec {
  url: string;
  orgId: string;
  /** Device ids of this slice; each keeps its data in root/<id>. */
  devices: string[];
  root: string;
  /** Punches per second per device. */
  rate: number;
  /** Agents started at once (start-up is SQLite opens and CONNECTs). */
  startConcurrency?: number;
  /**
   * 'agent' (default): full agents. 'bare': the baseline — one bare mqtt.js
   * client per device publishing the same punch payloads at QoS 1, no outbox
   * (what a synthetic load tool does); nothing survives a kill.
   */
  mode?: 'agent' | 'bare';
  /**
   * Source addresses dealt round-robin over the whole fleet (addresses.ts):
   * device `firstIndex + i` of the fleet leaves from `sourceAddresses[(firstIndex + i) % length]`.
   * Absent or empty: the kernel's choice.
   */
  sourceAddresses?: string[];
  firstIndex?: number;
}

/** What the producer loop needs of one device, agent or bare client. */
interface FleetDevice {
  readonly id: string;
  readonly connected: boolean;
  /** Accepted and not yet acknowledged by the broker. */
  readonly depth: number;
  readonly lastSeq: number;
  punch(subjectId: string): Promise<number>;
  stop(): Promise<void>;
}

function agentDevice(a: Agent, orgId: string): FleetDevice {
  return {
    id: a.config.device.id,
    get connected() {
      return a.session !== undefined;
    },
    get depth() {
      return a.outbox.depth;
    },
    get lastSeq() {
      return a.outbox.lastSeq;
    },
    punch: async (subjectId) => (await a.punch({ orgId, subjectId, method: 3 })).seq,
    stop: () => a.stop(),
  };
}

function bareDevice(id: string, spec: WorkerSpec, localAddress: string | undefined): FleetDevice {
  const options = { clientId: `tallybox-bare-${id}`, clean: true, protocolVersion: 5, reconnectPeriod: 1000 } as const;
  // mqtt.js's own TCP stream takes no source address: with one, the client gets its socket from a stream builder.
  const client = localAddress ? new MqttClient(() => netConnect({ ...brokerHostPort(spec.url), localAddress }), options) : mqtt.connect(spec.url, options);
  const gate = new EgressGate({ deviceId: id, operatorOrgId: spec.orgId });
  const punchTopic = topic(spec.orgId, id, 'punch');
  let seq = 0;
  let unacked = 0;
  return {
    id,
    get connected() {
      return client.connected;
    },
    get depth() {
      return unacked;
    },
    get lastSeq() {
      return seq;
    },
    punch: (subjectId) => {
      const s = ++seq;
      const payload = gate.encodePunch({ eventId: uuidv7(), orgId: spec.orgId, subjectId, method: 3, occurredAtMs: Date.now(), clockSynced: true, seq: s, matchScore: 0, liveness: 0 }, { bdSeq: 1, historical: false });
      unacked++;
      client.publish(punchTopic, Buffer.from(payload), { qos: 1 }, () => unacked--);
      return Promise.resolve(s);
    },
    stop: () => client.endAsync(true),
  };
}

export type WorkerUp =
  | { t: 'started'; rssBaseMb: number; heapBaseMb: number }
  | { t: 'ready'; connected: number; rssMb: number; startMs: number }
  | { t: 'accepts'; items: [string, number, number][] }
  | { t: 'status'; connected: number; accepted: number; depth: number; refused: number; rssMb: number; heapMb: number; cpuMs: number }
  | { t: 'drained'; lastSeq: Record<string, number> }
  | { t: 'stopped' };
export type WorkerDown = { t: 'produce' } | { t: 'halt' } | { t: 'drain' } | { t: 'stop' };

const rssMb = () => process.memoryUsage.rss() / 2 ** 20;

const brokerHostPort = (url: string) => {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 1883) };
};

/**
 * A fleet device's configuration. Two intervals differ from a lone device's
 * defaults, because N agents share this host's CPU where each real device
 * has its own: MQTT keepalive 60 s (30 s default; a PINGREQ per device per
 * minute, and the drain's ack watchdog, 3 × keepalive, gives an overloaded
 * broker 180 s before a link is recycled and its in-flight window re-sent),
 * and the incident check every 60 s (5 s default: a SQLite read per device per
 * check, 200 reads/s for 1,000 devices; BENCHMARKS.md, fleet section).
 */
function deviceConfig(spec: WorkerSpec, id: string, localAddress: string | undefined) {
  return validateConfig({
    version: 1,
    device: { id, kind: 'sim', orgId: spec.orgId },
    region: 'sg',
    dataDir: join(spec.root, id),
    broker: { url: spec.url, allowLoopback: true, reconnectMinMs: 200, reconnectMaxMs: 5000, keepaliveSec: 60, ...(localAddress ? { localAddress } : {}) },
    clock: { source: 'assume-synced' },
    incidents: { checkSec: 60 },
    log: { level: 'error' },
  });
}

async function startAll(spec: WorkerSpec, logger: Logger): Promise<FleetDevice[]> {
  const agents: FleetDevice[] = new Array(spec.devices.length);
  let next = 0;
  const one = async () => {
    while (next < spec.devices.length) {
      const i = next++;
      const id = spec.devices[i]!;
      const from = spec.sourceAddresses?.length ? spec.sourceAddresses[((spec.firstIndex ?? 0) + i) % spec.sourceAddresses.length] : undefined;
      if (spec.mode === 'bare') {
        agents[i] = bareDevice(id, spec, from);
        continue;
      }
      mkdirSync(join(spec.root, id), { recursive: true, mode: 0o700 });
      agents[i] = agentDevice(await Agent.start({ config: deviceConfig(spec, id, from), logger: logger.child({ deviceId: id }) }), spec.orgId);
    }
  };
  await Promise.all(Array.from({ length: spec.startConcurrency ?? 16 }, one));
  return agents;
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as WorkerSpec;
  const send = (m: WorkerUp) => process.send?.(m);
  process.on('disconnect', () => process.exit(0)); // the coordinator is gone: nobody counts these punches
  send({ t: 'started', rssBaseMb: rssMb(), heapBaseMb: process.memoryUsage().heapUsed / 2 ** 20 });
  const logger = createLogger({ level: 'error' });
  const t0 = performance.now();
  const agents = await startAll(spec, logger);
  const connected = () => agents.reduce((n, a) => n + (a.connected ? 1 : 0), 0);
  while (connected() < agents.length) await new Promise((r) => setTimeout(r, 50));
  send({ t: 'ready', connected: agents.length, rssMb: rssMb(), startMs: performance.now() - t0 });

  let producing = false;
  let accepted = 0;
  let refused = 0;
  /** punch() calls not settled yet: the last seq is read only once none is left. */
  let unsettled = 0;
  let accepts: [string, number, number][] = [];
  // Each device fires every 1/rate s, at its own random phase (a fleet does not punch in lock-step).
  const periodMs = 1000 / spec.rate;
  const due = agents.map(() => performance.now() + Math.random() * periodMs);
  const TICK_MS = Math.min(50, periodMs);
  const tick = setInterval(() => {
    if (!producing) return;
    const now = performance.now();
    for (let i = 0; i < agents.length; i++) {
      // Behind by more than a second (a stalled loop): skip ahead rather than burst.
      if (due[i]! < now - 1000) due[i] = now;
      while (due[i]! <= now) {
        due[i]! += periodMs;
        const a = agents[i]!;
        const t = hrNowMs();
        unsettled++;
        a.punch(`subject-${i % 97}`).then(
          (seq) => {
            unsettled--;
            accepted++;
            accepts.push([a.id, seq, t]);
          },
          () => {
            unsettled--;
            refused++; // QUEUE_FULL, DISK_FULL, stopping: counted, the coordinator reports it
          },
        );
      }
    }
  }, TICK_MS);
  const report = setInterval(() => {
    if (accepts.length > 0) send({ t: 'accepts', items: accepts });
    accepts = [];
    const depth = agents.reduce((n, a) => n + a.depth, 0);
    send({ t: 'status', connected: connected(), accepted, depth, refused, rssMb: rssMb(), heapMb: process.memoryUsage().heapUsed / 2 ** 20, cpuMs: processCpuMs() });
  }, 250);

  process.on('message', (m: WorkerDown) => {
    if (m.t === 'produce') producing = true;
    else if (m.t === 'halt') producing = false;
    else if (m.t === 'drain') {
      producing = false;
      clearInterval(tick);
      void (async () => {
        // Every accept in flight settles, then the outboxes empty (every punch PUBACKed).
        while (unsettled > 0 || agents.some((a) => a.depth > 0)) await new Promise((r) => setTimeout(r, 100));
        if (accepts.length > 0) send({ t: 'accepts', items: accepts });
        accepts = [];
        send({ t: 'drained', lastSeq: Object.fromEntries(agents.map((a) => [a.id, a.lastSeq])) });
      })();
    } else if (m.t === 'stop') {
      clearInterval(tick);
      clearInterval(report);
      void Promise.all(agents.map((a) => a.stop().catch((err: unknown) => logger.error({ event: 'fleet_agent_stop_failed', err: errorMessage(err) }, 'agent did not stop cleanly')))).finally(() => {
        send({ t: 'stopped' });
        process.exit(0);
      });
    }
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`tallybox-sim fleet worker: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
