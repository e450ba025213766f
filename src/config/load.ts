/**
 * Read, parse and validate the config file. Every failure is a CONFIG_INVALID
 * (or CONFIG_UNREADABLE) error whose message names the file and the bad key.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, dirname, resolve } from 'node:path';
import { load as parseYaml } from 'js-yaml';
import type { z } from 'zod';
import { TallyboxError, errorMessage } from '../util/errors.js';
import { ConfigSchema, type Config, type ConfigInput } from './schema.js';

export function formatIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .map((i) => {
      const path = i.path.map(String).join('.');
      if (i.code === 'unrecognized_keys') {
        const keys = i.keys.map((k) => (path ? `${path}.${k}` : k));
        return `unknown key${keys.length > 1 ? 's' : ''} ${keys.map((k) => `"${k}"`).join(', ')}`;
      }
      return `"${path || '(top level)'}": ${i.message}`;
    })
    .join('; ');
}

/** Validate an already-parsed object (tests, the demo). */
export function validateConfig(raw: unknown, source = 'config'): Config {
  const result = ConfigSchema.safeParse(raw);
  if (!result.success) {
    throw new TallyboxError('CONFIG_INVALID', `${source}: ${formatIssues(result.error.issues)}`, { issues: result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) });
  }
  return result.data;
}

export function loadConfigFile(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TallyboxError('CONFIG_UNREADABLE', `cannot read config file ${file}: ${errorMessage(err)}`, {}, { cause: err });
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new TallyboxError('CONFIG_INVALID', `${file}: not valid YAML: ${errorMessage(err)}`, {}, { cause: err });
  }
  const config = validateConfig(raw, file);
  // Relative paths in the file are relative to the file, not to the working directory.
  const rel = (p: string) => (isAbsolute(p) ? p : resolve(dirname(file), p));
  config.dataDir = rel(config.dataDir);
  if (config.vault?.kekFile) config.vault.kekFile = rel(config.vault.kekFile);
  if (config.vault?.identityFile) config.vault.identityFile = rel(config.vault.identityFile);
  return config;
}

export type { Config, ConfigInput };
