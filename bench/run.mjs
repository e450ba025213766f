#!/usr/bin/env node
// `npm run bench [-- NAME...]`: runs every bench/*.bench.mjs (or those whose file name
// contains a NAME), each exporting `run(): Promise<Row[]>`, and prints one table.
// Benches import the compiled agent from dist/ (npm run bench builds first).
// Row: { bench, metric, value, unit, baseline?, ratio?, target?, ok? }
import { readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import os from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);
const files = readdirSync(here)
  .filter((f) => f.endsWith('.bench.mjs'))
  .filter((f) => filters.length === 0 || filters.some((n) => f.includes(n)))
  .sort();

const rows = [];
for (const f of files) {
  process.stderr.write(`bench: ${f} ...\n`);
  const t0 = performance.now();
  const mod = await import(pathToFileURL(join(here, f)).href);
  try {
    rows.push(...(await mod.run()));
  } catch (err) {
    rows.push({ bench: f, metric: 'FAILED', value: String(err?.message ?? err), unit: '' });
  }
  process.stderr.write(`bench: ${f} done in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
}

const fmt = (v) => (typeof v === 'number' ? (Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(Math.abs(v) >= 10 ? 1 : 3)) : (v ?? ''));
const header = ['bench', 'metric', 'value', 'unit', 'baseline', 'ratio', 'target', 'ok'];
const table = [header, ...rows.map((r) => [r.bench, r.metric, fmt(r.value), r.unit, fmt(r.baseline), r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}×`, r.target ?? '', r.ok === undefined ? '' : r.ok ? 'yes' : 'NO'])];
const widths = header.map((_, i) => Math.max(...table.map((row) => String(row[i]).length)));
const line = (row) => '| ' + row.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |';
const out = [line(table[0]), '| ' + widths.map((w) => '-'.repeat(w)).join(' | ') + ' |', ...table.slice(1).map(line)].join('\n');
console.log(`\nmachine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}\n`);
console.log(out);
mkdirSync(join(here, 'results'), { recursive: true });
writeFileSync(join(here, 'results', `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify(rows, null, 2));
if (rows.some((r) => r.metric === 'FAILED')) process.exitCode = 1;
