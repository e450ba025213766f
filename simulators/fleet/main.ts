/**
 * `tallybox-sim fleet`: N full agents against one broker, a scaled-out
 * consumer behind a shared subscription, and a report of what arrived.
 *
 *   tallybox-sim fleet --devices N [--broker mosquitto|embedded|URL] --rate R --duration S
 *                      [--consumers K] [--procs P] [--source-addresses A,B,...] [--chaos] [--json]
 */
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { runFleet, type FleetProgress, type FleetReport } from './run.js';

const HELP = `usage: tallybox-sim fleet --devices N --rate R --duration S [--broker mosquitto|embedded|URL]
                          [--consumers K] [--procs P] [--source-addresses A,B,...] [--chaos] [--json]

  --devices N     devices, each a full agent (own data dir, SQLite outbox, MQTT connection)
  --rate R        punches per second per device (fractions allowed: 0.2 = one every 5 s)
  --duration S    seconds of production; then the outboxes drain and the report is printed
  --broker B      mosquitto (default: start one on a free port), embedded (aedes: one
                  consumer, no shared subscriptions), or mqtt://host:port of a running broker
  --consumers K   punch consumers sharing $share/tallybox-cloud/tallybox/v1/+/+/punch (default 2)
  --procs P       worker processes the devices are spread over (default: one per core, up to
                  two per core past 500 punches/s per process, more for the open-file limit)
  --source-addresses A,B,...
                  source IP addresses dealt round-robin over the devices' connections. Default:
                  the kernel's one while the connections fit in half the ephemeral port range
                  (/proc/sys/net/ipv4/ip_local_port_range); past that, 127.0.0.2, 127.0.0.3, ...
                  as needed on a loopback broker (a remote broker needs this host's addresses here)
  --chaos         SIGKILL and restart worker processes (their agents replay their outboxes)
                  and consumers at random during the run
  --data-dir DIR  keep the devices' data dirs here (kept afterwards; reused by the next run: each
                  device continues its seq). Default: a temp dir in /dev/shm, removed afterwards
                  (one disk's fsync queue shared by N outboxes is not what a fleet of devices has)
  --bare          baseline: bare mqtt clients instead of agents (no outbox)
  --json          print the report as JSON on stdout (progress stays on stderr)
exit status: 0 when nothing was lost, no seq was reused and every device's seq is complete; 1 otherwise.`;

function usageError(message: string): number {
  process.stderr.write(`tallybox: FLEET_USAGE: ${message}\n${HELP}\n`);
  return 2;
}

function positive(name: string, v: string | undefined, integer: boolean): number | string {
  if (v === undefined) return `--${name} is required`;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) return `--${name} must be a positive ${integer ? 'integer' : 'number'}, not "${v}"`;
  return n;
}

const ms = (n: number) => (Number.isFinite(n) ? `${n.toFixed(3)} ms` : '–');
const fmt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');

function progressLine(p: FleetProgress): string {
  const lag = p.lagP99Ms === undefined ? '–' : `${fmt(p.lagP99Ms)} ms`;
  return `[${p.phase} ${p.elapsedSec.toFixed(0)} s] connected ${fmt(p.connected)}/${fmt(p.devices)} · accepted ${fmt(p.accepted)} · queued ${fmt(p.queued)} · received ${fmt(p.received)} · dup ${fmt(p.duplicates)} · lag p99 ${lag}`;
}

export function formatReport(r: FleetReport): string {
  const d = r.delivery;
  const lines = [
    `fleet: ${fmt(r.devices)} ${r.mode === 'bare' ? 'bare mqtt clients' : 'agents'} in ${r.procs} process(es), ${r.consumers} consumer(s)${r.sharedSubscriptions ? ' on a shared subscription' : ''}, broker ${r.broker}`,
    `  ${r.ratePerDevice} punch/s per device for ${r.durationSec.toFixed(1)} s (start-up ${r.startSec.toFixed(1)} s, drain ${r.drainedInSec.toFixed(1)} s)`,
    `  accepted ${fmt(r.accepted)} (${fmt(r.acceptedPerSec)}/s), refused ${fmt(r.refused)}; delivered ${fmt(r.throughputPerSec)}/s while producing`,
    `  accept → consumer: p50 ${fmt(r.latencyMs.p50)} ms, p90 ${fmt(r.latencyMs.p90)} ms, p99 ${fmt(r.latencyMs.p99)} ms, max ${fmt(r.latencyMs.max)} ms (${fmt(r.latencyMs.samples)} samples)`,
    `  lost ${fmt(d.lost)}, duplicates ${fmt(d.duplicates)} (repeated event ids, dropped), seq reused ${fmt(d.conflicts)}, out-of-order arrivals ${fmt(d.outOfOrder)} (re-ordered by seq)`,
    `  devices complete ${fmt(d.devicesComplete)}/${fmt(r.devices)}${d.unknownDevices.length ? `; unknown devices ${d.unknownDevices.length}` : ''}`,
    `  memory: ${r.memory.rssPerDeviceMb.toFixed(2)} MB RSS per device, ${r.memory.heapPerDeviceMb.toFixed(2)} MB of it JS heap (${fmt(r.memory.rssTotalMb)} MB over ${r.procs} process(es), ${fmt(r.memory.rssBasePerProcMb)} MB each before any device)`,
    `  CPU per punch: ${ms(r.cpu.workersMsPerPunch)} device processes (all threads), ${ms(r.cpu.consumersMsPerPunch)} consumers, ${ms(r.cpu.coordinatorMsPerPunch)} ordering stage, ${ms(r.cpu.brokerMsPerPunch)} broker; idle device ${ms(r.cpu.idleMsPerDeviceSec)}/s`,
    `  source addresses: ${r.sourceAddresses.addresses.length ? r.sourceAddresses.addresses.join(', ') : 'one'} (${r.sourceAddresses.reason})`,
  ];
  if (r.chaos.length) lines.push(`  chaos: ${r.chaos.length} kills (${r.chaos.filter((c) => c.target === 'worker').length} worker processes, ${r.chaos.filter((c) => c.target === 'consumer').length} consumers)`);
  for (const w of d.worst)
    lines.push(
      `    ${w.deviceId}: last seq ${w.lastAccepted}, missing ${w.missing.length}${w.missing.length ? ` (${w.missing.slice(0, 8).join(', ')}${w.missing.length > 8 ? ', …' : ''})` : ''}, duplicates ${w.duplicates}, seq reused ${w.conflicts}, out of order ${w.outOfOrder}`,
    );
  for (const n of r.notes) lines.push(`  note: ${n}`);
  lines.push(fleetOk(r) ? '  OK: nothing lost, no seq reused, every device complete' : '  FAILED: see above');
  return lines.join('\n');
}

export function fleetOk(r: FleetReport): boolean {
  return !r.timedOut && r.delivery.lost === 0 && r.delivery.conflicts === 0 && r.delivery.incompleteDevices.length === 0 && r.delivery.unknownDevices.length === 0;
}

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        devices: { type: 'string' },
        broker: { type: 'string', default: 'mosquitto' },
        rate: { type: 'string' },
        duration: { type: 'string' },
        consumers: { type: 'string', default: '2' },
        procs: { type: 'string' },
        'source-addresses': { type: 'string' },
        'data-dir': { type: 'string' },
        chaos: { type: 'boolean', default: false },
        bare: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    return usageError(err instanceof Error ? err.message : String(err));
  }
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const devices = positive('devices', values.devices, true);
  const rate = positive('rate', values.rate, false);
  const duration = positive('duration', values.duration, false);
  const consumers = positive('consumers', values.consumers, true);
  const procs = values.procs === undefined ? undefined : positive('procs', values.procs, true);
  for (const v of [devices, rate, duration, consumers, procs]) if (typeof v === 'string') return usageError(v);
  const broker = values.broker!;
  if (!['mosquitto', 'embedded'].includes(broker) && !/^mqtts?:\/\//.test(broker)) return usageError(`--broker must be mosquitto, embedded or an mqtt:// URL, not "${broker}"`);
  const sourceAddresses = values['source-addresses']?.split(',').map((a) => a.trim());
  const badAddress = sourceAddresses?.find((a) => isIP(a) === 0);
  if (badAddress !== undefined) return usageError(`--source-addresses takes IP addresses separated by commas, not "${badAddress}"`);
  const tty = process.stderr.isTTY;
  const report = await runFleet({
    devices: devices as number,
    rate: rate as number,
    durationSec: duration as number,
    consumers: consumers as number,
    ...(procs !== undefined ? { procs: procs as number } : {}),
    broker,
    ...(values['data-dir'] ? { root: values['data-dir'] } : {}),
    ...(sourceAddresses ? { sourceAddresses } : {}),
    chaos: values.chaos,
    mode: values.bare ? 'bare' : 'agent',
    // A live line on a terminal; a line every 5 s otherwise (logs, CI).
    onProgress: (p) => {
      if (tty) process.stderr.write(`\r\x1b[2K${progressLine(p)}`);
      else if (Math.round(p.elapsedSec) % 5 === 0) process.stderr.write(`${progressLine(p)}\n`);
    },
  });
  if (tty) process.stderr.write('\r\x1b[2K');
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
  return fleetOk(report) ? 0 : 1;
}
