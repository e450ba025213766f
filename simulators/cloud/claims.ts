/**
 * The cloud's claim service (issue 11 §3), as the emulator runs it: issues
 * one-time claim codes bound to a device id, kind, region and the
 * organisations the device will serve, and answers claim requests on
 * tallybox/v1/claim/+/request with a SignedClaimResponse on
 * .../{nonce}/response, signed by the cloud's command-signing key (the key the
 * device then pins in cloud.commandKeys).
 *
 * A code is used up by the first valid claim (CLAIM_CODE_USED afterwards,
 * even for the same device key: a second device with a copied code must not
 * get the identity). Refusals are signed too, so the device can trust them
 * and stop waiting; an undecodable request gets no answer.
 */
import { createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { CLAIM_REQUEST_FILTER, claimResponseTopic, parseClaimTopic } from '../../src/link/claim.js';
import { CLAIM_RESPONSE_DOMAIN } from '../../src/provision/response.js';
import { pb } from '../../src/proto/index.js';

export interface ClaimSpec {
  deviceId: string;
  kind: 'm1' | 'm2' | 'c1' | 'p1' | 'sim';
  region: 'cn' | 'sg';
  /** Operating organisation; default servedOrgs[0]. */
  orgId?: string;
  servedOrgs: string[];
  /** Choose the code (tests, scripted labs); default 12 random base32 characters in groups of four. */
  code?: string;
  /** Validity; default 24 h. */
  ttlMs?: number;
}

export interface IssuedClaim {
  code: string;
  deviceId: string;
  kind: string;
  region: string;
  orgId: string;
  servedOrgs: string[];
  expiresAtMs: number;
  /** What the installer passes as --cloud-key. */
  cloudKey: string;
}

export interface ClaimEvent {
  outcome: 'granted' | 'refused';
  code: string;
  deviceId?: string;
  reason?: string;
}

interface Entry extends IssuedClaim {
  usedAtMs?: number;
}

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';

function newCode(): string {
  const b = randomBytes(12);
  const chars = [...b].map((x) => ALPHABET[x % ALPHABET.length]).join('');
  return `${chars.slice(0, 4)}-${chars.slice(4, 8)}-${chars.slice(8, 12)}`;
}

export class ClaimService {
  private readonly claims = new Map<string, Entry>();
  private client: MqttClient | undefined;
  private readonly publicKeyBase64: string;

  constructor(private readonly opts: { privateKey: KeyObject; keyId: string; onEvent?: (e: ClaimEvent) => void /** A slow cloud (tests: a LAN attacker answers first). */; answerDelayMs?: number }) {
    const jwk = createPublicKey(opts.privateKey).export({ format: 'jwk' });
    this.publicKeyBase64 = Buffer.from(jwk.x ?? '', 'base64url').toString('base64');
  }

  /** `ID:BASE64`, as `tallybox provision --cloud-key` takes it. */
  get cloudKey(): string {
    return `${this.opts.keyId}:${this.publicKeyBase64}`;
  }

  issue(spec: ClaimSpec): IssuedClaim {
    if (!ID.test(spec.deviceId)) throw new Error(`deviceId "${spec.deviceId}" is not a valid id`);
    if (!['m1', 'm2', 'c1', 'p1', 'sim'].includes(spec.kind)) throw new Error(`kind "${spec.kind}" is not m1, m2, c1, p1 or sim`);
    if (spec.region !== 'cn' && spec.region !== 'sg') throw new Error(`region "${String(spec.region)}" is not cn or sg`);
    const served = spec.servedOrgs.length > 0 ? spec.servedOrgs : spec.orgId ? [spec.orgId] : [];
    if (served.length === 0 || !served.every((o) => ID.test(o))) throw new Error('servedOrgs must be one or more valid org ids');
    const orgId = spec.orgId ?? served[0]!;
    if (!ID.test(orgId)) throw new Error(`orgId "${orgId}" is not a valid id`);
    const code = spec.code ?? newCode();
    if (this.claims.has(code)) throw new Error(`claim code ${code} exists already`);
    const entry: Entry = { code, deviceId: spec.deviceId, kind: spec.kind, region: spec.region, orgId, servedOrgs: served, expiresAtMs: Date.now() + (spec.ttlMs ?? 86_400_000), cloudKey: this.cloudKey };
    this.claims.set(code, entry);
    const { usedAtMs: _u, ...issued } = entry;
    return issued;
  }

  async connect(url: string): Promise<void> {
    const client = mqtt.connect(url, { clientId: `tallybox-claims-${process.pid}-${randomBytes(3).toString('hex')}`, clean: true, reconnectPeriod: 200, protocolVersion: 4 });
    this.client = client;
    client.on('message', (t, payload) => this.onRequest(t, payload));
    // clean session: the subscription is made again on every (re)connect.
    await new Promise<void>((resolve, reject) => {
      client.on('connect', () => client.subscribe(CLAIM_REQUEST_FILTER, { qos: 1 }, (err) => (err ? reject(err) : resolve())));
      client.once('error', reject);
    });
  }

  async close(): Promise<void> {
    await this.client?.endAsync();
  }

  private onRequest(t: string, payload: Buffer): void {
    const parsed = parseClaimTopic(t);
    if (parsed?.kind !== 'request') return;
    let req: ReturnType<typeof pb.ClaimRequest.decode>;
    try {
      req = pb.ClaimRequest.decode(payload);
    } catch {
      return; // not a claim request: nothing to answer, nothing to bind an answer to
    }
    if (Buffer.from(req.nonce).toString('hex') !== parsed.nonceHex || req.devicePublicKey.length !== 32) return;
    const base = { nonce: req.nonce, devicePublicKey: req.devicePublicKey, issuedAtMs: Date.now() };
    const refuse = (errorCode: string, errorMessage: string) => {
      this.opts.onEvent?.({ outcome: 'refused', code: req.claimCode, reason: errorCode });
      this.respond(parsed.nonceHex, { ...base, region: req.region, errorCode, errorMessage });
    };
    const entry = this.claims.get(req.claimCode);
    if (!entry) return refuse('CLAIM_CODE_UNKNOWN', 'no such claim code (check it, or issue a new one)');
    if (entry.usedAtMs !== undefined) return refuse('CLAIM_CODE_USED', `this claim code was used at ${new Date(entry.usedAtMs).toISOString()}; issue a new one`);
    if (Date.now() > entry.expiresAtMs) return refuse('CLAIM_CODE_EXPIRED', 'this claim code has expired; issue a new one');
    if (req.region !== entry.region) return refuse('REGION_MISMATCH', `this claim code is for region ${entry.region}, the device asked for ${req.region}`);
    entry.usedAtMs = Date.now();
    this.opts.onEvent?.({ outcome: 'granted', code: entry.code, deviceId: entry.deviceId });
    this.respond(parsed.nonceHex, {
      ...base,
      region: entry.region,
      deviceId: entry.deviceId,
      deviceKind: entry.kind,
      orgId: entry.orgId,
      servedOrgs: entry.servedOrgs,
      commandKeyId: this.opts.keyId,
      commandPublicKey: Buffer.from(this.publicKeyBase64, 'base64'),
    });
  }

  private respond(nonceHex: string, body: Parameters<typeof pb.ClaimResponseBody.encode>[0]): void {
    const bytes = pb.ClaimResponseBody.encode(body).finish();
    const signature = sign(null, Buffer.concat([CLAIM_RESPONSE_DOMAIN, bytes]), this.opts.privateKey);
    const payload = pb.SignedClaimResponse.encode({ body: bytes, signature, keyId: this.opts.keyId }).finish();
    const send = () => this.client?.publish(claimResponseTopic(nonceHex), Buffer.from(payload), { qos: 1 });
    if (this.opts.answerDelayMs) setTimeout(send, this.opts.answerDelayMs);
    else send();
  }
}

/** `--issue-claim device=ID,kind=K,region=R,orgs=A+B[,org=A][,code=C]`. */
export function parseClaimSpec(arg: string): ClaimSpec {
  const kv = new Map(arg.split(',').map((p) => p.split('=', 2) as [string, string]));
  const orgs = (kv.get('orgs') ?? kv.get('org') ?? '').split('+').filter(Boolean);
  const spec: ClaimSpec = { deviceId: kv.get('device') ?? '', kind: (kv.get('kind') ?? 'sim') as ClaimSpec['kind'], region: (kv.get('region') ?? '') as ClaimSpec['region'], servedOrgs: orgs };
  if (kv.get('org')) spec.orgId = kv.get('org')!;
  if (kv.get('code')) spec.code = kv.get('code')!;
  return spec;
}
