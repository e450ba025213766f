export type { ByteTransport, TransportEvents, TransportStatus } from './types.js';
export { TRANSPORT_TRANSITIONS } from './types.js';
export { BaseTransport } from './base.js';
export { SerialTransport, type SerialTransportOptions, type SerialBinding } from './serial.js';
export { MemoryTransport, createMemoryPair, createMockSerialLink, type MemoryPair, type MockSerialLink } from './mock.js';
