#!/usr/bin/env -S MALLOC_ARENA_MAX=2 UV_THREADPOOL_SIZE=2 node --max-semi-space-size=1 --v8-pool-size=1
/**
 * The `tallybox` command. The only module (with the other files in src/cli)
 * that reads argv or prints for people. Exit codes: 0 ok, 1 runtime failure,
 * 2 usage error, 78 configuration, key or file-safety error (EX_CONFIG: systemd will not
 * restart-loop on it when the unit sets RestartPreventExitStatus=78; see isConfigErrorCode).
 */
import { parseArgs } from 'node:util';
import { isTallyboxError, errorMessage, isConfigErrorCode } from '../util/errors.js';

const USAGE = `usage: tallybox COMMAND [options]

commands:
  run --config FILE                 run the agent (YAML config; see README "Configuration")
  doctor --config FILE [--json]     check config, storage, keys, clock, broker: what is wrong, and the fix
  provision --config FILE           create the device key (KEK) and identity; print the public key
  provision --claim CODE --region cn|sg --broker URL --out DIR [--ca FILE] [--cloud-key ID:BASE64]
            [--data-dir DIR] [--key-provider file|systemd-credentials] [--allow-loopback] [--punch-api-port N]
                                    claim the device from the cloud: keys, claim exchange, complete config
  purge --org ID --config FILE [--yes]
                                    erase an organisation's data locally (agent stopped); the signed
                                    receipt is delivered on the agent's next connection
  decommission --config FILE [--yes]
                                    retire the device: erase every organisation, sign ONE receipt, destroy
                                    the keys; it then refuses to run until provisioned again
  verify-receipt FILE --pubkey PEM  check a decommission or erasure receipt against the device public key
  demo [--json] [--punches N] [--keep-data DIR] [--outage] [--interval MS] [--broker URL]
                                    broker + cloud emulator + agent + simulated reader, on this machine
  demo --device m1|m2|c1|p1 [--json] [--punches N] [--keep-data DIR] [--broker URL]
                                    the same with the fingerprint (m1), face + card (m2), Wi-Fi (c1) simulators,
                                    or p1: signed print jobs printed by the printer simulator, checked by SHA-256
  demo --scenario withdraw [--json] [--keep-data DIR]
                                    two orgs enrolled, one withdrawn by signed command, receipt verified

exit codes: 0 ok, 1 failure, 2 usage, 78 bad configuration, key or file permissions`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' } }, strict: true });
      if (!values.config) throw usage('run needs --config FILE');
      // Read once, in a child process: the long-running agent never loads the validator (src/config/load-isolated.ts).
      // Before the agent's modules are loaded, so the two processes' start-up peaks do not add up.
      const config = await (await import('../config/load-isolated.js')).loadConfigFileIsolated(values.config);
      // A decommissioned device refuses to run; an interrupted decommission is finished instead (src/cli/decommission.ts).
      const gate = await (await import('./decommission.js')).runGate(config, stdout);
      return gate ?? (await import('./run.js')).runAgent(config);
    }
    case 'doctor': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, json: { type: 'boolean', default: false } }, strict: true });
      if (!values.config) throw usage('doctor needs --config FILE');
      const { doctor } = await import('./doctor.js');
      return doctor(values.config, { json: values.json ?? false, out: stdout });
    }
    case 'provision': {
      const s = { type: 'string' } as const;
      const { values } = parseArgs({
        args: rest,
        options: { config: { type: 'string', short: 'c' }, claim: s, region: s, broker: s, ca: s, out: s, 'data-dir': s, 'cloud-key': s, 'allow-loopback': { type: 'boolean' }, 'key-provider': s, 'punch-api-port': s, timeout: s },
        strict: true,
      });
      if (values.claim !== undefined) {
        if (values.config !== undefined) throw usage('provision takes --claim CODE … --out DIR, or --config FILE, not both');
        const { provisionClaim } = await import('./provision.js');
        return provisionClaim({ ...values, claim: values.claim }, stdout);
      }
      if (!values.config) throw usage('provision needs --config FILE, or --claim CODE --region cn|sg --broker URL --out DIR');
      const { provision } = await import('./provision.js');
      return provision(values.config, stdout);
    }
    case 'purge': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, org: { type: 'string' }, yes: { type: 'boolean', default: false } }, strict: true });
      if (!values.config || !values.org) throw usage('purge needs --org ID and --config FILE');
      // Without --yes the only confirmation is a person typing the org id: no terminal, no person.
      if (!values.yes && !process.stdin.isTTY) throw usage('purge without --yes needs a terminal to confirm on; pass --yes to confirm the erasure', 'CONFIRMATION_REQUIRED');
      const { purgeOrg } = await import('./purge.js');
      return purgeOrg({ configFile: values.config, orgId: values.org, yes: values.yes ?? false, out: stdout });
    }
    case 'decommission': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, yes: { type: 'boolean', default: false } }, strict: true });
      if (!values.config) throw usage('decommission needs --config FILE');
      const { decommissionCli } = await import('./decommission.js');
      return decommissionCli({ configFile: values.config, yes: values.yes ?? false, out: stdout });
    }
    case 'verify-receipt': {
      const { values, positionals } = parseArgs({ args: rest, options: { pubkey: { type: 'string' } }, allowPositionals: true, strict: true });
      if (positionals.length !== 1 || !values.pubkey) throw usage('verify-receipt needs FILE and --pubkey PEM_FILE');
      const { verifyReceiptCli } = await import('./decommission.js');
      return verifyReceiptCli({ file: positionals[0]!, pubkeyFile: values.pubkey, out: stdout });
    }
    case 'demo': {
      const { values } = parseArgs({
        args: rest,
        options: {
          json: { type: 'boolean', default: false },
          punches: { type: 'string' },
          'keep-data': { type: 'string' },
          outage: { type: 'boolean' },
          interval: { type: 'string' },
          device: { type: 'string' },
          scenario: { type: 'string' },
          broker: { type: 'string' },
        },
        strict: true,
      });
      const punches = values.punches === undefined ? 20 : Number(values.punches);
      if (!Number.isInteger(punches) || punches < 0) throw usage(`--punches must be a non-negative integer, got "${values.punches}"`);
      const keepData = values['keep-data'] !== undefined ? { keepData: values['keep-data'] } : {};
      // An external broker instead of the embedded one (the demos' devices and cloud sink both use it).
      if (values.broker !== undefined && !/^mqtts?:\/\/[^/\s]+/.test(values.broker)) throw usage(`--broker must be an mqtt:// or mqtts:// URL, got "${values.broker}"`);
      const broker = values.broker !== undefined ? { brokerUrl: values.broker } : {};
      if (values.scenario !== undefined) {
        if (values.scenario !== 'withdraw') throw usage(`unknown --scenario "${values.scenario}" (known: withdraw)`);
        const { runWithdrawDemo } = await import('./demo-withdraw.js');
        return runWithdrawDemo({ json: values.json ?? false, ...keepData });
      }
      if (values.device !== undefined) {
        // Each device demo is its own module (src/cli/demo-DEVICE.ts), loaded only when asked for.
        const demos: Record<string, string> = { m1: 'runM1Demo', m2: 'runM2Demo', c1: 'runC1Demo', p1: 'runP1Demo' };
        const fn = demos[values.device];
        if (!fn) throw usage(`unknown --device "${values.device}" (known: ${Object.keys(demos).join(', ')})`);
        const mod = (await import(`./demo-${values.device}.js`)) as Record<string, DeviceDemo>;
        const load = async () => mod[fn]!;
        return (await load())({ json: values.json ?? false, punches: values.punches === undefined ? 10 : punches, ...keepData, ...broker });
      }
      const interval = values.interval === undefined ? (values.json ? 0 : 250) : Number(values.interval);
      if (!Number.isFinite(interval) || interval < 0) throw usage(`--interval must be milliseconds >= 0`);
      // Loaded on demand: the demo pulls in the embedded broker, which a device never needs.
      const { runDemo } = await import('./demo.js');
      return runDemo({
        json: values.json ?? false,
        punches,
        outage: values.outage ?? !values.json,
        intervalMs: interval,
        ...keepData,
        ...broker,
      });
    }
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE + '\n');
      return command === undefined ? 2 : 0;
    default:
      throw usage(`unknown command "${command}"`);
  }
}

type DeviceDemo = (o: { json: boolean; punches: number; keepData?: string; brokerUrl?: string }) => Promise<number>;

const stdout = (line: string): void => {
  process.stdout.write(line + '\n');
};

/** A usage error (exit 2); with a code it prints `tallybox: CODE: message` like every other error. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly usageCode?: string,
  ) {
    super(message);
  }
}
function usage(msg: string, code?: string): UsageError {
  return new UsageError(msg, code);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      const code = err instanceof UsageError && err.usageCode ? `${err.usageCode}: ` : '';
      process.stderr.write(`tallybox: ${code}${errorMessage(err)}\n\n${USAGE}\n`);
      process.exitCode = 2;
    } else if (isTallyboxError(err)) {
      process.stderr.write(`tallybox: ${err.code}: ${err.message}\n`);
      process.exitCode = isConfigErrorCode(err.code) ? 78 : 1;
    } else {
      process.stderr.write(`tallybox: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    }
    // Whatever failed has been stopped and reported; a timer or socket some
    // library left behind must not keep a failed command alive (a half-started
    // agent reconnecting forever). unref: a clean exit does not wait for it.
    setTimeout(() => process.exit(), 3000).unref();
  },
);
