// Every M2 peripheral unplugged AND hung, through the real stack (face module
// on a real pty, card reader through the HID transport interface): each goes
// offline in DeviceState, and comes back to ready when it is back. Before the
// peripheral supervisor, an unplugged card reader stayed "online" and a hung
// face module stayed "ready".
import { afterEach, describe, expect, it } from 'vitest';
import { presentFace, startM2Stack, swipeCard, enrolFace, type M2Stack, type M2StackOptions } from '../../src/cli/demo-m2.js';
import { waitUntil } from '../helpers/ports.js';

const stacks = new Set<M2Stack>();
afterEach(async () => {
  await Promise.all([...stacks].map((s) => s.close()));
  stacks.clear();
});

async function stack(opts: M2StackOptions = {}): Promise<M2Stack> {
  const s = await startM2Stack({ ...opts, role: { repeatWindowSec: 0, backoff: { minMs: 50, maxMs: 200 }, heartbeatMs: 150, ...opts.role } });
  stacks.add(s);
  await s.role.start();
  return s;
}

function peripheral(s: M2Stack, name: string): { online: boolean; detail: string } | undefined {
  const p = s.agent.state().peripherals?.find((x) => x.name === name);
  return p ? { online: p.online === true, detail: p.detail ?? '' } : undefined;
}

async function cardHolder(s: M2Stack, card: string): Promise<void> {
  await s.vault.upsertSubject('acme', { subjectId: 'sub-card', displayName: 'Card Holder', minor: false, consents: [] });
  await s.vault.putCredential('acme', 'card', card, 'sub-card');
}

describe('M2 peripherals: unplug and hang', () => {
  it('card reader unplugged → offline in DeviceState; replugged → online, cards punch again', async () => {
    const s = await stack();
    await cardHolder(s, '0004211234');
    expect(peripheral(s, 'card-reader')).toMatchObject({ online: true });
    expect(await swipeCard(s, '0004211234')).toBe('punch');

    s.card.unplug();
    await waitUntil(() => peripheral(s, 'card-reader')?.online === false, 5000, 'card reader offline');
    expect(peripheral(s, 'card-reader')!.detail).toMatch(/^(offline|absent): /);
    expect(s.role.card!.status).toMatch(/^(offline|absent|opening)$/);

    s.card.replug();
    await waitUntil(() => peripheral(s, 'card-reader')?.online === true, 5000, 'card reader online again');
    expect(await swipeCard(s, '0004211234')).toBe('punch');
  });

  it('card reader hung (gone without a read error) → found by the presence heartbeat → offline; back → online', async () => {
    const s = await stack();
    await cardHolder(s, '0009876543');
    s.card.hang();
    await waitUntil(() => peripheral(s, 'card-reader')?.online === false, 5000, 'card reader offline (heartbeat)');
    expect(peripheral(s, 'card-reader')!.detail).toMatch(/HID_DEVICE_GONE|HID_DEVICE_NOT_FOUND/);
    expect(s.role.card!.stats.probeFailures).toBeGreaterThan(0);
    s.card.replug();
    await waitUntil(() => peripheral(s, 'card-reader')?.online === true, 5000, 'card reader online again');
    expect(await swipeCard(s, '0009876543')).toBe('punch');
  });

  it('face module hung (port open, answers nothing, nobody in front of it) → heartbeat → offline; answering → ready, faces punch', async () => {
    const s = await stack({ role: { heartbeatMs: 150 } });
    await s.vault.upsertSubject('acme', { subjectId: 'sub-f', displayName: 'Face Person', minor: false, consents: [{ kind: 'biometric' }] });
    await enrolFace(s, 'acme', 'sub-f', 21);
    expect(peripheral(s, 'face')).toMatchObject({ online: true });
    s.face.sim.hang(true);
    await waitUntil(() => peripheral(s, 'face')?.online === false, 15_000, 'face module offline (heartbeat)');
    expect(peripheral(s, 'face')!.detail).toMatch(/^offline: BRIDGE_TIMEOUT/);
    expect(s.role.status).toMatch(/^(offline|opening)$/);
    s.face.sim.hang(false);
    await waitUntil(() => s.role.status === 'ready', 15_000, 'face module ready again');
    expect(peripheral(s, 'face')).toMatchObject({ online: true });
    expect(await presentFace(s, 21)).toBe('punch');
  });

  it('face module unplugged (pty gone) while the card reader keeps punching', async () => {
    const s = await stack();
    await cardHolder(s, '0001234567');
    await s.face.close();
    await waitUntil(() => peripheral(s, 'face')?.online === false, 10_000, 'face module offline');
    expect(peripheral(s, 'card-reader')).toMatchObject({ online: true });
    expect(await swipeCard(s, '0001234567')).toBe('punch');
  });
});
