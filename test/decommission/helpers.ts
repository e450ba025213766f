/**
 * Shared checks of the decommission tests: every file left in the data and
 * key directories, searched for plaintext markers (template bytes, subject
 * ids, names, card numbers) byte by byte.
 */
import { readFileSync } from 'node:fs';
import { filesUnder } from '../../src/decommission/engine.js';

/** Files (base names) holding any of the markers, with which marker index. */
export function markerHits(dirs: readonly string[], markers: readonly Buffer[]): string[] {
  const hits: string[] = [];
  for (const d of dirs) {
    for (const f of filesUnder(d)) {
      const b = readFileSync(f);
      markers.forEach((m, i) => {
        if (b.indexOf(m) >= 0) hits.push(`${f.slice(d.length + 1)}#${i}`);
      });
    }
  }
  return hits;
}
