/**
 * `tallybox demo --device c1`: Wi-Fi presence punches on one machine — an
 * embedded broker, the cloud emulator (which signs the commands), the
 * simulated office network (tallybox-sim wifi in-process: hostapd control
 * sockets on two bands and a dnsmasq lease file) and the agent with its C1
 * role, started by the `tallybox run` start path. Staff phones are enrolled
 * with signed SubjectUpsert commands (their MACs kept only as keyed HMACs),
 * then they arrive, roam between bands, leave and come back.
 *
 *   tallybox demo --device c1                     ~6 punches; a roam, a repeat, a stranger's private MAC
 *                                                 and a rotated address are shown on the way
 *   tallybox demo --device c1 --json --punches N  one JSON line per punch received by the cloud, then
 *                                                 {"received":N,"duplicates":D,"lost":L}; exit 0 when lost is 0
 *
 * `startC1Stack` is exported for the tests and benches.
 */
import { join } from 'node:path';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { WifiOffice } from '../../simulators/wifi/office.js';
import { CredentialKind, ResultCode, type CommandBodyProps, type CommandResult, type PunchEvent } from '../proto/index.js';
import type { C1Config } from '../roles/c1/config.js';
import type { C1Role } from '../roles/c1/role.js';
import type { StartRoleOptions } from '../roles/start.js';
import { createLogger, type Logger } from '../util/log.js';
import { awaitDelivery, punchJsonLine, sleep, startDemoDevice, type DemoDevice } from './demo-kit.js';

export interface C1StackOptions {
  dir?: string;
  orgId?: string;
  deviceId?: string;
  /** c1: section overrides (rules, leaveGraceSec, …). */
  c1?: Partial<C1Config> & Record<string, unknown>;
  /** Presence from hostapd sockets (default) or from dnsmasq's lease file only. */
  sources?: 'hostapd' | 'dnsmasq';
  logger?: Logger;
  agentLogLevel?: 'silent' | 'error' | 'warn' | 'info';
  onPunch?: (p: PunchEvent, info: { duplicate: boolean }) => void;
  brokerUrl?: string;
  wallClock?: () => number;
  /** Called with the simulated office before the role attaches (tests: phones already associated at a restart). */
  beforeRole?: (office: WifiOffice) => void;
  /** Further C1 role options (tests: the clocks enrolment windows are checkpointed with). */
  role?: NonNullable<StartRoleOptions['c1']>;
  /** The punch gate's repeat window (default: the agent's setting, 60 s). */
  repeatWindowSec?: number;
  /** Simulated radios and the SSID each serves (default wlan0, wlan1 on "Office"). */
  office?: { ifaces?: string[]; ssids?: Record<string, string> };
}

export interface C1Stack {
  dev: DemoDevice;
  office: WifiOffice;
  signer: CommandSigner;
  role: C1Role;
  orgId: string;
  deviceId: string;
  /** Enrol a phone MAC for a (consenting) subject with a signed SubjectUpsert; resolves with the result code. */
  enrol(subjectId: string, mac: string, ssids?: string[]): Promise<ResultCode>;
  /** Send a signed command; resolves with its result. */
  command(body: CommandBodyProps): Promise<CommandResult>;
  close(opts?: { keepDir?: boolean }): Promise<void>;
}

export async function startC1Stack(opts: C1StackOptions = {}): Promise<C1Stack> {
  const orgId = opts.orgId ?? 'acme';
  const deviceId = opts.deviceId ?? 'demo-c1-0001';
  const signer = new CommandSigner({ keyId: 'demo-cloud' });
  let office: WifiOffice | undefined;
  const dev = await startDemoDevice({
    kind: 'c1',
    deviceId,
    orgId,
    vault: true,
    commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }],
    ...(opts.dir ? { dir: opts.dir } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    logLevel: opts.agentLogLevel ?? 'silent',
    ...(opts.onPunch ? { onPunch: opts.onPunch } : {}),
    ...(opts.brokerUrl ? { brokerUrl: opts.brokerUrl } : {}),
    config: (dir) => {
      const wifi = join(dir, 'wifi');
      const src =
        opts.sources === 'dnsmasq'
          ? { dnsmasq: { leaseFile: join(wifi, 'dhcp.leases'), pollMs: 200 } }
          : { hostapd: { ctrlDir: join(wifi, 'hostapd'), interfaces: opts.office?.ifaces ?? ['wlan0', 'wlan1'], heartbeatMs: 2000 }, dnsmasq: { leaseFile: join(wifi, 'dhcp.leases'), pollMs: 200 } };
      return { c1: { timeZone: 'UTC', leaveGraceSec: 1, ...src, ...opts.c1 } };
    },
    beforeRole: async (dir, onClose) => {
      office = new WifiOffice({ dir: join(dir, 'wifi'), ...opts.office }).start();
      onClose(() => office?.stop());
      opts.beforeRole?.(office);
    },
    roles: {
      start: false,
      ...(opts.repeatWindowSec !== undefined ? { repeatWindowSec: opts.repeatWindowSec } : {}),
      ...(opts.wallClock || opts.role ? { c1: { ...opts.role, ...(opts.wallClock ? { wallClock: opts.wallClock } : {}) } } : {}),
    },
  });
  const role = dev.running?.c1?.role;
  if (!role || !office) {
    await dev.close();
    throw new Error('the c1 role did not start');
  }
  await role.start();
  const command = async (body: CommandBodyProps): Promise<CommandResult> => {
    await dev.sink.sendCommand(signer, orgId, deviceId, body);
    return (await dev.sink.waitForResult(signer.lastCounter, 15_000)).result;
  };
  const enrol = async (subjectId: string, mac: string, ssids: string[] = []): Promise<ResultCode> =>
    (await command({ subjectUpsert: { subjectId, displayName: `Staff ${subjectId}`, credentials: [{ kind: CredentialKind.CREDENTIAL_KIND_WIFI_MAC, value: mac, ssids }] } })).code;
  return { dev, office, signer, role, orgId, deviceId, enrol, command, close: (c) => dev.close(c) };
}

export interface C1DemoOptions {
  json: boolean;
  punches: number;
  keepData?: string;
  brokerUrl?: string;
  out?: (line: string) => void;
}

export async function runC1Demo(opts: C1DemoOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const say = (l: string) => {
    if (!opts.json) out(l);
  };
  const stack = await startC1Stack({
    ...(opts.keepData ? { dir: opts.keepData } : {}),
    ...(opts.brokerUrl ? { brokerUrl: opts.brokerUrl } : {}),
    ...(opts.json ? {} : { logger: createLogger({ level: 'error', base: { deviceId: 'demo-c1-0001' } }) }),
    // Every visit a punch in the demo: re-joins count after being away, the repeat window stays.
    c1: { leaveGraceSec: 0.5, rules: { firstJoinOfDay: true, rejoinAfterMin: 0.01 } },
    repeatWindowSec: 1,
    onPunch: (p, info) => {
      if (info.duplicate) return;
      if (opts.json) out(punchJsonLine(p));
      else say(`  cloud: WIFI punch #${p.seq} for ${p.subjectId}`);
    },
  });
  const { office, role, dev } = stack;
  const accepted = new Set<string>();
  role.on('punch', (id) => id && accepted.add(id));
  try {
    say(`Tallybox demo (C1 Wi-Fi presence): broker ${dev.broker.url}, device ${stack.deviceId}, office network in ${office.ctrlDir}`);
    const n = Math.max(1, opts.punches);
    const staff = Array.from({ length: Math.min(n, 8) }, (_, i) => ({ subjectId: `sub-${String(i + 1).padStart(4, '0')}`, phone: office.addPhone({ randomised: i % 2 === 1 }) }));
    for (const s of staff) {
      const code = await stack.enrol(s.subjectId, s.phone.mac);
      say(`  cloud → device: SubjectUpsert ${s.subjectId} with a ${s.phone.randomised ? 'private' : 'vendor'} Wi-Fi MAC: ${ResultCode[code]}`);
    }
    const stranger = office.addPhone({ randomised: true });
    // Rounds: everyone due arrives (a punch each), then leaves; past the leave grace and the re-join time they come back.
    for (let round = 0; role.stats.punches < n && round < n + 5; round++) {
      const due = staff.slice(0, Math.min(staff.length, n - role.stats.punches));
      for (const [i, s] of due.entries()) office.join(s.phone.id, (i + round) % 2 ? 'wlan1' : 'wlan0');
      await sleep(50);
      await role.settled();
      if (round === 0 && !opts.json) {
        office.roam(due[0]!.phone.id, 'wlan1');
        office.join(due[0]!.phone.id, 'wlan1');
        office.join(stranger.id, 'wlan0');
        await sleep(50);
        await role.settled();
        say(`  ${due[0]!.subjectId} roams to the 5 GHz radio and re-associates: still present, no new punch`);
        say(`  a stranger's phone (unenrolled private MAC) joins: nothing`);
        office.leave(stranger.id);
      }
      for (const s of due) office.leave(s.phone.id);
      if (role.stats.punches < n) await sleep(1500);
      await role.settled();
    }
    const r = await awaitDelivery(dev.sink, accepted, role.stats.punches);
    if (opts.json) out(JSON.stringify(r));
    else say(`done: ${r.received} punches received by the cloud, ${r.duplicates} duplicates, ${r.lost} lost; no MAC left the device`);
    return r.lost === 0 ? 0 : 1;
  } finally {
    await stack.close(opts.keepData ? { keepDir: true } : {});
  }
}
