/**
 * The configured speed of the simulator's pseudo-terminal, so `stty -F LINK`
 * (and anything else that reads the line's termios) shows the module's baud
 * rate, and a SetSysPara of the baud rate visibly changes the line.
 *
 * Done with stty(1) (coreutils, on every Debian system) because Node offers no
 * tcsetattr and the pty addon (native/ptypair) only opens pairs. A pty moves
 * bytes whatever its termios speed says; the timing a host sees comes from the
 * link's pacing (link.ts), this only keeps the line's settings truthful.
 */
import { execFile } from 'node:child_process';

/** termios speeds Linux accepts; 9600 × N for N = 3, 5, 7..11 are not among them. */
const TERMIOS_SPEEDS: ReadonlySet<number> = new Set([9600, 19200, 38400, 57600, 115200]);

export function isTermiosSpeed(baudRate: number): boolean {
  return TERMIOS_SPEEDS.has(baudRate);
}

function stty(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('stty', args, { timeout: 2000 }, (err, stdout, stderr) => (err ? reject(new Error(`stty ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve(stdout)));
  });
}

/** Set the line speed of the tty at `path`. Rejects for a speed termios cannot express. */
export async function setTtySpeed(path: string, baudRate: number): Promise<void> {
  if (!isTermiosSpeed(baudRate)) throw new RangeError(`${baudRate} baud is not a termios speed`);
  await stty(['-F', path, String(baudRate)]);
}

/** The configured line speed of the tty at `path`. */
export async function readTtySpeed(path: string): Promise<number> {
  return Number((await stty(['-F', path, 'speed'])).trim());
}
