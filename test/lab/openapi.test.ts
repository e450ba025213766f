/**
 * The OpenAPI file matches the server: every documented route is called on a
 * running lab (with the documented example body) and its answer validated
 * with ajv against the documented schema for the status it returned (an
 * undocumented status fails); every route in the server's table must be
 * documented, and nothing undocumented answers.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { load as parseYaml } from 'js-yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENAPI_FILE } from '../../simulators/lab/paths.js';
import { ROUTES } from '../../simulators/lab/server.js';
import { startTestLab, type TestLab } from './helpers.js';

interface Operation {
  parameters?: { $ref?: string; name?: string; in?: string; example?: string }[];
  requestBody?: { content: Record<string, { example?: unknown }> };
  responses: Record<string, { $ref?: string; content?: Record<string, { schema?: unknown }> }>;
}
type Doc = { paths: Record<string, Record<string, Operation>>; components: { parameters: Record<string, { name: string; example?: string }>; responses: Record<string, { content?: Record<string, { schema?: unknown }> }> } };

const doc = parseYaml(readFileSync(OPENAPI_FILE, 'utf8')) as Doc;
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addSchema(doc as object, 'openapi');

function resolveResponse(r: { $ref?: string; content?: Record<string, { schema?: unknown }> }) {
  if (!r.$ref) return r;
  return doc.components.responses[r.$ref.split('/').pop()!]!;
}

/** Point local refs at the document registered as "openapi". */
function rebase(schema: unknown): unknown {
  return JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"openapi#/components/'));
}

function concretePath(path: string, op: Operation): string {
  let out = path;
  for (const p of op.parameters ?? []) {
    const param = p.$ref ? doc.components.parameters[p.$ref.split('/').pop()!]! : (p as { name: string; example?: string });
    out = out.replace(`{${param.name}}`, encodeURIComponent(String(param.example)));
  }
  return out;
}

// Run the reading routes first, then actions in document order (kill before restart, withdraw last).
const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method: method.toUpperCase(), op })));
operations.sort((a, b) => (a.method === b.method ? 0 : a.method === 'GET' ? -1 : 1));

describe('lab control API matches simulators/lab/openapi.yaml', () => {
  let t: TestLab;
  beforeAll(async () => {
    t = await startTestLab();
  }, 180_000);
  afterAll(async () => {
    await t?.close();
  }, 60_000);

  it('documents every route of the server table, and nothing the server lacks', () => {
    const documented = new Set(operations.map((o) => `${o.method} ${o.path}`));
    const served = new Set(ROUTES.map((r) => `${r.method} ${r.path}`));
    expect([...served].filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((r) => !served.has(r))).toEqual([]);
  });

  it('answers every documented route with the documented shape', async () => {
    for (const { path, method, op } of operations) {
      const url = `${t.server.url}${concretePath(path, op)}`;
      const example = op.requestBody?.content['application/json']?.example;
      const ctl = new AbortController();
      const r = await fetch(url, { method, signal: ctl.signal, ...(example !== undefined ? { body: JSON.stringify(example), headers: { 'content-type': 'application/json' } } : {}) });
      const what = `${method} ${path} → ${r.status}`;
      const documented = op.responses[String(r.status)];
      expect(documented, `${what} is not a documented status`).toBeDefined();
      const content = resolveResponse(documented!).content ?? {};
      const type = (r.headers.get('content-type') ?? '').split(';')[0]!;
      expect(Object.keys(content), `${what}: content-type ${type}`).toContain(type);
      if (type === 'text/event-stream') {
        const first = await r.body!.getReader().read();
        expect(new TextDecoder().decode(first.value)).toContain(': tallybox lab events');
        ctl.abort();
        continue;
      }
      const text = await r.text();
      if (type !== 'application/json') {
        expect(text.length, what).toBeGreaterThan(0);
        continue;
      }
      const validate = ajv.compile(rebase(content[type]!.schema) as object);
      const ok = validate(JSON.parse(text));
      expect(ok, `${what}: ${ajv.errorsText(validate.errors)}\n${text.slice(0, 500)}`).toBe(true);
    }
  }, 240_000);

  it('answers an undocumented route with 404 NOT_FOUND and a wrong method with 405', async () => {
    const r = await fetch(`${t.server.url}/api/nothing-here`);
    expect(r.status).toBe(404);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
    const m = await fetch(`${t.server.url}/api/devices`, { method: 'DELETE' });
    expect(m.status).toBe(405);
  });

  it('refuses a request whose Host is not loopback (DNS rebinding)', async () => {
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: t.server.port, path: '/api/devices', headers: { host: 'evil.example:80' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(403);
  });
});
