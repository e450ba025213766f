/**
 * The one configuration file (YAML), validated by a zod schema with defaults.
 * Every object is strict, so a misspelt key is an error naming it rather than
 * a silently ignored setting.
 */
import { z } from 'zod';
import { M1ConfigSchema } from '../roles/m1/config.js';
import { M2ConfigSchema } from '../roles/m2/config.js';
import { C1ConfigSchema } from '../roles/c1/config.js';
import { P1ConfigSchema } from '../roles/p1/config.js';

/** Ids travel in MQTT topics: no '/', '+', '#', spaces, or anything surprising. */
const Id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'must be 1-64 characters of A-Z a-z 0-9 _ . - (it is used in MQTT topics)');

export const REGIONS = ['cn', 'sg'] as const;
export type Region = (typeof REGIONS)[number];

const TlsSchema = z
  .object({
    caFile: z.string().optional(),
    certFile: z.string().optional(),
    keyFile: z.string().optional(),
    /** Only for a lab broker with a self-signed certificate. */
    rejectUnauthorized: z.boolean().default(true),
  })
  .strict();

const BrokerSchema = z
  .object({
    url: z.string().regex(/^(mqtt|mqtts|tcp|ssl|tls):\/\/[^/\s]+(:\d+)?\/?$/, 'must look like mqtt://host:1883 or mqtts://host:8883'),
    /**
     * Permit a broker on this machine (127.0.0.0/8, ::1, localhost): the demo,
     * tests, and a site-local bridge. Off by default so a production device can
     * only talk to its region's brokers.
     */
    allowLoopback: z.boolean().default(false),
    clientId: z.string().optional(),
    /**
     * Source address of the connection (an address of this host). A host that
     * runs many agents against one broker (tallybox-sim fleet) spreads them over
     * 127.0.0.x: one source address gives one connection per ephemeral port.
     */
    localAddress: z.ipv4().or(z.ipv6()).optional(),
    username: z.string().optional(),
    password: z.string().optional(),
    keepaliveSec: z.number().int().min(1).max(3600).default(30),
    connectTimeoutMs: z.number().int().min(100).max(120_000).default(10_000),
    reconnectMinMs: z.number().int().min(10).max(60_000).default(500),
    reconnectMaxMs: z.number().int().min(100).max(3_600_000).default(60_000),
    tls: TlsSchema.optional(),
    /**
     * The only way to reach a broker that is not on this machine without
     * verified TLS (a site bridge on a trusted LAN): 'plaintext-site-bridge'
     * permits mqtt:// and tcp://, 'unverified-tls-site-bridge' permits
     * tls.rejectUnauthorized: false. Logged as an error at every start and a
     * failure in `tallybox doctor`. Absent: TLS with a verified certificate whose
     * names are all in the device's region (src/link/security.ts).
     */
    insecure: z.enum(['plaintext-site-bridge', 'unverified-tls-site-bridge']).optional(),
    /**
     * MQTT protocol version. 'auto' tries MQTT 5 (which announces the client's
     * maximum packet size, so the broker never sends more) and falls back to
     * 3.1.1 for a broker that refuses it (aedes 1.x); the client drops an
     * oversized packet before buffering it either way.
     */
    mqttVersion: z.enum(['auto', '5', '3.1.1']).default('auto'),
  })
  .strict();

const OutboxSchema = z
  .object({
    /** Refuse new punches beyond this many undelivered (about a month of a 500-person site). */
    capacity: z.number().int().min(1).max(50_000_000).default(500_000),
    /** QoS 1 messages awaiting PUBACK at once. */
    inflight: z.number().int().min(1).max(65_535).default(256),
    /** Rows read from disk per batch while draining. */
    batch: z.number().int().min(1).max(10_000).default(1000),
    /** Backlog replay rate limit in punches per second (0: unlimited). Live punches are not limited. */
    backlogRatePerSec: z.number().min(0).default(500),
  })
  .strict();

const PunchApiSchema = z
  .object({
    enabled: z.boolean().default(false),
    /** Loopback only: the API is for co-located integrations and simulators. */
    host: z.enum(['127.0.0.1', '::1', 'localhost']).default('127.0.0.1'),
    port: z.number().int().min(0).max(65_535).default(8787),
    /** Optional bearer token every request must carry (Authorization: Bearer …); at least 16 characters. */
    token: z.string().min(16).max(256).optional(),
    /** Or: a file holding the token (mode 0600, owned by the agent's user), read at start. */
    tokenFile: z.string().min(1).optional(),
  })
  .strict()
  .refine((p) => p.token === undefined || p.tokenFile === undefined, { message: 'give token or tokenFile, not both', path: ['tokenFile'] });

const ClockSchema = z
  .object({
    /**
     * systemd: synced when systemd-timesyncd says so (/run/systemd/timesync/synchronized);
     * assume-synced / assume-unsynced: for devices with an RTC policy of their own, and tests.
     */
    source: z.enum(['systemd', 'assume-synced', 'assume-unsynced']).default('systemd'),
    /** With source systemd: the file timesyncd creates once synchronised. */
    syncedFlagFile: z.string().min(1).default('/run/systemd/timesync/synchronized'),
  })
  .strict();

const VaultSchema = z
  .object({
    /** file: a 32-byte key file (0600, outside dataDir); systemd-credentials: $CREDENTIALS_DIRECTORY (LoadCredentialEncrypted=). */
    keyProvider: z.enum(['file', 'systemd-credentials']).default('file'),
    /** The device key-encryption key; `tallybox provision` creates it. Required with keyProvider: file. */
    kekFile: z.string().optional(),
    /** The device's Ed25519 identity (signs receipts and command results); default next to kekFile. */
    identityFile: z.string().optional(),
  })
  .strict()
  .refine((v) => v.keyProvider !== 'file' || v.kekFile !== undefined, { message: 'kekFile is required with keyProvider: file', path: ['kekFile'] });

const CloudSchema = z
  .object({
    /** The cloud's Ed25519 public keys (raw 32 bytes, base64) that may sign commands; several during rotation. */
    commandKeys: z.array(z.object({ id: z.string().min(1).max(64), publicKey: z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'must be a raw 32-byte Ed25519 public key in base64') }).strict()).default([]),
  })
  .strict();

const PrivacySchema = z
  .object({
    /** Templates of a subject not seen for this many days are erased (max 3 years). */
    retentionDays: z.number().int().min(1).max(1095).default(365),
    /** One retention run erases at most this share of all templates; more waits for confirmation by a later run. */
    retentionMaxFraction: z.number().min(0).max(1).default(0.1),
    /** Monotonic hours a larger candidate set must persist (on a synchronised clock) before it is erased. */
    retentionConfirmHours: z.number().min(1).max(720).default(24),
    /** Backoff of the retry of a failed or unverified purge while the agent runs: first delay and cap (seconds). */
    purgeRetryMinSec: z.number().min(0.1).max(86_400).default(30),
    purgeRetryMaxSec: z.number().min(1).max(86_400).default(3600),
  })
  .strict();

export const ConfigSchema = z
  .object({
    version: z.literal(1, { message: 'must be 1 (the only config version this agent reads)' }),
    device: z
      .object({
        id: Id,
        kind: z.enum(['m1', 'm2', 'c1', 'p1', 'sim']),
        /** The organisation operating the device: its state, command and result topics. */
        orgId: Id,
        /**
         * Organisations the device serves (commands, punches, lookups); default [orgId].
         * Provisioning default only: once a ServedOrgsSet command has set the list
         * (dataDir/served-orgs.json), that list wins.
         */
        servedOrgs: z.array(Id).min(1).max(64).optional(),
      })
      .strict(),
    region: z.enum(REGIONS),
    dataDir: z.string().min(1),
    broker: BrokerSchema,
    outbox: OutboxSchema.default(OutboxSchema.parse({})),
    punchApi: PunchApiSchema.default(PunchApiSchema.parse({})),
    clock: ClockSchema.default(ClockSchema.parse({})),
    /** Encrypted store of subjects, templates and credentials; required on m1 and m2. */
    vault: VaultSchema.optional(),
    cloud: CloudSchema.default(CloudSchema.parse({})),
    /** M1: the fingerprint module on a UART (defaults: /dev/ttyS1 at 57600). */
    m1: M1ConfigSchema.optional(),
    /** M2: the face module (bridge protocol on a UART) and an optional USB HID card reader. */
    m2: M2ConfigSchema.optional(),
    /** C1: Wi-Fi presence (hostapd control sockets, dnsmasq lease file, hook socket) and its join rules. */
    c1: C1ConfigSchema.optional(),
    /** P1: the printers of a print box, its encrypted spool and document fetch limits. */
    p1: P1ConfigSchema.optional(),
    privacy: PrivacySchema.default(PrivacySchema.parse({})),
    /** Decommission (src/decommission): how long to wait for the broker to take queued punches and the receipt. */
    decommission: z
      .object({ deliverTimeoutSec: z.number().min(0).max(3600).default(30) })
      .strict()
      .optional(),
    /** Incident records (src/incident): N rejected commands within a window is one AUTH_FAILURES incident; re-send period. */
    incidents: z
      .object({
        authFailures: z.number().int().min(1).max(100_000).default(5),
        authWindowSec: z.number().min(1).max(86_400).default(60),
        resendSec: z.number().min(1).max(86_400).default(60),
        checkSec: z.number().min(0.1).max(3600).default(5),
      })
      .strict()
      .optional(),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .default({ level: 'info' }),
  })
  .strict()
  .refine((c) => c.vault !== undefined || (c.device.kind !== 'm1' && c.device.kind !== 'm2'), { message: 'm1 and m2 devices keep templates: a vault section is required', path: ['vault'] })
  // c1 (wifi): enrolled MACs are kept as the vault's org-keyed HMACs, and the role needs its sources.
  .refine((c) => c.device.kind !== 'c1' || c.vault !== undefined, { message: 'c1 devices match enrolled phones: a vault section is required', path: ['vault'] })
  .refine((c) => c.device.kind !== 'c1' || c.c1 !== undefined, { message: 'c1 devices need a c1 section (hostapd, dnsmasq or eventSocket presence sources)', path: ['c1'] })
  // p1 (print box): documents are personal data, encrypted under per-job keys wrapped by the org key.
  .refine((c) => c.device.kind !== 'p1' || c.vault !== undefined, { message: 'p1 devices keep documents encrypted under org keys: a vault section is required', path: ['vault'] })
  .refine((c) => c.device.kind !== 'p1' || c.p1 !== undefined, { message: 'p1 devices need a p1 section (printers)', path: ['p1'] })
  // A kind whose role is not built yet must not start and silently do nothing.
  .refine((c) => !(NOT_BUILT_KINDS as readonly string[]).includes(c.device.kind), { message: 'this device kind is not built yet in this agent version', path: ['device', 'kind'] });

/** Device kinds accepted by the schema whose role does not exist yet: refused with a clear error. */
export const NOT_BUILT_KINDS: readonly string[] = [];

export type Config = z.infer<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;
