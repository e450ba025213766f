/**
 * The egress gate is structural (issue 8 §1): outside src/link, nothing can
 * obtain an MQTT client that publishes.
 *
 * 1. Types: test/link/fixtures/egress-access.ts lists attempts, each after a
 *    `@ts-expect-error`. The compiler must accept the file as it is (so every
 *    attempt is an error; an unused directive is itself an error), and must
 *    reject every marked line of a copy with the directives removed (so the
 *    directives are not hiding a typo that fails for another reason elsewhere).
 * 2. Run time: no MqttClient is reachable by walking an online agent's object
 *    graph (properties, Maps, Sets, arrays): the client sits in ES #private
 *    fields and a module-private WeakMap, which reflection does not enter.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/util/log.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { testConfig } from '../helpers/agent-config.js';
import { waitUntil } from '../helpers/ports.js';

const root = resolve(import.meta.dirname, '../..');
const fixture = join(root, 'test/link/fixtures/egress-access.ts');
// Inside the repository (so 'mqtt' and @types resolve), outside every tsconfig include.
const work = join(root, 'node_modules/.cache', `tallybox-egress-types-${process.pid}`);
afterAll(() => rmSync(work, { recursive: true, force: true }));

function tsc(project: string): Promise<string> {
  return new Promise((res) => {
    execFile(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', project, '--noEmit', '--pretty', 'false'], { timeout: 170_000, maxBuffer: 16 << 20 }, (_err, stdout) => res(String(stdout)));
  });
}

describe('no MQTT client outside src/link', () => {
  it('every attempt in the fixture is a compile error, and each for its own line', async () => {
    const source = readFileSync(fixture, 'utf8');
    const lines = source.split('\n');
    const marked = lines.flatMap((l, i) => (/^\s*\/\/ @ts-expect-error\b/.test(l) ? [i + 2] : [])); // 1-based line after the directive
    expect(marked.length).toBeGreaterThanOrEqual(10);
    mkdirSync(work, { recursive: true });
    const stripped = join(work, 'egress-access.stripped.ts');
    // Same line numbers; relative imports made absolute so the copy resolves from here.
    writeFileSync(stripped, lines.map((l) => l.replace(/\/\/ @ts-expect-error\b/, '// (attempt)').replace(/'\.\.\/\.\.\/\.\.\/src\//g, `'${root}/src/`)).join('\n'));
    writeFileSync(join(work, 'tsconfig.json'), JSON.stringify({ extends: join(root, 'tsconfig.json'), compilerOptions: { rootDir: root }, include: [], files: [fixture, stripped] }));
    const out = await tsc(join(work, 'tsconfig.json'));
    const errors = [...out.matchAll(/^(.*)\((\d+),\d+\): error (TS\d+): (.*)$/gm)].map((m) => ({ file: m[1]!, line: Number(m[2]), code: m[3]!, msg: m[4]! }));
    expect(errors.length, out).toBeGreaterThan(0); // the compiler ran and saw the copy
    const inFixture = errors.filter((e) => e.file.endsWith('fixtures/egress-access.ts'));
    expect(inFixture, 'the fixture itself compiles: every @ts-expect-error is used').toEqual([]);
    const inCopy = errors.filter((e) => e.file.endsWith('egress-access.stripped.ts'));
    expect(inCopy.length, out).toBe(errors.length); // no error anywhere else
    const failing = new Set(inCopy.map((e) => e.line));
    for (const line of marked) expect(failing.has(line), `line ${line}: ${lines[line - 1]!.trim()} must not compile`).toBe(true);
    for (const e of inCopy) expect(marked, `unexpected error at line ${e.line}: ${e.msg}`).toContain(e.line);
  }, 180_000);

  it('no MqttClient is reachable from an online agent by reflection', async () => {
    const broker = await startEmbeddedBroker();
    const dataDir = mkdtempSync(join(tmpdir(), 'tbx-egress-'));
    const agent = await Agent.start({ config: validateConfig(testConfig({ dataDir, brokerUrl: broker.url })), logger: silentLogger() });
    try {
      await waitUntil(() => agent.session !== undefined, 10_000, 'online');
      expect(Reflect.ownKeys(agent.session!.client)).toEqual([]); // an opaque handle, nothing on it
      const seen = new Set<unknown>();
      const queue: unknown[] = [agent, agent.session, agent.link, agent.egress, agent.drain, agent.results];
      let found: string | undefined;
      while (queue.length > 0 && !found) {
        const v = queue.shift();
        if (v === null || (typeof v !== 'object' && typeof v !== 'function') || seen.has(v)) continue;
        seen.add(v);
        if (v instanceof MqttClient) found = `an MqttClient, reached after ${seen.size} objects`;
        if (Buffer.isBuffer(v) || ArrayBuffer.isView(v)) continue;
        if (v instanceof Map) for (const [k, x] of v) queue.push(k, x);
        if (v instanceof Set) for (const x of v) queue.push(x);
        for (const key of Reflect.ownKeys(v)) {
          const d = Object.getOwnPropertyDescriptor(v, key);
          if (d && 'value' in d) queue.push(d.value);
        }
        if (typeof v === 'object') queue.push(Object.getPrototypeOf(v));
      }
      expect(found).toBeUndefined();
      expect(seen.size).toBeGreaterThan(50); // the walk did go somewhere
    } finally {
      await agent.stop();
      await broker.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
