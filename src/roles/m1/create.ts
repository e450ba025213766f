/**
 * Wiring helper: the M1 role from its config fragment, on the production
 * SerialTransport (the only place the role touches a device path).
 */
import { R30xDriver } from '../../../firmware-bridge/r30x/driver.js';
import { SerialTransport } from '../../../firmware-bridge/transport/serial.js';
import type { ByteTransport } from '../../../firmware-bridge/transport/types.js';
import type { Logger } from '../../util/log.js';
import type { PunchGate } from '../kit/punch-gate.js';
import { M1ConfigSchema, type M1Config, type M1ConfigInput } from './config.js';
import { M1Role, type M1PunchSink, type M1RoleOptions, type M1Vault } from './role.js';

export interface CreateM1RoleOptions {
  /** The `m1:` config section (validated here if it is raw input). */
  config: M1Config | M1ConfigInput;
  agent: M1PunchSink;
  vault: M1Vault;
  logger?: Logger;
  /** The agent's shared punch gate (start.ts). */
  gate?: PunchGate;
  /** Another byte transport (tests: a mock binding); default SerialTransport on config.port. */
  transport?: ByteTransport;
  /** Role options beyond the config (demos and tests: faster polling, own clocks). */
  overrides?: Partial<Omit<M1RoleOptions, 'agent' | 'vault' | 'driver'>>;
}

export function createM1Role(opts: CreateM1RoleOptions): { role: M1Role; driver: R30xDriver } {
  const c = M1ConfigSchema.parse(opts.config);
  const transport = opts.transport ?? new SerialTransport({ path: c.port, baudRate: c.baudRate });
  const driver = new R30xDriver({ transport, address: c.address, password: c.password, timeoutMs: c.timeoutMs });
  const role = new M1Role({
    agent: opts.agent,
    vault: opts.vault,
    driver,
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.gate ? { gate: opts.gate } : {}),
    repeatWindowSec: c.repeatWindowSec,
    pollMs: c.pollMs,
    password: c.password,
    enrolCaptures: c.enrolCaptures as 2 | 3,
    enrolTimeoutMs: c.enrolTimeoutMs,
    scoreBuckets: c.scoreBuckets,
    backoff: c.backoff,
    ...opts.overrides,
  });
  return { role, driver };
}
