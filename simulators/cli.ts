#!/usr/bin/env node
/**
 * `tallybox-sim KIND [options]`: one entry point for every device simulator.
 * Each simulator lives in simulators/KIND/ and exports `main(argv): Promise<number>`
 * from simulators/KIND/main.ts; this file only dispatches.
 */
const KINDS: Record<string, string> = {
  cloud: 'MQTT broker + punch sink + command signer (the cloud emulator)',
  fingerprint: 'R30x/AS608 fingerprint module on a pseudo-terminal',
  face: 'face module speaking the bridge protocol on a pseudo-terminal',
  card: 'USB HID keyboard-wedge card reader',
  wifi: 'office Wi-Fi: hostapd control sockets, dnsmasq lease file, phones (C1)',
  printer: 'office printer: raw TCP 9100 with PJL status, and IPP (P1)',
  lab: 'a whole site from lab.yaml: devices, people, agents, control API and web page',
  fleet: 'N full agents against one broker, counting loss, duplicates and reordering',
};

function usage(): string {
  const lines = Object.entries(KINDS).map(([k, d]) => `  ${k.padEnd(12)} ${d}`);
  return `usage: tallybox-sim KIND [options]\n\nkinds:\n${lines.join('\n')}\n\nRun tallybox-sim KIND --help for the options of one simulator.`;
}

async function run(argv: string[]): Promise<number> {
  const [kind, ...rest] = argv;
  if (!kind || kind === '--help' || kind === '-h') {
    process.stdout.write(usage() + '\n');
    return kind ? 0 : 2;
  }
  if (!(kind in KINDS)) {
    process.stderr.write(`tallybox-sim: unknown simulator "${kind}"\n${usage()}\n`);
    return 2;
  }
  const mod = (await import(`./${kind}/main.js`)) as { main: (argv: string[]) => Promise<number> };
  return mod.main(rest);
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`tallybox-sim: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
