/**
 * The lab file (YAML): a described site — its organisations, simulated people
 * with their consent and traits, and devices of each kind with their simulated
 * peripherals. Validated by a zod schema; every object is strict, and an error
 * names the key path (`devices[1].kind: …`), as the agent's own config does.
 *
 * The kinds a device may have come from the kind registry (kinds/index.ts): a
 * kind plugs in there with its peripherals' schema, nothing here changes.
 */
import { readFileSync } from 'node:fs';
import { load as parseYaml } from 'js-yaml';
import { z } from 'zod';
import { TallyboxError, errorMessage } from '../../src/util/errors.js';
import { LAB_KINDS, NOT_BUILT_LAB_KINDS } from './kinds/index.js';

/** Ids travel in MQTT topics (device ids, org ids): the agent's own rule. */
const Id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'must be 1-64 characters of A-Z a-z 0-9 _ . - (it is used in MQTT topics)');

const ConsentSchema = z
  .object({
    /** Consent to fingerprint enrolment (recorded on the device as its biometric consent). */
    fingerprint: z.boolean().default(false),
    /** Consent to face enrolment. */
    face: z.boolean().default(false),
    /** A guardian's consent (needed for a minor's biometrics). */
    guardian: z.boolean().default(false),
  })
  .strict();

const PersonSchema = z
  .object({
    /** A lab-local handle (buttons, API calls); the device only ever sees the derived opaque subject id. */
    id: Id,
    org: Id,
    /** A made-up display name, sent (sealed on the device) with SubjectUpsert. */
    name: z.string().min(1).max(100).optional(),
    minor: z.boolean().default(false),
    consent: ConsentSchema.default(ConsentSchema.parse({})),
    /** The finger (0..9) this person enrols and presents on fingerprint modules. */
    finger: z.number().int().min(0).max(9).optional(),
    /** Enrols and presents a face on face modules. */
    face: z.boolean().default(false),
    /** A staff card number (made up): registered as a credential (HMAC on the device). */
    card: z
      .string()
      .regex(/^[0-9A-Za-z]{1,32}$/, 'must be 1-32 digits or letters')
      .optional(),
    /** A phone joining the office Wi-Fi (C1): a vendor (fixed) or private (randomised) MAC. */
    phone: z.union([z.literal(true), z.object({ randomised: z.boolean().default(false) }).strict()]).optional(),
    /** Devices (names) to enrol this person on; default every device serving their org. */
    devices: z.array(Id).optional(),
  })
  .strict();

const DeviceBase = z
  .object({
    /** Also the device id (MQTT topics). */
    name: Id,
    kind: z.string(),
    org: Id,
    servedOrgs: z.array(Id).min(1).optional(),
    peripherals: z.unknown().optional(),
    /** The punch gate's repeat window; 0 (default in the lab) makes every presentation a punch. */
    repeatWindowSec: z.number().int().min(0).max(3600).default(0),
    /** Size of the device's own tmpfs data partition (root only), so "fill the disk" fills only it. */
    diskMiB: z.number().int().min(4).max(1024).default(32),
  })
  .strict();

const LabSchema = z
  .object({
    version: z.literal(1, { message: 'must be 1 (the only lab file version)' }),
    site: z.object({ name: z.string().min(1).max(100), region: z.enum(['cn', 'sg']).default('sg') }).strict(),
    /** Seed of everything simulated (templates, faces, subject ids); --seed overrides it. */
    seed: z
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1)
      .default(1),
    orgs: z.array(z.object({ id: Id }).strict()).min(1),
    people: z.array(PersonSchema).default([]),
    devices: z.array(DeviceBase).min(1),
  })
  .strict();

export type LabPersonConfig = z.infer<typeof PersonSchema>;
export type LabDeviceConfig = Omit<z.infer<typeof DeviceBase>, 'peripherals'> & { peripherals: Record<string, unknown> };
export type LabConfig = Omit<z.infer<typeof LabSchema>, 'devices'> & { devices: LabDeviceConfig[] };

/** `devices[1].kind` from a zod path. */
export function keyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(top level)';
}

function fail(path: readonly PropertyKey[], message: string): never {
  throw new TallyboxError('LAB_CONFIG', `${keyPath(path)}: ${message}`, { key: keyPath(path) });
}

function zodFail(err: z.ZodError, prefix: readonly PropertyKey[] = []): never {
  const issue = err.issues[0]!;
  const path = [...prefix, ...issue.path];
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys;
    return fail([...path, keys[0]!], `unknown key "${keys[0]}"`);
  }
  if (issue.code === 'invalid_type' && /received undefined/.test(message)) message = 'is required';
  return fail(path, message);
}

/** Validate a parsed lab file; throws LAB_CONFIG naming the first bad key. */
export function validateLabConfig(raw: unknown): LabConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail([], 'the lab file must be a YAML mapping (version, site, orgs, people, devices)');
  const r = LabSchema.safeParse(raw);
  if (!r.success) zodFail(r.error);
  const lab = r.data;
  const orgs = new Set<string>();
  lab.orgs.forEach((o, i) => {
    if (orgs.has(o.id)) fail(['orgs', i, 'id'], `organisation "${o.id}" is listed twice`);
    orgs.add(o.id);
  });
  const devices: LabDeviceConfig[] = [];
  const names = new Set<string>();
  lab.devices.forEach((d, i) => {
    const at = ['devices', i] as const;
    if (names.has(d.name)) fail([...at, 'name'], `device "${d.name}" is listed twice`);
    names.add(d.name);
    const kind = LAB_KINDS[d.kind];
    if (!kind) {
      const later = NOT_BUILT_LAB_KINDS[d.kind];
      fail([...at, 'kind'], later ? `${d.kind} is not built yet in the lab: ${later}` : `unknown kind "${d.kind}" (one of ${Object.keys(LAB_KINDS).join(', ')})`);
    }
    if (!orgs.has(d.org)) fail([...at, 'org'], `"${d.org}" is not one of the lab's orgs (${[...orgs].join(', ')})`);
    (d.servedOrgs ?? []).forEach((o, j) => {
      if (!orgs.has(o)) fail([...at, 'servedOrgs', j], `"${o}" is not one of the lab's orgs`);
    });
    const p = kind.peripheralsSchema.safeParse(d.peripherals ?? {});
    if (!p.success) zodFail(p.error, [...at, 'peripherals']);
    devices.push({ ...d, peripherals: p.data as Record<string, unknown> });
  });
  const people = new Set<string>();
  lab.people.forEach((p, i) => {
    const at = ['people', i] as const;
    if (people.has(p.id)) fail([...at, 'id'], `person "${p.id}" is listed twice`);
    people.add(p.id);
    if (!orgs.has(p.org)) fail([...at, 'org'], `"${p.org}" is not one of the lab's orgs`);
    (p.devices ?? []).forEach((d, j) => {
      if (!names.has(d)) fail([...at, 'devices', j], `"${d}" is not one of the lab's devices`);
    });
  });
  return { ...lab, devices };
}

/** Read and validate a lab file; every failure is LAB_CONFIG naming the file or the key. */
export function loadLabConfig(file: string): { config: LabConfig; text: string } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TallyboxError('LAB_CONFIG', `${file}: cannot read the lab file: ${errorMessage(err)}`, { file });
  }
  if (text.trim() === '') throw new TallyboxError('LAB_CONFIG', `${file}: the lab file is empty`, { file });
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new TallyboxError('LAB_CONFIG', `${file}: not valid YAML: ${errorMessage(err).split('\n')[0]}`, { file });
  }
  return { config: validateLabConfig(raw), text };
}
