export * from './types.js';
export * from './scan.js';
export * from './receipt.js';
export * from './purge.js';
export * from './retention.js';
export * from './roster.js';
