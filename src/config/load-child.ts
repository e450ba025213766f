/**
 * The child process of load-isolated.ts: `node load-child.js FILE` loads and
 * validates the config file and prints the answer as one JSON document.
 * Exit 0 whenever it answered (a bad config is an answer, not a crash).
 */
import { isTallyboxError } from '../util/errors.js';
import type { ChildAnswer } from './load-isolated.js';
import { loadConfigFile } from './load.js';

let answer: ChildAnswer;
try {
  answer = { ok: true, config: loadConfigFile(process.argv[2] ?? '') };
} catch (err) {
  answer = isTallyboxError(err) ? { ok: false, code: err.code, message: err.message, details: { ...err.details } } : { ok: false, code: 'CONFIG_UNREADABLE', message: err instanceof Error ? err.message : String(err), details: {} };
}
process.stdout.write(JSON.stringify(answer));
