export { FingerprintSimulator, startFingerprintSimulator, startFingerprintSimulatorOnTransport } from './simulator.js';
export type { PtySimulatorOptions, TransportSimulatorOptions, SimulatorState, PlugState, ControlOptions } from './simulator.js';
export { FingerprintDevice, MAX_CAPACITY, type FingerprintDeviceOptions, type FingerQuality, type LibraryEntry, type PlacedFinger } from './device.js';
export { DeviceLink, NO_FAULTS, type Faults, type LinkStats } from './link.js';
export { createPtyPair, type PtyPair, type PtyPairOptions } from '../lib/pty.js';
export { ENDPOINTS, type ControlAddress } from './control.js';
export { modelFor, captureFor, score, MATCH_THRESHOLD, DEFAULT_SEED, type FingerRef } from './templates.js';
