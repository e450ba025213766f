/**
 * Suites that test interoperability with a system program (mosquitto today;
 * dnsmasq, hostapd_cli, ippeveprinter, chromium later) run when the program is
 * installed and otherwise skip, saying so in ONE line that names the Debian
 * package. `.ci/run` installs every peer and sets TALLYBOX_REQUIRE_PEERS=1,
 * under which a missing program fails the suite instead: CI cannot go green by
 * skipping.
 *
 *   const mosquitto = systemPeer('mosquitto', { pkg: 'mosquitto' });
 *   describeWithPeer(mosquitto, 'TLS against Mosquitto', () => { ... });
 *
 * Where a program is looked for: every directory on PATH, and the sbin
 * directory beside each …/bin on it (Debian puts daemons such as mosquitto in
 * /usr/sbin, which is not on a normal user's PATH). So hiding a program from
 * PATH hides it here too. TALLYBOX_HIDE_PEERS=mosquitto,socat treats the
 * listed programs as missing whatever PATH says (to check the skip path on a
 * machine that has them).
 */
import { accessSync, constants, statSync } from 'node:fs';
import { basename, delimiter, dirname, join } from 'node:path';
import { describe, it } from 'vitest';

export interface SystemPeer {
  /** The program's file name, e.g. 'mosquitto'. */
  readonly program: string;
  /** The Debian package that installs it. */
  readonly pkg: string;
  /** Absolute path when found, else undefined. */
  readonly path: string | undefined;
  readonly available: boolean;
  /** Why it is not available (hidden, or not found), for the skip line. */
  readonly reason: string | undefined;
}

export interface SystemPeerOptions {
  /** Debian package name for the skip line and .ci/run. */
  pkg: string;
  /** Default process.env (tests of this helper pass their own). */
  env?: NodeJS.ProcessEnv;
}

/** PATH's directories, each followed by its sibling sbin when it is a …/bin. */
export function searchDirs(pathVar: string | undefined): string[] {
  const dirs: string[] = [];
  for (const d of (pathVar ?? '').split(delimiter)) {
    if (!d) continue;
    dirs.push(d);
    if (basename(d) === 'bin') dirs.push(join(dirname(d), 'sbin'));
  }
  return [...new Set(dirs)];
}

function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    // Missing or not executable: not this one.
    return false;
  }
}

export function hiddenPeers(env: NodeJS.ProcessEnv): Set<string> {
  return new Set(
    (env.TALLYBOX_HIDE_PEERS ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  );
}

export function systemPeer(program: string, opts: SystemPeerOptions): SystemPeer {
  const env = opts.env ?? process.env;
  if (hiddenPeers(env).has(program)) return { program, pkg: opts.pkg, path: undefined, available: false, reason: 'hidden by TALLYBOX_HIDE_PEERS' };
  for (const dir of searchDirs(env.PATH)) {
    const candidate = join(dir, program);
    if (isExecutableFile(candidate)) return { program, pkg: opts.pkg, path: candidate, available: true, reason: undefined };
  }
  return { program, pkg: opts.pkg, path: undefined, available: false, reason: 'not found on PATH' };
}

export type PeerVerdict = { action: 'run' } | { action: 'skip' | 'fail'; line: string };

/** What to do with a suite needing `peers`, under `env`; the line is what gets printed or thrown. */
export function peerVerdict(suite: string, peers: readonly SystemPeer[], env: NodeJS.ProcessEnv = process.env): PeerVerdict {
  const missing = peers.filter((p) => !p.available);
  if (missing.length === 0) return { action: 'run' };
  const what = missing.map((p) => `${p.program} (${p.reason}; Debian package: ${p.pkg})`).join(', ');
  const install = `apt-get install ${[...new Set(missing.map((p) => p.pkg))].join(' ')}`;
  if (env.TALLYBOX_REQUIRE_PEERS === '1') {
    return { action: 'fail', line: `suite "${suite}" needs ${what}, and TALLYBOX_REQUIRE_PEERS=1 forbids skipping it: ${install}` };
  }
  return { action: 'skip', line: `tallybox-test: skipped "${suite}": needs ${what}; ${install} to run it` };
}

/**
 * `describe` when every peer is there; otherwise skip with one line on stderr,
 * or (TALLYBOX_REQUIRE_PEERS=1) a suite whose one test fails naming the package.
 * `null` in place of the peers runs the suite unconditionally (for tables of
 * brokers where only some entries need a system program).
 */
export function describeWithPeer(peers: SystemPeer | readonly SystemPeer[] | null, name: string, fn: () => void): void {
  const list = peers === null ? [] : Array.isArray(peers) ? (peers as readonly SystemPeer[]) : [peers as SystemPeer];
  const verdict = peerVerdict(name, list);
  if (verdict.action === 'run') return void describe(name, fn);
  if (verdict.action === 'fail') {
    return void describe(name, () => {
      it('has its system programs installed', () => {
        throw new Error(verdict.line);
      });
    });
  }
  // Straight to the stream, not console: one line, without the reporter's per-file banner.
  process.stderr.write(`${verdict.line}\n`);
  // The project's one allowed skip: a system program is missing on a developer's machine (said in the
  // line above); under TALLYBOX_REQUIRE_PEERS=1 (.ci/run) the verdict is 'fail' and this is never reached.
  describe.skip(name, fn);
}
