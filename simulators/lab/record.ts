/**
 * The record file: JSON lines, a header (seed, lab file hash) then one line
 * per action as it is dispatched. Written with appendFileSync so a killed lab
 * leaves every action it dispatched. Reading refuses a damaged file with the
 * line number rather than replaying part of a run silently.
 */
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { TallyboxError, errorMessage } from '../../src/util/errors.js';
import { LabActionSchema, type RecordedAction, type RecordHeader } from './actions.js';

export class Recorder {
  readonly #file: string;
  constructor(file: string, header: RecordHeader) {
    this.#file = file;
    writeFileSync(file, `${JSON.stringify(header)}\n`, { mode: 0o600 });
  }
  write(a: RecordedAction): void {
    appendFileSync(this.#file, `${JSON.stringify(a)}\n`);
  }
}

export function readRecord(file: string): { header: RecordHeader; actions: RecordedAction[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TallyboxError('LAB_REPLAY_INVALID', `${file}: cannot read the record: ${errorMessage(err)}`);
  }
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new TallyboxError('LAB_REPLAY_INVALID', `${file}: the record is empty (no header line)`);
  const parse = (l: string, n: number): Record<string, unknown> => {
    try {
      const v: unknown = JSON.parse(l);
      if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch {
      // reported below with the line number
    }
    throw new TallyboxError('LAB_REPLAY_INVALID', `${file}:${n}: not a JSON object (a truncated or damaged record)`);
  };
  const header = parse(lines[0]!, 1);
  if (header.type !== 'header' || header.format !== 'tallybox-lab-record' || header.version !== 1 || typeof header.seed !== 'number' || typeof header.configSha256 !== 'string') {
    throw new TallyboxError('LAB_REPLAY_INVALID', `${file}:1: not a tallybox lab record header (format tallybox-lab-record, version 1)`);
  }
  const actions = lines.slice(1).map((l, i) => {
    const v = parse(l, i + 2);
    const a = LabActionSchema.safeParse(v.action);
    if (v.type !== 'action' || typeof v.t !== 'number' || typeof v.seq !== 'number' || !a.success) throw new TallyboxError('LAB_REPLAY_INVALID', `${file}:${i + 2}: not a recorded action`);
    return { type: 'action', seq: v.seq, t: v.t, at: String(v.at), action: a.data } satisfies RecordedAction;
  });
  return { header: header as unknown as RecordHeader, actions };
}
