/**
 * The C1 presence sources, each under its own peripheral supervisor (the kit
 * retries, heartbeats and reports them in DeviceState): one hostapd control
 * connection per interface, the dnsmasq lease file, and the hook socket.
 * Their events go into one PresenceTracker (the union of every radio).
 */
import { join } from 'node:path';
import { EventSocketServer } from '../../../firmware-bridge/wifi/event-socket.js';
import { HostapdControl } from '../../../firmware-bridge/wifi/hostapd-ctrl.js';
import { LeaseWatcher } from '../../../firmware-bridge/wifi/lease-watch.js';
import type { PresenceTracker } from '../../../firmware-bridge/wifi/presence.js';
import type { Logger } from '../../util/log.js';
import { PeripheralSupervisor, errorCode, type PeripheralSink, type SupervisedPeripheral } from '../kit/supervisor.js';
import type { C1Config } from './config.js';

export interface C1Sources {
  supervisors: PeripheralSupervisor[];
  hostapd: HostapdControl[];
  leases?: LeaseWatcher;
  hooks?: EventSocketServer;
  close(): Promise<void>;
}

function hostapdPeripheral(ctl: HostapdControl): SupervisedPeripheral {
  return {
    name: `wifi-ap:${ctl.iface}`,
    open: async () => `attached (${(await ctl.open()).length} stations)`,
    probe: () => ctl.ping(),
    classify: (err) => {
      const code = errorCode(err);
      return code === 'HOSTAPD_SOCKET_MISSING' ? 'absent' : code === 'HOSTAPD_TIMEOUT' ? 'glitch' : 'gone';
    },
    watch: (onLost) => ctl.onLost(onLost),
  };
}

export function createSources(opts: { config: C1Config; dataDir: string; tracker: PresenceTracker; sink: PeripheralSink; logger: Logger; backoff?: { minMs: number; maxMs: number } }): C1Sources {
  const { config, tracker, logger } = opts;
  const supervisors: PeripheralSupervisor[] = [];
  const sup = (p: SupervisedPeripheral, heartbeatMs: number) => {
    const s = new PeripheralSupervisor({ peripheral: p, sink: opts.sink, logger, heartbeatMs, ...(opts.backoff ? { backoff: opts.backoff } : {}) });
    supervisors.push(s);
    return s;
  };
  const hostapd: HostapdControl[] = [];
  const h = config.hostapd;
  if (h) {
    const clientDir = h.clientDir ?? join(opts.dataDir, 'hostapd-client');
    for (const iface of h.interfaces) {
      const ctl = new HostapdControl({ socketPath: join(h.ctrlDir, iface), clientDir });
      const s = sup(hostapdPeripheral(ctl), h.heartbeatMs);
      ctl.on('presence', (ev) => {
        s.alive();
        tracker.apply(ev);
      });
      ctl.on('stations', (i, macs) => tracker.replace('hostapd', i, macs));
      hostapd.push(ctl);
    }
  }
  let leases: LeaseWatcher | undefined;
  if (config.dnsmasq) {
    const w = new LeaseWatcher({ path: config.dnsmasq.leaseFile, pollMs: config.dnsmasq.pollMs });
    leases = w;
    let lastWarn = -Infinity;
    w.on('presence', (ev) => tracker.apply(ev));
    w.on('skipped', (c) => {
      // Counted always, logged at most once a minute: a file torn on every rewrite must not flood the log.
      if (performance.now() - lastWarn < 60_000) return;
      lastWarn = performance.now();
      logger.warn({ event: 'lease_lines_skipped', malformed: w.stats.malformed, torn: w.stats.torn }, `lease file: skipped ${c.malformed} malformed and ${c.torn} torn line(s) (totals ${w.stats.malformed}, ${w.stats.torn})`);
    });
    const s = sup(
      {
        name: 'wifi-leases',
        open: async () => {
          w.stop();
          await w.start();
          return `${w.leases.length} leases`;
        },
        probe: () => w.read(),
      },
      30_000,
    );
    w.on('error', (err) => s.fault(err, 'gone'));
  }
  let hooks: EventSocketServer | undefined;
  if (config.eventSocket) {
    const srv = new EventSocketServer({ path: config.eventSocket });
    hooks = srv;
    srv.on('presence', (ev) => tracker.apply(ev));
    sup(
      {
        name: 'wifi-hooks',
        open: async () => {
          await srv.stop();
          await srv.start();
          return 'listening';
        },
        probe: async () => undefined,
      },
      0,
    );
  }
  return {
    supervisors,
    hostapd,
    ...(leases ? { leases } : {}),
    ...(hooks ? { hooks } : {}),
    async close() {
      await Promise.all(supervisors.map((s) => s.stop()));
      for (const c of hostapd) c.close();
      leases?.stop();
      await hooks?.stop();
    },
  };
}
