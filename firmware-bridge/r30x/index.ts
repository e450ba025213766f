export * from './constants.js';
export * from './codec.js';
export * from './messages.js';
export * from './errors.js';
export { R30xDriver, type R30xDriverOptions, type R30xDriverEvents, type CharBufferId } from './driver.js';
