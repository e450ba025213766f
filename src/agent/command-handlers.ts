/**
 * What each verified cloud command does on this device. The intake
 * (src/link/commands) has already checked signature, addressee, expiry, nonce
 * and counter, and persisted the counter, before any of these run.
 */
import type { CommandContext, CommandHandlers, HandlerOutcome } from '../link/commands/index.js';
import { syncRoster } from '../privacy/roster.js';
import type { PurgeOutcome } from '../privacy/purge.js';
import { wifiCredentialValues, validSsid } from '../roles/c1/credential.js';
import { normaliseCredential } from '../vault/credentials.js';
import { ConsentKind, CredentialKind, Modality, ResultCode, WifiEnrolmentState, type WifiEnrolmentOutcomeProps, type ConfigPatch, type OrgWithdraw, type RosterSync, type SubjectErase, type SubjectUpsert } from '../proto/index.js';
import { isTallyboxError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { assertBiometricConsent } from '../vault/consent.js';
import type { Modality as BiometricModality, CredentialKind as VaultCredentialKind } from '../vault/vault.js';
import type { PrivacyServices } from './privacy.js';
import { validatePatch, type RuntimeSettings, type SettingsPatch } from './runtime-settings.js';

export type { RuntimeSettings } from './runtime-settings.js';

export interface HandlerDeps {
  /** Read at each command: the vault goes away when the device is zeroised. */
  privacy: () => PrivacyServices | undefined;
  settings: RuntimeSettings;
  logger: Logger;
  /** Tell device roles a subject was added or changed, and which modalities to enrol (consent already checked). */
  onSubjectChanged?: (orgId: string, subjectId: string, invited: readonly BiometricModality[]) => void;
  /** Tell device roles who is gone (drop in-memory indexes); sensor flash is a purge participant. */
  onSubjectsErased?: (orgId: string, subjectIds: readonly string[] | 'all') => void;
  /**
   * Persist and apply a validated patch (every field at once): throws when it
   * could not be persisted, and then nothing is applied. Without it a
   * ConfigPatch is refused: nothing would carry it out.
   */
  applySettings?: (patch: SettingsPatch) => void;
  /** The C1 role's part of command results (issue 11); undefined on other devices. */
  wifi?: () => WifiCommandHooks | undefined;
}

/** What the C1 role answers commands with (src/roles/c1): enrolment windows, who needs re-enrolment. Never a MAC. */
export interface WifiCommandHooks {
  /** Arm "the next new phone that joins `ssid` within `windowSec` is this subject's": ARMED, or CONFLICT (one window per SSID). */
  armEnrolment(req: { orgId: string; subjectId: string; ssid: string; windowSec: number; counter: number }): WifiEnrolmentOutcomeProps;
  /** Subjects of `orgId` flagged as needing re-enrolment now (opaque ids). */
  reenrolmentNeeded(orgId: string): string[];
}

/** A WIFI_MAC credential's SSIDs and a SubjectUpsert's enrolment window, checked before anything is written. */
function checkWifiFields(cmd: SubjectUpsert, wifi: WifiCommandHooks | undefined): HandlerOutcome | undefined {
  const refuse = (reason: string, detail: string): HandlerOutcome => ({ code: ResultCode.RESULT_CODE_REFUSED, reason, detail });
  for (const c of cmd.credentials) {
    const ssids = c.ssids ?? [];
    if (ssids.length === 0) continue;
    if (c.kind !== CredentialKind.CREDENTIAL_KIND_WIFI_MAC) return refuse('bad_credential', 'only a WIFI_MAC credential can name SSIDs');
    if (!ssids.every(validSsid)) return refuse('bad_credential', 'an SSID must be 1-32 bytes');
  }
  const e = cmd.wifiEnrol;
  if (!e) return undefined;
  if (!validSsid(e.ssid ?? '')) return refuse('bad_wifi_enrolment', 'wifi_enrol.ssid must be 1-32 bytes');
  const sec = e.windowSec ?? 0;
  if (!Number.isInteger(sec) || sec < 1 || sec > 3600) return refuse('bad_wifi_enrolment', 'wifi_enrol.window_sec must be 1..3600');
  if (!wifi) return refuse('wifi_unsupported', 'this device has no Wi-Fi presence role (c1)');
  return undefined;
}

const ok = (detail?: string): HandlerOutcome => ({ code: ResultCode.RESULT_CODE_OK, ...(detail ? { detail } : {}) });

function refusal(err: unknown): HandlerOutcome {
  if (isTallyboxError(err)) {
    const reason = (err as { reason?: string }).reason ?? err.code.toLowerCase();
    const code = err.code === 'CONSENT_REFUSED' ? ResultCode.RESULT_CODE_REFUSED : ResultCode.RESULT_CODE_FAILED;
    // err.message names codes and record ids, never names or template bytes.
    return { code, reason, detail: err.code };
  }
  throw err;
}

function withReceipt(o: PurgeOutcome, what: string): HandlerOutcome {
  return {
    code: o.ok ? ResultCode.RESULT_CODE_OK : ResultCode.RESULT_CODE_FAILED,
    reason: o.ok ? what : `${what}_unverified`,
    detail: `${o.receipt.kind}: scan ${o.receipt.scan.hits} hits in ${o.receipt.scan.files} files`,
    receipt: Buffer.from(JSON.stringify(o.signed), 'utf8'),
  };
}

const NO_VAULT: HandlerOutcome = { code: ResultCode.RESULT_CODE_REFUSED, reason: 'no_vault', detail: 'this device keeps no personal data (no vault configured)' };

export function commandHandlers(deps: HandlerDeps): CommandHandlers {
  const ref = (ctx: CommandContext) => `cmd:${ctx.counter}`;
  return {
    async subjectUpsert(orgId: string, cmd: SubjectUpsert, ctx: CommandContext): Promise<HandlerOutcome> {
      const p = deps.privacy();
      if (!p) return NO_VAULT;
      const wifi = deps.wifi?.();
      const bad = checkWifiFields(cmd, wifi);
      if (bad) return bad;
      let armed: WifiEnrolmentOutcomeProps | undefined;
      try {
        // A malformed MAC is refused before anything is written (a scoped value would hide it).
        for (const c of cmd.credentials) if (c.kind === CredentialKind.CREDENTIAL_KIND_WIFI_MAC && c.value) normaliseCredential('wifi_mac', c.value);
        await p.vault.upsertSubject(orgId, {
          subjectId: cmd.subjectId,
          displayName: cmd.displayName,
          minor: cmd.minor,
          consents: cmd.consents
            .filter((c) => c.kind === ConsentKind.CONSENT_KIND_BIOMETRIC || c.kind === ConsentKind.CONSENT_KIND_GUARDIAN)
            .map((c) => ({ kind: c.kind === ConsentKind.CONSENT_KIND_GUARDIAN ? 'guardian' : 'biometric', ...(c.grantedAtMs ? { grantedAtMs: c.grantedAtMs } : {}), ...(c.evidence ? { evidence: c.evidence } : {}) })),
        });
        for (const cred of cmd.credentials) {
          const kind: VaultCredentialKind | undefined = cred.kind === CredentialKind.CREDENTIAL_KIND_CARD ? 'card' : cred.kind === CredentialKind.CREDENTIAL_KIND_WIFI_MAC ? 'wifi_mac' : undefined;
          if (!kind || !cred.value) return { code: ResultCode.RESULT_CODE_REFUSED, reason: 'bad_credential', detail: 'credential needs a kind (CARD, WIFI_MAC) and a value' };
          // A WIFI_MAC bound to SSIDs is stored once per SSID, scoped (src/roles/c1/credential.ts).
          for (const value of kind === 'wifi_mac' ? wifiCredentialValues(cred.value, cred.ssids ?? []) : [cred.value]) await p.vault.putCredential(orgId, kind, value, cmd.subjectId);
        }
        const invited = [...new Set(cmd.enrol)].flatMap((m): BiometricModality[] => (m === Modality.MODALITY_FINGERPRINT ? ['fingerprint'] : m === Modality.MODALITY_FACE ? ['face'] : []));
        if (invited.length > 0) {
          // Consent is checked here, so a refused enrolment is this command's result.
          const s = await p.vault.getSubject(orgId, cmd.subjectId);
          assertBiometricConsent({ minor: s.minor, biometricAtMs: s.consents.biometric?.grantedAtMs ?? null, guardianAtMs: s.consents.guardian?.grantedAtMs ?? null });
        }
        deps.onSubjectChanged?.(orgId, cmd.subjectId, invited);
        if (cmd.wifiEnrol && wifi) armed = wifi.armEnrolment({ orgId, subjectId: cmd.subjectId, ssid: cmd.wifiEnrol.ssid ?? '', windowSec: cmd.wifiEnrol.windowSec ?? 0, counter: ctx.counter });
      } catch (err) {
        return refusal(err);
      }
      const reenrol = wifi ? { wifiReenrolment: { subjectIds: wifi.reenrolmentNeeded(orgId) } } : {};
      if (armed?.state === WifiEnrolmentState.WIFI_ENROLMENT_STATE_CONFLICT)
        return { code: ResultCode.RESULT_CODE_REFUSED, reason: 'wifi_enrolment_conflict', detail: 'another enrolment window is armed on that SSID; the subject is recorded', wifiEnrolment: armed, ...reenrol };
      if (armed) return { ...ok('wifi enrolment window armed'), reason: 'wifi_enrolment_armed', wifiEnrolment: armed, ...reenrol };
      return { ...ok(), ...reenrol };
    },

    async subjectErase(orgId: string, cmd: SubjectErase, ctx: CommandContext): Promise<HandlerOutcome> {
      const p = deps.privacy();
      if (!p) return NO_VAULT;
      deps.onSubjectsErased?.(orgId, [cmd.subjectId]);
      return withReceipt(await p.purger.eraseSubject(orgId, cmd.subjectId, { requestRef: ref(ctx) }), 'subject_erased');
    },

    async orgWithdraw(orgId: string, _cmd: OrgWithdraw, ctx: CommandContext): Promise<HandlerOutcome> {
      const p = deps.privacy();
      if (!p) return NO_VAULT;
      deps.onSubjectsErased?.(orgId, 'all');
      return withReceipt(await p.purger.withdrawOrg(orgId, { requestRef: ref(ctx) }), 'org_withdrawn');
    },

    async rosterSync(orgId: string, cmd: RosterSync, ctx: CommandContext): Promise<HandlerOutcome> {
      const p = deps.privacy();
      if (!p) return NO_VAULT;
      const valid = new Set(cmd.subjectIds);
      const gone = (await p.vault.subjectIds(orgId)).filter((id) => !valid.has(id));
      if (gone.length) deps.onSubjectsErased?.(orgId, gone);
      const r = await syncRoster({ source: p.vault, purger: p.purger, orgId, validSubjectIds: cmd.subjectIds, requestRef: ref(ctx) });
      const wifi = deps.wifi?.();
      const reenrol = wifi ? { wifiReenrolment: { subjectIds: wifi.reenrolmentNeeded(orgId) } } : {};
      return { ...(r.outcome ? withReceipt(r.outcome, 'roster_synced') : ok('roster in sync: nobody erased')), ...reenrol };
    },

    async configPatch(_orgId: string, cmd: ConfigPatch): Promise<HandlerOutcome> {
      // Every field is validated before any is applied: one bad field refuses the patch and changes nothing.
      const v = validatePatch({ retentionDays: cmd.retentionDays, repeatWindowSec: cmd.repeatWindowSec, backlogRatePerSec: cmd.backlogRatePerSec, logLevel: cmd.logLevel });
      if (!v.ok) return { code: ResultCode.RESULT_CODE_REFUSED, reason: v.reason, detail: v.detail };
      if (!deps.applySettings) return { code: ResultCode.RESULT_CODE_REFUSED, reason: 'settings_unsupported', detail: 'this agent cannot apply runtime settings' };
      try {
        deps.applySettings(v.patch);
      } catch (err) {
        deps.logger.error({ event: 'config_patch_failed', err }, 'runtime settings not changed: they could not be persisted');
        return { code: ResultCode.RESULT_CODE_FAILED, reason: 'settings_not_persisted', detail: isTallyboxError(err) ? err.code : 'write failed' };
      }
      deps.logger.info({ event: 'config_patched', ...v.patch }, 'runtime settings changed by the cloud (in effect now, persisted)');
      return ok(Object.keys(v.patch).join(','));
    },
  };
}
