/**
 * `tallybox run` reads its config in a short-lived child process (the same
 * node binary and build), so the long-running agent never loads the
 * validator: zod with its locales and js-yaml are ~1 MB of source and the
 * objects they build, about 4 MB of idle RSS that a C1 router (≤ 70 MB)
 * cannot spare, for a check made once. The child prints the validated config
 * as JSON (the schema's output is plain data); errors come back with their
 * code, message and details, so the agent fails exactly as an in-process
 * load would (CONFIG_INVALID exits 78).
 *
 * From the TypeScript sources (tests) there is no built child to run: the
 * config is then loaded in-process, as every other command does.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TallyboxError } from '../util/errors.js';
import type { Config } from './schema.js';

/** What the child prints on stdout (one JSON document). */
export type ChildAnswer = { ok: true; config: Config } | { ok: false; code: string; message: string; details: Record<string, unknown> };

const CHILD = new URL('./load-child.js', import.meta.url);

export async function loadConfigFileIsolated(file: string): Promise<Config> {
  if (!import.meta.url.endsWith('.js')) return (await import('./load.js')).loadConfigFile(file);
  const r = spawnSync(process.execPath, ['--max-semi-space-size=1', fileURLToPath(CHILD), file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 * 1024 * 1024 });
  let answer: ChildAnswer | undefined;
  try {
    answer = r.status === 0 ? (JSON.parse(r.stdout) as ChildAnswer) : undefined;
  } catch {
    answer = undefined; // not what the child prints: reported below as the child's failure
  }
  if (!answer) {
    const why = r.error ? r.error.message : r.signal ? `killed by ${r.signal}` : `exit ${String(r.status)}`;
    throw new TallyboxError('CONFIG_LOADER_FAILED', `${file}: the config reader (${fileURLToPath(CHILD)}) did not answer: ${why}`, { file });
  }
  if (!answer.ok) throw new TallyboxError(answer.code, answer.message, answer.details);
  return answer.config;
}
