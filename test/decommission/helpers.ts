/**
 * Shared checks of the decommission tests: every file left in the data and
 * key directories, searched for plaintext markers (template bytes, subject
 * ids, names, card numbers) byte by byte.
 */
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export function filesUnder(dir: string, out: string[] = []): string[] {
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    // A directory that is gone holds nothing.
    return out;
  }
  for (const n of names) {
    const p = join(dir, n);
    const st = lstatSync(p);
    if (st.isDirectory()) filesUnder(p, out);
    else if (st.isFile()) out.push(p);
  }
  return out;
}

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
