/**
 * Supervisor adapters for the device interfaces of firmware-bridge/devices.ts:
 * how each kind of peripheral is opened, probed (the heartbeat) and how its
 * failures count. A new kind of peripheral is one more small adapter here.
 */
import type { CardReader, FaceModule, PresenceSource, Printer } from '../../../firmware-bridge/devices.js';
import { TallyboxError } from '../../util/errors.js';
import type { FaultKind, SupervisedPeripheral } from './supervisor.js';
import { errorCode } from './supervisor.js';

/** Codes meaning "nothing is there" (no device node, not in the device list). */
const ABSENT = new Set(['HID_DEVICE_NOT_FOUND', 'TRANSPORT_OPEN_FAILED', 'ENOENT', 'ECONNREFUSED']);

/**
 * The face module over the bridge protocol. Heartbeat: a BridgeHeartbeat
 * round trip, so a module that hangs (powered, port open, answering
 * nothing) is found out even when nobody stands in front of it.
 */
export function faceModulePeripheral(opts: { module: FaceModule; name?: string; check?: (info: NonNullable<FaceModule['info']>) => Promise<void> | void }): SupervisedPeripheral {
  const m = opts.module;
  return {
    name: opts.name ?? 'face',
    async open() {
      // A link still 'ready' after a hang has not proved anything: it must answer before it counts.
      if (m.status === 'ready' && m.info) await m.ping();
      const info = await m.start();
      await opts.check?.(info);
      return `${info.model || 'face module'} ${info.firmwareVersion}`.trim();
    },
    async probe() {
      await m.ping();
    },
    classify(err): FaultKind {
      const code = errorCode(err);
      if (ABSENT.has(code)) return 'absent';
      if (code === 'BRIDGE_TIMEOUT') return 'glitch';
      if (code === 'BRIDGE_CLOSED' || code === 'BRIDGE_TRANSPORT' || code === 'BRIDGE_NOT_READY') return 'gone';
      if (code === 'BRIDGE_NACK' || code === 'BRIDGE_UNEXPECTED_REPLY') return 'ignore';
      return 'gone';
    },
    watch(onLost) {
      const on = (s: string, reason?: Error) => {
        if (s === 'closed') onLost(reason ?? new TallyboxError('BRIDGE_CLOSED', 'bridge link closed'));
      };
      m.on('status', on);
      return () => m.off('status', on);
    },
  };
}

/**
 * A card reader. A HID reader answers nothing, so its heartbeat is presence:
 * still in node-hid's device list (or its socket still there). An unplug that
 * the HID layer reports (a read error) is a loss at once.
 */
export function cardReaderPeripheral(opts: { reader: CardReader; name?: string }): SupervisedPeripheral {
  const r = opts.reader;
  return {
    name: opts.name ?? 'card-reader',
    async open() {
      // Re-open from scratch: after a silent loss the transport may still say 'open'.
      await r.stop().catch(() => undefined); // closing a vanished reader: nothing to report
      await r.start();
      return r.description;
    },
    probe: () => r.probe(),
    classify(err): FaultKind {
      return ABSENT.has(errorCode(err)) ? 'absent' : 'gone';
    },
    watch: (onLost) => r.onLost(onLost),
  };
}

/**
 * A Wi-Fi presence source (C1: hostapd's control socket, dnsmasq's lease
 * file). Heartbeat: the source's own probe (PING on the control socket, the
 * lease file still readable); a socket that disappears is 'absent' until
 * hostapd is back.
 */
export function presenceSourcePeripheral(opts: { source: PresenceSource; name: string }): SupervisedPeripheral {
  const src = opts.source;
  return {
    name: opts.name,
    async open() {
      await src.stop().catch(() => undefined); // a source that lost its socket: nothing left to close
      await src.start();
      return src.description;
    },
    probe: () => src.probe(),
    classify: (err): FaultKind => (ABSENT.has(errorCode(err)) ? 'absent' : 'gone'),
  };
}

/**
 * A printer (P1). Heartbeat: its state query (IPP Get-Printer-Attributes, PJL
 * status); reachable but 'stopped' (out of paper, offline button) is
 * 'degraded', not offline: jobs wait, the state reasons go to DeviceState.
 */
export function printerPeripheral(opts: { printer: Pick<Printer, 'description' | 'probe'>; name?: string }): SupervisedPeripheral {
  const pr = opts.printer;
  const check = async (): Promise<string> => {
    const st = await pr.probe();
    if (st.state === 'stopped') throw new TallyboxError('PRINTER_STOPPED', `printer stopped: ${st.reasons.join(', ') || 'no reason given'}`, { reasons: st.reasons });
    return `${pr.description}: ${st.state}`;
  };
  return {
    name: opts.name ?? 'printer',
    open: check,
    probe: async () => void (await check()),
    classify: (err): FaultKind => {
      const code = errorCode(err);
      if (code === 'PRINTER_STOPPED') return 'glitch';
      return ABSENT.has(code) ? 'absent' : 'gone';
    },
  };
}
