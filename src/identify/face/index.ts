export { FaceMatcher, DEFAULT_THRESHOLD, DEFAULT_LIVENESS_THRESHOLD, DEFAULT_MIN_CAPTURES, DEFAULT_DUPLICATE_THRESHOLD } from './matcher.js';
export type { FaceMatcherOptions, FaceProbe, IdentifyResult, EnrolResult } from './matcher.js';
export { CancelableTransform } from './transform.js';
export type { CancelableTransformOptions } from './transform.js';
export { simdAvailable } from './kernel.js';
