/**
 * The job state machine: every pair of states is either a listed transition
 * or refused with P1_BAD_TRANSITION, by assertTransition and by the store's
 * one write path (a real SQLite file: nothing changes on a refusal).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { assertTransition, END_STATES, JOB_TRANSITIONS, type JobState } from '../../src/roles/p1/states.js';
import { SpoolStore, type JobRow } from '../../src/roles/p1/store.js';

const ALL = Object.keys(JOB_TRANSITIONS) as JobState[];
let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const row = (state: JobState): JobRow => ({
  jobId: 'j1',
  orgId: 'org-a',
  state,
  format: 'application/octet-stream',
  copies: 1,
  printer: 'front',
  printAfterMs: null,
  fetchUrl: null,
  fetchSha256: null,
  fetchSize: null,
  wrappedKey: Buffer.alloc(60, 1),
  keyVersion: 1,
  file: 'x.spool',
  bytesTotal: 10,
  bytesSent: 0,
  accepted: false,
  printerRef: null,
  errorCode: null,
  pages: 0,
  attempts: 0,
  counter: 1,
  statusSeq: 1,
  createdAtMs: 1,
});

describe('print job state machine', () => {
  it('every pair is a listed transition or P1_BAD_TRANSITION naming both states', () => {
    for (const from of ALL) {
      for (const to of ALL) {
        if (JOB_TRANSITIONS[from].includes(to)) expect(() => assertTransition('j', from, to)).not.toThrow();
        else expect(() => assertTransition('j', from, to)).toThrow(expect.objectContaining({ code: 'P1_BAD_TRANSITION', message: expect.stringContaining(`${from} → ${to}`) }));
      }
    }
  });

  it('end states are final; sent and uncertain never go back to sending on their own (only uncertain → ready, the ReprintJob)', () => {
    for (const s of END_STATES) expect(JOB_TRANSITIONS[s]).toEqual([]);
    expect(JOB_TRANSITIONS.sent).not.toContain('sending');
    expect(JOB_TRANSITIONS.sent).not.toContain('ready');
    expect(JOB_TRANSITIONS.uncertain).not.toContain('sending');
  });

  it('the store refuses an illegal transition and leaves the row as it was; a stale row is P1_STATE_RACE', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tbx-p1-sm-'));
    const store = await SpoolStore.open(join(dir, 'p1-spool.db'));
    try {
      await store.insert(row('sent'));
      const r = (await store.get('org-a', 'j1')) as JobRow;
      await expect(store.transition(r, 'sending')).rejects.toMatchObject({ code: 'P1_BAD_TRANSITION' });
      expect((await store.get('org-a', 'j1'))?.state).toBe('sent');
      const next = await store.transition(r, 'uncertain');
      expect(next.statusSeq).toBe(2);
      await expect(store.transition(r, 'confirmed')).rejects.toMatchObject({ code: 'P1_STATE_RACE' });
      expect((await store.get('org-a', 'j1'))?.state).toBe('uncertain');
    } finally {
      await store.close();
    }
  });
});
