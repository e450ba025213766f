import { TallyboxError } from '../../src/util/errors.js';

/** Machine-readable codes of the bridge driver; the message names the value. */
export type BridgeErrorCode =
  | 'BRIDGE_TIMEOUT' // no reply within the timeout
  | 'BRIDGE_CLOSED' // the link is closed (or closed while waiting)
  | 'BRIDGE_NACK' // the device answered with a BridgeAck status other than OK
  | 'BRIDGE_UNEXPECTED_REPLY' // the reply's body is not the one the request calls for
  | 'BRIDGE_NO_COMMON_VERSION' // BridgeHello found no protocol version both sides speak
  | 'BRIDGE_NOT_READY' // a request other than hello before the handshake
  | 'BRIDGE_BAD_FEATURE' // a feature frame whose dim and vector disagree
  | 'BRIDGE_ENROL_ABORTED' // the device aborted an enrolment capture
  | 'BRIDGE_TRANSPORT'; // the byte transport failed (port vanished, write error)

export class BridgeError extends TallyboxError {
  declare readonly code: BridgeErrorCode;
  constructor(code: BridgeErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(code, message, details, options);
    this.name = 'BridgeError';
  }
}
