/**
 * `tallybox demo --scenario withdraw [--json] [--keep-data DIR]`: the privacy
 * promise, shown end to end on one machine.
 *
 * Two organisations share a device. Their people are enrolled through signed
 * SubjectUpsert commands (with consent and a staff card); the simulated sensor
 * stores a fingerprint template for each, containing a random 32-byte marker;
 * punches are delivered. Then the cloud withdraws one organisation with a
 * signed OrgWithdraw. The device crypto-shreds, deletes, compacts, scans, and
 * answers with a signed receipt. The demo then checks, independently of the
 * device: the result and the receipt verify with the device's public key; a
 * byte scan of every file in the data directory finds none of the withdrawn
 * org's markers, names or card numbers; the other org's templates still
 * decrypt to exactly what was enrolled.
 */
import { createPublicKey, randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { readPinned } from '../store/pinned-read.js';
import { join } from 'node:path';
import { verifyCommandResult } from '../link/commands/index.js';
import { verifyErasureReceipt, type ErasureReceipt, type SignedErasureReceipt } from '../privacy/receipt.js';
import { ConsentKind, CredentialKind, PunchMethod, ResultCode } from '../proto/index.js';
import { createLogger } from '../util/log.js';
import { CommandSigner } from '../../simulators/cloud/signer.js';
import { startDemoDevice } from './demo-kit.js';

export interface WithdrawDemoOptions {
  json: boolean;
  keepData?: string;
  /** People per organisation. */
  people?: number;
  out?: (line: string) => void;
}

interface Person {
  orgId: string;
  subjectId: string;
  name: string;
  card: string;
  template: Buffer;
  marker: Buffer;
}

/** Every regular file under dir, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    const st = statSync(p);
    return st.isDirectory() ? filesUnder(p) : st.isFile() ? [p] : [];
  });
}

/** Count occurrences of any needle in any file (an independent check, not the device's own scan). */
export function byteScan(files: readonly string[], needles: readonly Buffer[]): number {
  let hits = 0;
  for (const f of files) {
    const data = readPinned(f); // the agent may still have these databases open: keep its locks (store/pinned-read.ts)
    for (const n of needles) if (n.length > 0 && data.includes(n)) hits++;
  }
  return hits;
}

export async function runWithdrawDemo(opts: WithdrawDemoOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const say = (l: string) => {
    if (!opts.json) out(l);
  };
  const deviceId = 'demo-m1-0002';
  const orgs = ['acme', 'globex'] as const;
  const withdrawn = orgs[0];
  const kept = orgs[1];
  const signer = new CommandSigner({ keyId: 'cloud-demo' });
  const dev = await startDemoDevice({
    kind: 'sim',
    deviceId,
    orgId: withdrawn,
    vault: true,
    commandKeys: [{ id: signer.keyId, publicKey: signer.publicKeyBase64() }],
    // The device serves both organisations (commands for any other are refused).
    config: { device: { id: deviceId, kind: 'sim', orgId: withdrawn, servedOrgs: [...orgs] } },
    ...(opts.keepData ? { dir: opts.keepData } : {}),
    ...(opts.json ? {} : { logger: createLogger({ level: 'error' }) }),
  });
  const { agent, sink, dataDir } = dev;
  const devicePublicKey = createPublicKey(dev.publicKeyPem!);
  let code = 1;
  try {
    say(`Device ${deviceId} serves two organisations: ${orgs.join(', ')}. Cloud command key pinned; device identity ${agent.privacy!.identity.keyId}.`);

    // 1. Enrolment through signed commands; the sensor's templates carry known markers.
    const people: Person[] = [];
    const n = opts.people ?? 4;
    for (const orgId of orgs) {
      for (let i = 0; i < n; i++) {
        const marker = randomBytes(32);
        const template = Buffer.concat([randomBytes(240), marker, randomBytes(240)]);
        const p: Person = { orgId, subjectId: `${orgId}-s${i + 1}`, name: `${orgId.toUpperCase()} Person ${i + 1} ${randomBytes(4).toString('hex')}`, card: String(4_000_000_000 + Math.floor(Math.random() * 99_999_999)), template, marker };
        people.push(p);
        await sink.sendCommand(signer, orgId, deviceId, {
          subjectUpsert: {
            subjectId: p.subjectId,
            displayName: p.name,
            minor: false,
            consents: [{ kind: ConsentKind.CONSENT_KIND_BIOMETRIC, grantedAtMs: Date.now(), evidence: `form-${i}` }],
            credentials: [{ kind: CredentialKind.CREDENTIAL_KIND_CARD, value: p.card }],
          },
        });
        const { result } = await sink.waitForResult(signer.lastCounter);
        if (result.code !== ResultCode.RESULT_CODE_OK) throw new Error(`SubjectUpsert refused: ${result.reason}`);
        // The simulated sensor captures and the device stores the template (encrypted).
        await agent.privacy!.vault.enrolTemplate(orgId, p.subjectId, 'fingerprint', 0, template);
      }
    }
    say(`Enrolled ${people.length} people through signed SubjectUpsert commands (consent + card); templates stored encrypted.`);

    // 2. Punches (identified by card lookup, as a reader would).
    let punches = 0;
    for (const p of people) {
      const matches = await agent.privacy!.vault.identifyCredential('card', p.card);
      for (const m of matches) {
        await agent.punch({ orgId: m.orgId, subjectId: m.subjectId, method: PunchMethod.PUNCH_METHOD_CARD });
        punches++;
      }
    }
    await sink.waitForPunches(punches, 20_000);
    say(`Delivered ${punches} card punches; the cloud received ${sink.stats().received}.`);

    // 3. Withdrawal of one organisation.
    const before = performance.now();
    await sink.sendCommand(signer, withdrawn, deviceId, { orgWithdraw: { reason: 'contract ended' } });
    const { result, raw } = await sink.waitForResult(signer.lastCounter, 60_000);
    const resultVerified = verifyCommandResult(raw, devicePublicKey);
    let receipt: ErasureReceipt | undefined;
    let receiptVerified = false;
    try {
      receipt = verifyErasureReceipt(JSON.parse(Buffer.from(result.receipt).toString('utf8')) as SignedErasureReceipt, devicePublicKey);
      receiptVerified = true;
    } catch {
      receiptVerified = false;
    }
    say(
      `OrgWithdraw(${withdrawn}) → result ${ResultCode[result.code]} (${result.reason}) in ${Math.round(performance.now() - before)} ms; result signature ${resultVerified ? 'verified' : 'INVALID'}; receipt ${receiptVerified ? 'verified' : 'INVALID'}.`,
    );

    // 4. Independent checks on the device's files.
    const gone = people.filter((p) => p.orgId === withdrawn);
    const needles = gone.flatMap((p) => [p.marker, p.template, Buffer.from(p.name, 'utf8'), Buffer.from(p.card, 'utf8')]);
    const files = filesUnder(dataDir);
    const scanHits = byteScan(files, needles);
    const keptPeople = people.filter((p) => p.orgId === kept);
    const { templates } = await agent.privacy!.vault.decryptTemplates(kept);
    const otherOrgIntact = keptPeople.every((p) => templates.some((t) => t.subjectId === p.subjectId && Buffer.from(t.bytes).equals(p.template)));
    const withdrawnLeft = (await agent.privacy!.vault.orgs()).includes(withdrawn);
    say(`Independent byte scan of ${files.length} files in ${dataDir}: ${scanHits} hits for ${needles.length} fragments of ${withdrawn}'s data. ${kept}'s templates ${otherOrgIntact ? 'still decrypt and match' : 'DAMAGED'}.`);

    const ok = result.code === ResultCode.RESULT_CODE_OK && resultVerified && receiptVerified && scanHits === 0 && otherOrgIntact && !withdrawnLeft;
    const summary = {
      scenario: 'withdraw',
      receiptVerified,
      resultVerified,
      scanHits,
      otherOrgIntact,
      withdrawnOrg: withdrawn,
      punchesDelivered: sink.stats().received,
      receipt: receipt && { kind: receipt.kind, ok: receipt.ok, counts: receipt.counts, keyVersionsDestroyed: receipt.keyVersionsDestroyed, scan: receipt.scan, durationMs: receipt.durationMs },
      ...(opts.keepData ? { dataDir } : {}),
    };
    if (opts.json) out(JSON.stringify(summary));
    else say(ok ? 'Withdrawal verified.' : 'Withdrawal NOT verified.');
    if (opts.keepData) say(`Device data left in ${dataDir} (keys in ${dev.dir}/keys).`);
    code = ok ? 0 : 1;
  } finally {
    await dev.close({ keepDir: opts.keepData !== undefined });
  }
  return code;
}
