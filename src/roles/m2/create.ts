/**
 * Wiring helper: the M2 role from its config fragment, on the production
 * transports (SerialTransport for the bridge, node-hid for the card reader:
 * the only place the role touches device paths). node-hid is loaded only when
 * a card reader is configured, and only when the reader is opened.
 */
import { BridgeDriver } from '../../../firmware-bridge/bridge/driver.js';
import { NodeHidTransport, type HidReportTransport } from '../../../firmware-bridge/hid/transport.js';
import { SerialTransport } from '../../../firmware-bridge/transport/serial.js';
import type { ByteTransport } from '../../../firmware-bridge/transport/types.js';
import type { Logger } from '../../util/log.js';
import { M2ConfigSchema, type M2Config, type M2ConfigInput } from './config.js';
import { M2Role, type M2PunchSink, type M2Vault } from './role.js';

export interface CreateM2RoleOptions {
  /** The `m2:` config section (validated here if it is raw input). */
  config: M2Config | M2ConfigInput;
  agent: M2PunchSink;
  vault: M2Vault;
  logger?: Logger;
  /** Another byte transport for the bridge (tests: a pty or mock); default SerialTransport on config.bridge.port. */
  transport?: ByteTransport;
  /** Another HID transport (tests: SimHidTransport); default node-hid when config.cardReader is set. */
  cardTransport?: HidReportTransport;
}

export function createM2Role(opts: CreateM2RoleOptions): { role: M2Role; driver: BridgeDriver; config: M2Config } {
  const c = M2ConfigSchema.parse(opts.config);
  const transport = opts.transport ?? new SerialTransport({ path: c.bridge.port, baudRate: c.bridge.baudRate });
  const driver = new BridgeDriver({ transport, timeoutMs: c.bridge.timeoutMs, ...(opts.logger ? { logger: opts.logger } : {}) });
  const cr = c.cardReader;
  const cardTransport = opts.cardTransport ?? (cr ? new NodeHidTransport({ vendorId: cr.vendorId, productId: cr.productId, ...(cr.path ? { path: cr.path } : {}) }) : undefined);
  const role = new M2Role({
    agent: opts.agent,
    vault: opts.vault,
    driver,
    ...(cardTransport ? { cardTransport, cardReader: { reportId: cr?.reportId ?? 'auto', interKeyTimeoutMs: cr?.interKeyTimeoutMs ?? 1000 } } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    face: c.face,
    display: c.display,
    repeatWindowSec: c.repeatWindowSec,
    tamperResponse: c.tamperResponse,
  });
  return { role, driver, config: c };
}
