/**
 * Where the lab finds what it runs: the built agent CLI, its own clock
 * preload and its page. The lab runs from dist/ (tallybox-sim) or from source
 * (vitest); both resolve to the repository's dist/ for what is spawned (the
 * agent is always the built one, as `tallybox run` on a device) and to the
 * source folder for the static files (the build does not copy them).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TallyboxError } from '../../src/util/errors.js';

function repoRoot(): string {
  let dir = import.meta.dirname;
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'simulators', 'lab'))) return dir;
    dir = dirname(dir);
  }
  throw new TallyboxError('LAB_FILES_MISSING', `cannot find the repository root above ${import.meta.dirname}`);
}

export const REPO_ROOT = repoRoot();
export const AGENT_CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'tallybox.js');
export const CLOCK_PRELOAD = join(REPO_ROOT, 'dist', 'simulators', 'lab', 'clock-preload.js');
export const PAGE_DIR = join(REPO_ROOT, 'simulators', 'lab', 'page');
export const OPENAPI_FILE = join(REPO_ROOT, 'simulators', 'lab', 'openapi.yaml');

export function assertBuilt(): void {
  for (const f of [AGENT_CLI, CLOCK_PRELOAD]) {
    if (!existsSync(f)) throw new TallyboxError('LAB_NOT_BUILT', `${f} is missing: run \`npm run build\` first (the lab runs the built agent)`, { file: f });
  }
}
