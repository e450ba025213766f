/**
 * Enrolment windows across a restart (issue 11): the expiry arithmetic (never
 * a longer window: same boot by CLOCK_MONOTONIC, another boot by a
 * synchronised wall clock, else EXPIRED) and the file (checksummed, atomic;
 * corrupt, truncated or empty: a clear error and nothing restored).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WindowStore, decodeWindows, encodeWindows, restoreWindow, windowErasureParticipant, windowFile, type CheckpointClock, type PersistedWindow } from '../../src/roles/c1/window-store.js';

const req = { orgId: 'acme', subjectId: 'sub-a', ssid: 'Office', windowSec: 600, counter: 7 };
const at: CheckpointClock = { bootId: 'boot-1', monoMs: 1_000_000, wallMs: 1_800_000_000_000, wallSynced: true };
const saved: PersistedWindow = { req, remainingMs: 300_000, at };

describe('restoreWindow: a restart never extends a window', () => {
  it('same boot: the system monotonic clock counts the downtime, whatever the wall clock did', () => {
    // 100 s down; the wall clock stepped back an hour meanwhile (unsynchronised now): irrelevant within one boot.
    const r = restoreWindow(saved, { bootId: 'boot-1', monoMs: at.monoMs + 100_000, wallMs: at.wallMs - 3_600_000, wallSynced: false });
    expect(r).toEqual({ kind: 'armed', req, remainingMs: 200_000 });
  });

  it('same boot, both clocks usable: the larger elapsed time wins (a wall step forward shortens, never lengthens)', () => {
    const r = restoreWindow(saved, { bootId: 'boot-1', monoMs: at.monoMs + 100_000, wallMs: at.wallMs + 250_000, wallSynced: true });
    expect(r).toEqual({ kind: 'armed', req, remainingMs: 50_000 });
  });

  it('another boot with a synchronised wall clock at both ends: the wall clock counts the downtime', () => {
    expect(restoreWindow(saved, { bootId: 'boot-2', monoMs: 5_000, wallMs: at.wallMs + 60_000, wallSynced: true })).toEqual({ kind: 'armed', req, remainingMs: 240_000 });
    expect(restoreWindow(saved, { bootId: 'boot-2', monoMs: 5_000, wallMs: at.wallMs + 300_000, wallSynced: true }).kind).toBe('expired');
  });

  it('another boot without a synchronised clock (now, or at the checkpoint): EXPIRED, the downtime is unknown', () => {
    const unsyncedNow = restoreWindow(saved, { bootId: 'boot-2', monoMs: 5_000, wallMs: at.wallMs + 1_000, wallSynced: false });
    expect(unsyncedNow).toMatchObject({ kind: 'expired', why: expect.stringMatching(/without a synchronised clock/) });
    const unsyncedThen = restoreWindow({ ...saved, at: { ...at, wallSynced: false } }, { bootId: 'boot-2', monoMs: 5_000, wallMs: at.wallMs + 1_000, wallSynced: true });
    expect(unsyncedThen.kind).toBe('expired');
    // No boot id known (no /proc): never "the same boot".
    expect(restoreWindow({ ...saved, at: { ...at, bootId: '', wallSynced: false } }, { bootId: '', monoMs: at.monoMs + 1, wallMs: at.wallMs, wallSynced: false }).kind).toBe('expired');
  });

  it('clocks behind the checkpoint: EXPIRED (a synchronised wall clock that went back, a monotonic clock that did)', () => {
    expect(restoreWindow(saved, { bootId: 'boot-2', monoMs: 0, wallMs: at.wallMs - 1, wallSynced: true })).toMatchObject({ kind: 'expired', why: expect.stringMatching(/backwards/) });
    expect(restoreWindow(saved, { bootId: 'boot-1', monoMs: at.monoMs - 1, wallMs: at.wallMs, wallSynced: false }).kind).toBe('expired');
  });

  it('downtime past the time left: EXPIRED', () => {
    expect(restoreWindow(saved, { ...at, monoMs: at.monoMs + 300_000 })).toMatchObject({ kind: 'expired', why: 'the window ended while the agent was stopped' });
  });
});

describe('the window file', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const dataDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'tbw-win-'));
    dirs.push(d);
    return d;
  };

  it('round trip, 0600 in a 0700 directory; an empty set removes the file', () => {
    const d = dataDir();
    const store = new WindowStore(d);
    expect(store.load()).toEqual([]);
    store.save([saved]);
    expect(store.load()).toEqual([saved]);
    expect(statSync(store.path).mode & 0o777).toBe(0o600);
    expect(statSync(join(d, 'c1')).mode & 0o777).toBe(0o700);
    store.save([]);
    expect(existsSync(store.path)).toBe(false);
  });

  it.each([
    ['zero length', () => '', /empty/],
    ['truncated', () => encodeWindows([saved]).slice(0, 60), /not JSON/],
    ['a changed byte (time left raised)', () => encodeWindows([saved]).replace('300000', '900000'), /checksum/],
    ['valid JSON, no checksum', () => JSON.stringify({ v: 1, windows: [saved] }), /checksummed/],
  ])('%s: C1_WINDOWS_CORRUPT, nothing restored, the file kept aside', (_name, text, why) => {
    const d = dataDir();
    const store = new WindowStore(d);
    store.save([saved]);
    writeFileSync(windowFile(d), text());
    let err: unknown;
    try {
      store.load();
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'C1_WINDOWS_CORRUPT', message: expect.stringMatching(why) });
    expect(existsSync(windowFile(d))).toBe(false);
    expect(readFileSync(`${windowFile(d)}.corrupt`, 'utf8')).toBe(text());
    expect(store.load()).toEqual([]); // the next start: nothing there, nothing restored
  });

  it('an impossible window (checksum right) is refused: time left beyond the window, two on one SSID', () => {
    expect(() => decodeWindows(encodeWindows([{ ...saved, remainingMs: 601_000 }]))).toThrow(/time left outside the window/);
    expect(() => decodeWindows(encodeWindows([{ ...saved, req: { ...req, windowSec: 100_000 } }]))).toThrow(/impossible window length/);
    expect(() => decodeWindows(encodeWindows([saved, { ...saved, req: { ...req, subjectId: 'sub-b' } }]))).toThrow(/two windows for one SSID/);
  });

  describe('erasure (the purge pipeline, with or without the role running)', () => {
    const other: PersistedWindow = { ...saved, req: { ...req, subjectId: 'sub-b', ssid: 'Guest' } };
    const elsewhere: PersistedWindow = { ...saved, req: { ...req, orgId: 'globex', subjectId: 'sub-g', ssid: 'Lab' } };

    it("a subject's erasure takes its window only; an org's all of the org's; the others stay as they were", async () => {
      const d = dataDir();
      const store = new WindowStore(d);
      const p = windowErasureParticipant(d);
      store.save([saved, other, elsewhere]);
      expect(await p.eraseSubject('acme', 'sub-a')).toEqual({ ok: true, counts: { c1Windows: 1, c1UnreadableWindowFiles: 0 } });
      expect(store.load()).toEqual([other, elsewhere]);
      expect(await p.eraseSubject('globex', 'sub-b')).toMatchObject({ counts: { c1Windows: 0 } }); // another org's subject of that name
      expect(await p.eraseOrg('acme')).toMatchObject({ ok: true, counts: { c1Windows: 1 } });
      expect(store.load()).toEqual([elsewhere]);
      expect(readFileSync(windowFile(d), 'utf8')).not.toMatch(/sub-a|sub-b/);
      expect(await p.eraseOrg('globex')).toMatchObject({ counts: { c1Windows: 1 } });
      expect(existsSync(windowFile(d))).toBe(false);
      // Idempotent (a resumed purge calls it again), and no file at all is nothing to erase.
      expect(await p.eraseOrg('globex')).toEqual({ ok: true, counts: { c1Windows: 0, c1UnreadableWindowFiles: 0 } });
      expect(p.scanFiles?.()).toEqual([windowFile(d), `${windowFile(d)}.corrupt`]);
    });

    it('an unreadable file (and one kept aside as corrupt) may name the erased subjects: removed and counted, never left', async () => {
      const d = dataDir();
      const store = new WindowStore(d);
      store.save([saved]);
      writeFileSync(windowFile(d), encodeWindows([saved, other]).slice(0, 80)); // truncated: whose windows is unknowable
      writeFileSync(`${windowFile(d)}.corrupt`, 'sub-a was here');
      const r = await windowErasureParticipant(d).eraseSubject('acme', 'sub-a');
      expect(r).toEqual({ ok: true, counts: { c1Windows: 0, c1UnreadableWindowFiles: 2 }, detail: 'unreadable enrolment window files removed' });
      expect(existsSync(windowFile(d))).toBe(false);
      expect(existsSync(`${windowFile(d)}.corrupt`)).toBe(false);
    });
  });
});
