export * from './crypto.js';
export * from './keys.js';
export * from './consent.js';
export * from './vault.js';
