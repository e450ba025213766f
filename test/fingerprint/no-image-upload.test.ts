/**
 * Privacy at the wire: the M1 role enrols and identifies through the real
 * pty, and the simulator — which records every instruction it receives — never
 * saw UpImage (0x0A) or DownImage (0x0B). Templates move (UpChar/DownChar), images never.
 */
import { afterEach, expect, it } from 'vitest';
import { enrolFinger, presentFinger, startM1Stack, type M1Stack } from '../../src/cli/demo-m1.js';

let stack: M1Stack | undefined;
afterEach(async () => {
  await stack?.close();
  stack = undefined;
});

it('M1 enrol + identify: the module never receives UpImage or DownImage', async () => {
  stack = await startM1Stack({ servedOrgs: ['acme'] });
  const s = stack;
  await s.role.start();
  expect(s.role.status).toBe('ready');
  await s.vault.upsertSubject('acme', { subjectId: 'sub-1', displayName: 'Name of sub-1', minor: false, consents: [{ kind: 'biometric' }] });
  await enrolFinger(s, 'acme', 'sub-1', { person: 'alice', finger: 2 });
  expect(await presentFinger(s, { person: 'alice', finger: 2 })).toBe('punch');
  const seen = s.sim.state().instructions;
  // The exchange really happened (captures, a template upload, a search)...
  expect(seen.GenImg).toBeGreaterThan(0);
  expect(seen.UpChar).toBeGreaterThan(0);
  expect((seen.Search ?? 0) + (seen.HighSpeedSearch ?? 0)).toBeGreaterThan(0);
  // ...and no image ever crossed the wire in either direction.
  expect(s.sim.device.received(0x0a)).toBe(0);
  expect(s.sim.device.received(0x0b)).toBe(0);
  expect(Object.keys(seen)).not.toContain('UpImage');
  expect(Object.keys(seen)).not.toContain('DownImage');
});
