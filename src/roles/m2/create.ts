/**
 * Wiring helper: the M2 role from its config fragment, on the production
 * transports (SerialTransport for the bridge; node-hid, or a report socket
 * when `cardReader.device` is set, for the card reader: the only place the
 * role touches device paths). node-hid is loaded only when a USB card reader
 * is configured, and only when the reader is opened.
 */
import { BridgeDriver } from '../../../firmware-bridge/bridge/driver.js';
import { SocketHidTransport } from '../../../firmware-bridge/hid/socket.js';
import { NodeHidTransport, type HidReportTransport } from '../../../firmware-bridge/hid/transport.js';
import { SerialTransport } from '../../../firmware-bridge/transport/serial.js';
import type { ByteTransport } from '../../../firmware-bridge/transport/types.js';
import type { Logger } from '../../util/log.js';
import type { PunchGate } from '../kit/punch-gate.js';
import { M2ConfigSchema, type M2Config, type M2ConfigInput } from './config.js';
import { M2Role, type M2PunchSink, type M2RoleOptions, type M2Vault } from './role.js';

export interface CreateM2RoleOptions {
  /** The `m2:` config section (validated here if it is raw input). */
  config: M2Config | M2ConfigInput;
  agent: M2PunchSink;
  vault: M2Vault;
  logger?: Logger;
  /** The agent's shared punch gate (start.ts). */
  gate?: PunchGate;
  /** Another byte transport for the bridge (tests: a pty or mock); default SerialTransport on config.bridge.port. */
  transport?: ByteTransport;
  /** Another HID transport (tests: SimHidTransport); default from config.cardReader. */
  cardTransport?: HidReportTransport;
  /** Role options beyond the config (demos and tests: faster polling, own clocks). */
  overrides?: Partial<Omit<M2RoleOptions, 'agent' | 'vault' | 'driver'>>;
}

function cardTransportFor(cr: NonNullable<M2Config['cardReader']>): HidReportTransport {
  if (cr.device) return new SocketHidTransport({ path: cr.device });
  return new NodeHidTransport({ vendorId: cr.vendorId!, productId: cr.productId!, ...(cr.path ? { path: cr.path } : {}) });
}

export function createM2Role(opts: CreateM2RoleOptions): { role: M2Role; driver: BridgeDriver; config: M2Config } {
  const c = M2ConfigSchema.parse(opts.config);
  const transport = opts.transport ?? new SerialTransport({ path: c.bridge.port, baudRate: c.bridge.baudRate });
  const driver = new BridgeDriver({ transport, timeoutMs: c.bridge.timeoutMs, ...(opts.logger ? { logger: opts.logger } : {}) });
  const cr = c.cardReader;
  const cardTransport = opts.cardTransport ?? (cr ? cardTransportFor(cr) : undefined);
  const role = new M2Role({
    agent: opts.agent,
    vault: opts.vault,
    driver,
    ...(cardTransport ? { cardTransport, cardReader: { reportId: cr?.reportId ?? 'auto', interKeyTimeoutMs: cr?.interKeyTimeoutMs ?? 1000 } } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.gate ? { gate: opts.gate } : {}),
    face: c.face,
    display: c.display,
    repeatWindowSec: c.repeatWindowSec,
    tamperResponse: c.tamperResponse,
    backoff: c.backoff,
    heartbeatMs: c.heartbeatMs,
    ...opts.overrides,
  });
  return { role, driver, config: c };
}
