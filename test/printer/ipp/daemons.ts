/**
 * ippeveprinter registers itself over DNS-SD and exits ("Unable to initialize DNS-SD") without the
 * system D-Bus and avahi-daemon. `.ci/run` starts both before the tests; this helper does the same when
 * a developer runs the suite alone (as root, as in the CI container), and says plainly what is missing
 * otherwise. They are system daemons shared by everything on the machine, so they are left running.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { systemPeer } from '../../helpers/system-peer.js';

const DBUS_SOCKET = '/run/dbus/system_bus_socket';

/** The system bus answers (not merely its socket file exists: a bus that died leaves it behind, and avahi then fails). */
function busAnswers(): boolean {
  const r = spawnSync('dbus-send', ['--system', '--dest=org.freedesktop.DBus', '--type=method_call', '--print-reply', '/', 'org.freedesktop.DBus.GetId'], { stdio: 'ignore', timeout: 10_000 });
  if (r.error) return existsSync(DBUS_SOCKET); // no dbus-send here: the socket is all there is to go by
  return r.status === 0;
}

function avahiRunning(avahi: string): boolean {
  return spawnSync(avahi, ['--check'], { stdio: 'ignore' }).status === 0;
}

/** Resolves when dbus and avahi-daemon run; throws naming what could not be started. */
export function ensureDnsSdDaemons(): void {
  const avahi = systemPeer('avahi-daemon', { pkg: 'avahi-daemon' });
  const dbus = systemPeer('dbus-daemon', { pkg: 'dbus' });
  if (!avahi.available || !dbus.available) throw new Error(`ippeveprinter needs ${!dbus.available ? 'dbus-daemon (apt-get install dbus) ' : ''}${!avahi.available ? 'avahi-daemon (apt-get install avahi-daemon)' : ''}`);
  if (avahiRunning(avahi.path!)) return;
  if (process.getuid?.() !== 0) throw new Error('avahi-daemon is not running and only root can start it: run `dbus-daemon --system --fork; avahi-daemon -D` as root (as .ci/run does)');
  if (!busAnswers()) {
    mkdirSync('/run/dbus', { recursive: true });
    // What a bus that is gone left behind (as .ci/run does): dbus-daemon refuses to start over its pid file.
    rmSync(DBUS_SOCKET, { force: true });
    rmSync('/run/dbus/pid', { force: true });
    const d = spawnSync(dbus.path!, ['--system', '--fork'], { encoding: 'utf8', timeout: 20_000 });
    if (d.status !== 0) throw new Error(`dbus-daemon --system --fork failed: ${d.stderr.trim()}`);
  }
  const a = spawnSync(avahi.path!, ['-D'], { encoding: 'utf8', timeout: 20_000 });
  // -D returns once the daemon has forked; a concurrent test may have started it first (exit 255, "already running").
  if (!avahiRunning(avahi.path!)) throw new Error(`avahi-daemon -D failed: ${(a.stderr ?? '').trim()}`);
}
