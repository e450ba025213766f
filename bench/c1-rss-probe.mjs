// Preloaded (`node --import`) into a second, probed `tallybox run` by bench/c1.bench.mjs:
// after C1_RSS_PROBE_AT ms it writes where the idle agent's memory is (V8 heap used,
// external/ArrayBuffers, code and bytecode, private dirty pages) to C1_RSS_PROBE_OUT.
// The unprobed agent is what the RSS row measures; this one only explains it.
import { readFileSync, writeFileSync } from 'node:fs';
import { getHeapCodeStatistics, getHeapSpaceStatistics } from 'node:v8';

const MB = (n) => n / 1048576;
setTimeout(
  () => {
    const m = process.memoryUsage();
    const kb = (field) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1] ?? NaN) / 1024;
    const code = getHeapCodeStatistics();
    const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, MB(s.space_used_size)]));
    const out = {
      rss: MB(m.rss),
      heapUsed: MB(m.heapUsed),
      heapTotal: MB(m.heapTotal),
      external: MB(m.external),
      arrayBuffers: MB(m.arrayBuffers),
      code: MB(code.code_and_metadata_size + code.bytecode_and_metadata_size),
      privateDirty: kb('Private_Dirty'),
      sharedClean: kb('Shared_Clean'),
      spaces,
    };
    writeFileSync(process.env.C1_RSS_PROBE_OUT, JSON.stringify(out));
  },
  Number(process.env.C1_RSS_PROBE_AT ?? 7000),
).unref();
